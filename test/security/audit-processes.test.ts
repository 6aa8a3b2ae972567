import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { withClient } from '../support/db.ts';
import { POLICY_FILE } from '../support/gateway.ts';
import { inOneWindow, MINUTE } from '../support/one-window.ts';
import { startProcessStack, type ProcessStack } from '../support/process-stack.ts';

// Gateway processes as they run in production (node --import tsx src/main.ts, configured through
// the environment), on one database:
// - kill -9 in the middle of a load: every answer a client received has its audit rows committed;
// - two processes charging one principal's minute at once: the committed total never passes the
//   cap, and it is exactly what was shown.

const ROOT = path.resolve(import.meta.dirname, '../..');
const REGISTRAR_LIMITS = { rowsPerRequest: 4, phiValuesPerRequest: 8, rowsPerMinute: 12, phiValuesPerMinute: 24 };

let stack: ProcessStack;
let policyFile: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  stack = await startProcessStack({ patients: 20, seed: 7 });
  // Physicians' minute large enough for the load; the registrar's small enough to reach.
  const tree = parse(readFileSync(POLICY_FILE, 'utf8')) as { roles: Record<string, Record<string, unknown>> };
  tree.roles.physician!.limits = { rowsPerRequest: 100, phiValuesPerRequest: 2000, rowsPerMinute: 1_000_000, phiValuesPerMinute: 1_000_000 };
  tree.roles.registrar!.limits = REGISTRAR_LIMITS;
  policyFile = path.join(stack.dataDir, 'policy.yaml');
  writeFileSync(policyFile, stringify(tree));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await stack?.close();
});

interface GatewayProcess {
  readonly url: string;
  readonly child: ChildProcess;
  readonly exited: Promise<unknown>;
}

async function startGatewayProcess(): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    // One principal drives the load: its request-rate share (cheap-dos.test.ts) must not answer
    // 429 before the kill, whatever this machine's speed.
    env: { ...stack.env, PHIGATE_POLICY_FILE: policyFile, PHIGATE_LOG_LEVEL: 'info', PHIGATE_PRINCIPAL_RATE: '100000', PHIGATE_PRINCIPAL_BURST: '100000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the gateway did not start:\n${output}`)), 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const line = output.split('\n').find((l) => l.includes('"phigate listening"'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { url: string }).url);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    void exited.then(() => reject(new Error(`the gateway exited:\n${output}`)));
  });
  return { url, child, exited };
}

const tokenFor = (sub: string, roles?: string[], clinics?: string[]) => {
  const s = stack.data.staff.find((x) => x.sub === sub);
  return stack.issuer.token({ sub, roles: roles ?? [...s!.roles], clinics: clinics ?? [...s!.clinics], mfa: true });
};

interface Answer {
  readonly requestId: string;
  readonly status: number;
  readonly body: { data?: Record<string, any> | null; errors?: { extensions?: Record<string, unknown> }[] };
  readonly text: string;
}

async function post(url: string, token: string, query: string, variables: Record<string, unknown> = {}): Promise<Answer> {
  const sent = `ap-${randomBytes(8).toString('hex')}`;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': sent },
    body: JSON.stringify({ query, variables }),
  });
  const text = await res.text();
  // The gateway's own id for the request when it says one, else the one it was sent (kept as is today).
  return { requestId: res.headers.get('x-request-id') ?? sent, status: res.status, body: JSON.parse(text), text };
}

const auditCounts = (requestIds: readonly string[]) =>
  withClient(stack.db.adminUrl, async (c) => {
    const { rows } = await c.query<{ request_id: string; n: number }>(
      'SELECT request_id, count(*)::int AS n FROM phigate.audit_events WHERE request_id = ANY($1) GROUP BY request_id',
      [requestIds],
    );
    return new Map(rows.map((r) => [r.request_id, r.n]));
  });

