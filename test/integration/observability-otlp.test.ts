import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { refusingPort } from '../support/free-port.ts';
import { startProcessStack, type ProcessStack } from '../support/process-stack.ts';
import { startOtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { seededSecrets } from '../support/phi-expect.ts';

// Span export as an operator gets it: `phigate` as a process of its own (node --import tsx
// src/main.ts; the image runs the same code compiled, see compiled.test.ts) with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, a real OTLP/HTTP collector endpoint
// on loopback, real patient reads, SIGTERM. No SDK is stubbed: what arrives is what a collector gets.

const ROOT = path.resolve(import.meta.dirname, '../..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
// Read by the exporter itself (OTEL_EXPORTER_OTLP_HEADERS): a collector credential, which must reach
// the collector and nothing else.
const COLLECTOR_SECRET = 'collector-credential-7f3a9c2e';
const READ = '{ patients(first: 10) { edges { node { id mrn ssn givenName encounters { reason notes } } } } }';
const SEAMS = ['phigate.auth', 'phigate.policy', 'phigate.sql', 'phigate.decrypt', 'phigate.audit'];

let stack: ProcessStack;
const tokens: string[] = [];
/** Gateway processes not yet exited: a test that failed or timed out leaves none behind. */
const running = new Set<ChildProcess>();
afterEach(() => {
  for (const child of running) child.kill('SIGKILL');
});

beforeAll(async () => {
  stack = await startProcessStack({ patients: 6, seed: 11 });
});
afterAll(async () => stack?.close());

async function tokenFor(sub: string): Promise<string> {
  const s = stack.data.staff.find((x) => x.sub === sub)!;
  const t = await stack.issuer.token({ sub, roles: [...s.roles], clinics: [...s.clinics], mfa: true });
  tokens.push(t);
  return t;
}

/** `clientRequestId` goes as the client's X-Request-Id; `requestId` is the gateway's own, from the answer. */
async function read(url: string, token: string, clientRequestId: string): Promise<{ status: number; patients: number; requestId: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': clientRequestId },
    body: JSON.stringify({ query: READ }),
  });
  const body = (await res.json()) as { data?: { patients: { edges: unknown[] } } };
  return { status: res.status, patients: body.data?.patients.edges.length ?? 0, requestId: res.headers.get('x-request-id') ?? '' };
}