describe('gateway processes on one database', () => {
  it('kill -9 under load: every answer a client received has its audit rows committed', { timeout: 120_000 }, async () => {
    const gateway = await startGatewayProcess();
    const sub = 'dr-north-1';
    const token = await tokenFor(sub);
    const patients: SeedPatient[] = stack.data.patients.filter((p) => p.clinicId === 'c-north' && p.careTeam.includes(sub));
    expect(patients.length).toBeGreaterThan(0);
    const ONE = 'query One($id: ID!) { patient(id: $id) { id givenName familyName mrn } }';
    // Warm: the issuer's keys fetched, the clinic's data key unwrapped.
    const warm = await post(gateway.url, token, ONE, { id: patients[0]!.id });
    expect(warm.body.data?.patient?.givenName, warm.text).toBe(patients[0]!.givenName);
    const answered: { answer: Answer; patient: SeedPatient }[] = [];
    let failures = 0;
    let dead = false;
    const worker = async (w: number) => {
      for (let i = 0; !dead; i++) {
        const patient = patients[(w + i) % patients.length]!;
        try {
          answered.push({ answer: await post(gateway.url, token, ONE, { id: patient.id }), patient });
        } catch {
          failures++;
        }
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    // Killed in full flight, once enough answers are in (the machine's speed varies a lot).
    const deadline = Date.now() + 60_000;
    while (answered.length < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    gateway.child.kill('SIGKILL');
    await gateway.exited;
    dead = true;
    await Promise.all(workers);

    const shown = answered.filter(({ answer }) => answer.status === 200 && answer.body.data?.patient);
    expect(shown.length, JSON.stringify(answered.slice(0, 3).map(({ answer }) => answer.text))).toBeGreaterThan(10);
    const counts = await auditCounts(shown.map(({ answer }) => answer.requestId));
    for (const { answer, patient } of shown) {
      expect(answer.body.data!.patient.givenName).toBe(patient.givenName);
      expect(counts.get(answer.requestId), `answer ${answer.requestId} has no committed audit rows`).toBe(3);
    }
    // Nothing else was answered with data: the requests cut by the kill got no answer at all.
    expect(answered.filter(({ answer }) => answer.status !== 200).map(({ answer }) => answer.text)).toEqual([]);
    expect(failures).toBeGreaterThan(0);
  });

  it('two processes charging one principal\'s minute at once: the committed total never passes the cap', { timeout: 120_000 }, async () => {
    const [a, b] = await Promise.all([startGatewayProcess(), startGatewayProcess()]);
    try {
      // In one minute of the database clock, which both gateways charge by: a run across a
      // boundary would find the cap lifted halfway, so it runs again as a fresh principal.
      await inOneWindow(stack.db.adminUrl, MINUTE, async () => {
        const sub = `reg-proc-${randomBytes(4).toString('hex')}`;
        const token = await tokenFor(sub, ['registrar'], ['c-north']);
        const PAGE = `{ patients(first: ${REGISTRAR_LIMITS.rowsPerRequest}) { edges { node { id ssn } } } }`;
        const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => post(i % 2 ? b!.url : a!.url, token, PAGE)));
        const ssns = answers.flatMap((r) => (r.status === 200 ? r.body.data!.patients.edges : [])).filter((e: { node: { ssn: string | null } }) => e.node.ssn !== null);
        const usage = await withClient(stack.db.adminUrl, async (c) => (await c.query('SELECT rows_used, values_used FROM phigate.phi_usage WHERE actor = $1', [sub])).rows);
        expect(usage).toHaveLength(1);
        expect(usage[0].rows_used).toBeLessThanOrEqual(REGISTRAR_LIMITS.rowsPerMinute);
        expect(usage[0].rows_used).toBe(ssns.length);
        const refused = answers.filter((r) => r.status === 429);
        expect(refused.length).toBeGreaterThan(0);
        for (const r of refused) {
          expect(r.body.errors!.map((e) => e.extensions?.reason)).toEqual(['phi_minute_cap']);
          for (const p of stack.data.patients) expect(r.text).not.toContain(p.ssn);
        }
        // Each refused request is audited by its refusal alone; each answered one by its reads.
        const counts = await auditCounts(answers.map((r) => r.requestId));
        for (const r of answers) expect(counts.get(r.requestId), r.text).toBeGreaterThan(0);
      });
    } finally {
      a!.child.kill('SIGTERM');
      b!.child.kill('SIGTERM');
      await Promise.all([a!.exited, b!.exited]);
    }
  });
});