async function until(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface GatewayProcess {
  readonly url: string;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  logs(): Record<string, any>[];
  /** SIGTERM, as an orchestrator stops it; resolves when it has exited. */
  stop(): Promise<{ code: number | null; ms: number }>;
}

/** The gateway as its own process, configured through the environment only, as in production. */
async function startGatewayProcess(env: Record<string, string>): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    // Nothing inherited but PATH: no OTEL_* or PHIGATE_* of the machine running the tests.
    env: {
      ...stack.env,
      PHIGATE_SHUTDOWN_GRACE_MS: '1000',
      OTEL_EXPORTER_OTLP_HEADERS: `x-collector-key=${COLLECTOR_SECRET}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const logs = () =>
    stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, any>);
  let gone = false;
  void exited.then(() => (gone = true));
  running.add(child);
  void exited.then(() => running.delete(child));
  // tsx compiles the gateway as it starts: at load 40 on these 2 cores a start-up of 4 s of CPU
  // took over 120 s, so no bound of its own here; the test's timeout is the bound, and afterEach
  // ends a process that never listened.
  await new Promise<void>((resolve) => {
    const check = () => {
      if (logs().some((l) => l.msg === 'phigate listening')) resolve();
    };
    child.stdout.on('data', check);
    void exited.then(() => resolve());
  });
  if (gone) throw new Error(`the gateway exited before listening:\n${stdout}${stderr}`);
  return {
    url: logs().find((l) => l.msg === 'phigate listening')!.url as string,
    output: () => stdout + stderr,
    logs,
    async stop() {
      const started = performance.now();
      child.kill('SIGTERM');
      const code = await exited;
      return { code, ms: performance.now() - started };
    },
  };
}

/** Nothing a collector receives, or the gateway logs, may carry PHI, a token, a key or SQL text. */
function expectNoSecrets(text: string): void {
  for (const [secret, what] of seededSecrets(stack.data.patients)) {
    if (text.includes(secret)) throw new Error(`carries ${what}`);
  }
  for (const t of tokens) {
    expect(text).not.toContain(t);
    expect(text).not.toContain(t.split('.')[2]!);
  }
  expect(text).not.toContain(stack.masterKey.toString('base64'));
  expect(text).not.toMatch(/\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s|\bFROM phigate\.|\bWHERE\b|set_config|unnest\(/);
}

// Every attribute a span may carry, and the shape of its value: names, codes and counts. A new
// attribute fails here until someone has decided that it carries no value a client sent or PHI.
const ATTRIBUTE_SHAPES: Record<string, RegExp> = {
  'http.request.method': /^POST$/,
  'http.response.status_code': /^\d{3}$/,
  'phigate.request_id': /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  'phigate.field': /^(Patient|Encounter)\.[a-zA-Z]+$/,
  'db.system.name': /^postgresql$/,
  'db.operation.name': /^[A-Z]+$/,
  'phigate.audit.events': /^\d+$/,
  'phigate.kms.operation': /^(decrypt|generate)$/,
  'error.type': /^[A-Za-z_]+$/,
};

describe('span export over OTLP/HTTP', () => {
  it('sends one trace per request, rooted in phigate.request, with every seam, flushed on SIGTERM, carrying no PHI, token or SQL', { timeout: 300_000 }, async () => {
    const receiver = await startOtlpReceiver();
    // A batch delay no test outlives: whatever arrives was flushed by the graceful shutdown.
    const gw = await startGatewayProcess({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '300000' });
    try {
      const ids: string[] = [];
      for (const id of ['trace-first-read', 'trace-second-read']) {
        const r = await read(gw.url, await tokenFor('reg-north'), id);
        expect(r.status).toBe(200);
        expect(r.patients).toBeGreaterThan(0);
        ids.push(r.requestId);
      }
      expect(receiver.requests).toEqual([]);
      expect((await gw.stop()).code).toBe(0);

      expect(receiver.requests.length).toBeGreaterThan(0);
      for (const { headers } of receiver.requests) {
        expect(headers['content-type']).toBe('application/json');
        expect(headers['x-collector-key']).toBe(COLLECTOR_SECRET);
      }
      const spans = receiver.spans();
      for (const s of spans) expect(s.resource).toMatchObject({ 'service.name': 'phigate', 'service.version': VERSION });

      const traces = new Map<string, ReceivedSpan[]>();
      for (const s of spans) traces.set(s.traceId, [...(traces.get(s.traceId) ?? []), s]);
      // Every span belongs to one request's trace: none of the seams started a trace of its own.
      expect(traces.size).toBe(ids.length);
      const rootIds: unknown[] = [];
      for (const trace of traces.values()) {
        const roots = trace.filter((s) => s.parentSpanId === undefined);
        expect(roots.map((s) => s.name)).toEqual(['phigate.request']);
        expect(roots[0]!.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.response.status_code': 200 });
        rootIds.push(roots[0]!.attributes['phigate.request_id']);
        const inTrace = new Set(trace.map((s) => s.spanId));
        for (const s of trace) if (s !== roots[0]) expect(inTrace.has(s.parentSpanId!), `${s.name} has its parent in its trace`).toBe(true);
        const names = new Set(trace.map((s) => s.name));
        for (const seam of SEAMS) expect(names, `a ${seam} span in each request`).toContain(seam);
        // The registrar may not read notes: the decision is traced, and no decryption follows it.
        expect(trace.some((s) => s.name === 'phigate.policy' && s.attributes['phigate.field'] === 'Encounter.notes')).toBe(true);
        expect(trace.some((s) => s.name === 'phigate.decrypt' && s.attributes['phigate.field'] === 'Encounter.notes')).toBe(false);
      }
      expect(rootIds.sort()).toEqual(ids.sort());

      for (const s of spans) {
        for (const [key, value] of Object.entries(s.attributes)) expect(String(value), `${s.name} ${key}`).toMatch(ATTRIBUTE_SHAPES[key] ?? /^(?!)/);
      }
      expectNoSecrets(receiver.requests.map((r) => r.body).join('\n'));
      expect(gw.logs().filter((l) => l.level >= 40)).toEqual([]);
    } finally {
      await gw.stop();
      await receiver.close();
    }
  });

  it('a collector that refuses connections costs requests nothing; the failure is logged by code, without secrets', { timeout: 300_000 }, async () => {
    // Held for the test: a port found free and let go could be bound by another process meanwhile.
    const refusing = await refusingPort();
    onTestFinished(() => refusing.release());
    const gw = await startGatewayProcess({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${refusing.port}/v1/traces`,
      OTEL_BSP_SCHEDULE_DELAY: '20',
      // The exporter's own variable: give up retrying soon, so the failure shows within the test.
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '300',
    });
    try {
      const first = await read(gw.url, await tokenFor('reg-north'), 'trace-refused-first');
      expect(first).toMatchObject({ status: 200 });
      expect(first.patients).toBeGreaterThan(0);
      await until('the export failure to be logged', () => gw.logs().some((l) => l.msg === 'spans could not be exported; they are dropped'));
      const line = gw.logs().find((l) => l.msg === 'spans could not be exported; they are dropped')!;
      expect(line).toMatchObject({ level: 40, err: { code: 'ECONNREFUSED' } });
      // Background work, not the request whose spans it carried.
      expect(line.requestId).toBeUndefined();
      expect(line.spans).toBeGreaterThan(0);
      // Still answering (how fast is the hung collector's case below, where an export lasts).
      const second = await read(gw.url, await tokenFor('reg-north'), 'trace-refused-second');
      expect(second).toMatchObject({ status: 200, patients: first.patients });
      expect((await gw.stop()).code).toBe(0);
      expectNoSecrets(gw.output());
      expect(gw.output()).not.toContain(COLLECTOR_SECRET);
    } finally {
      await gw.stop();
    }
  });

  it('a collector that accepts and never answers delays no request, and shutdown gives up on it within its bound', { timeout: 300_000 }, async () => {
    // Exports the collector holds open; one leaves the set when the exporter gives up on it.
    const hung = new Set<net.Socket>();
    const hole = net.createServer((s) => {
      hung.add(s);
      s.once('close', () => hung.delete(s));
    });
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    // An export lasts until the exporter's timeout, set far beyond what a read takes even on loaded
    // cores: a read that waited for an export would be answered only after the export gave up.
    const EXPORT_TIMEOUT_MS = 150_000;
    const gw = await startGatewayProcess({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${(hole.address() as net.AddressInfo).port}/v1/traces`,
      OTEL_BSP_SCHEDULE_DELAY: '20',
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: String(EXPORT_TIMEOUT_MS),
    });
    const exportGaveUp = () => gw.logs().some((l) => l.msg === 'spans could not be exported; they are dropped');
    try {
      const first = await read(gw.url, await tokenFor('reg-north'), 'trace-hung-first');
      expect(first).toMatchObject({ status: 200 });
      await until('an export to be stuck at the collector', () => hung.size > 0);
      for (const id of ['trace-hung-second', 'trace-hung-third']) {
        const r = await read(gw.url, await tokenFor('reg-north'), id);
        expect(r).toMatchObject({ status: 200, patients: first.patients });
        expect(hung.size, 'an export still stuck when the read was answered').toBeGreaterThan(0);
        expect(exportGaveUp()).toBe(false);
      }
      const stopped = await gw.stop();
      expect(stopped.code).toBe(0);
      // Grace (1 s, nothing in flight) + the 5 s bound on the last flush, far below the export's own timeout.
      expect(stopped.ms).toBeLessThan(EXPORT_TIMEOUT_MS / 2);
      expect(gw.logs().some((l) => l.msg === 'span export still running at shutdown; its spans are lost')).toBe(true);
      expectNoSecrets(gw.output());
      expect(gw.output()).not.toContain(COLLECTOR_SECRET);
    } finally {
      await gw.stop();
      for (const s of hung) s.destroy();
      await new Promise((r) => hole.close(r));
    }
  });
});
