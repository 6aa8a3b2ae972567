import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { TEST_APP_PASSWORD, TEST_APP_ROLE } from '../../support/global-setup.ts';
import { onFreePorts } from '../../support/free-port.ts';
import { ROOT } from '../../support/gateway-process.ts';
import { pgbouncerBinary } from '../../support/pgbouncer.ts';
import { startProcessStack, type ProcessStack } from '../../support/process-stack.ts';
import { withClient } from '../../support/db.ts';

// docker-compose.yml's topology started by deploy/local/scale-out.sh from Debian's haproxy and
// pgbouncer: a request goes client -> haproxy -> either of two gateway processes -> pgbouncer in
// transaction mode -> PostgreSQL, and its audit rows name the client, not haproxy. Loopback has
// many addresses: the client speaks from 127.0.0.5, haproxy from 127.0.0.3 (the trusted proxy).

vi.setConfig({ testTimeout: 120_000, hookTimeout: 180_000 });

const CLIENT = '127.0.0.5';
const HAPROXY = '127.0.0.3';
const installed = pgbouncerBinary() !== null && ['/usr/sbin/haproxy', '/usr/bin/haproxy'].some((p) => existsSync(p));
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

let stack: ProcessStack;
let script: ChildProcess;
let workdir: string;
let lbPort: number;
let gatewayPorts: number[];
let output = '';

beforeAll(async () => {
  if (!installed) return;
  stack = await startProcessStack({ patients: 12, seed: 21 });
  workdir = await mkdtemp(path.join(tmpdir(), 'phigate-scale-out-'));
  // The script is told its four ports: one taken meanwhile by another process ends the stack
  // (its log says the address is in use), which then starts again on others.
  script = await onFreePorts(4, startStack);
});

async function startStack([lb, gw1, gw2, pgb]: number[]): Promise<ChildProcess> {
  lbPort = lb!;
  gatewayPorts = [gw1!, gw2!];
  output = '';
  const pg = new URL(stack.db.adminUrl);
  const env = {
    ...stack.env,
    REDIS_URL,
    WORKDIR: workdir,
    PG_HOST: pg.hostname,
    PG_PORT: pg.port || '5432',
    PG_DATABASE: stack.db.name,
    PG_USER: TEST_APP_ROLE,
    PG_PASSWORD: TEST_APP_PASSWORD,
    LB_PORT: String(lb),
    GATEWAY_PORTS: `${gw1},${gw2}`,
    PGBOUNCER_PORT: String(pgb),
    PGBOUNCER_POOL_SIZE: '2',
    LB_SOURCE: HAPROXY,
  };
  const child = spawn('bash', [path.join(ROOT, 'deploy/local/scale-out.sh')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString('utf8')));
  // Ready once both gateways answer /readyz themselves and haproxy passes requests on, the script still running.
  const deadline = Date.now() + 150_000;
  for (;;) {
    const direct = await Promise.all(gatewayPorts.map((p) => fetch(`http://127.0.0.1:${p}/readyz`).then((r) => r.status, () => 0)));
    const status = await request('GET', '/readyz').then((r) => r.status, () => 0);
    if (status === 200 && direct.every((s) => s === 200) && child.exitCode === null) return child;
    if (child.exitCode !== null || Date.now() > deadline) {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      throw new Error(`the stack did not start:\n${output}\n${await logs()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
afterAll(async () => {
  if (script && script.exitCode === null) {
    const exited = new Promise((r) => script.once('exit', r));
    script.kill('SIGTERM');
    await exited;
  }
  await stack?.close();
  if (workdir) await rm(workdir, { recursive: true, force: true });
});

async function logs(): Promise<string> {
  const parts = await Promise.all(['gateway-1', 'gateway-2', 'pgbouncer', 'haproxy'].map((n) => readFile(path.join(workdir, `${n}.log`), 'utf8').catch(() => '')));
  return parts.join('\n');
}

/** A request from the client's own loopback address, through haproxy. */
function request(method: string, urlPath: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: lbPort, path: urlPath, method, headers, localAddress: CLIENT, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe.skipIf(!installed)('haproxy -> two gateways -> pgbouncer -> PostgreSQL (deploy/local/scale-out.sh)', () => {
  it('answers through either gateway, and the audit rows name the client, not haproxy or a forged hop', async () => {
    const dr = stack.data.staff.find((s) => s.roles.includes('physician') && s.clinics.includes('c-north'))!;
    const patient = stack.data.patients.find((p) => p.careTeam.includes(dr.sub))!;
    const token = await stack.issuer.token({ sub: dr.sub, roles: [...dr.roles], clinics: [...dr.clinics], mfa: true });
    const body = JSON.stringify({ query: 'query($id: ID!) { patient(id: $id) { id givenName } }', variables: { id: patient.id } });
    const ids: string[] = [];
    const servedBy = async (n: number) => {
      const log = await readFile(path.join(workdir, `gateway-${n}.log`), 'utf8');
      return ids.filter((id) => log.includes(id));
    };
    // Round robin, once haproxy's checks have seen both gateways up: a second or two after they are
    // on a quiet machine, longer on a busy one (CI saw forty answers come from one gateway first).
    // Bounded by time, with a pause between answers, not by a count of requests.
    for (let i = 0, until = Date.now() + 30_000; Date.now() < until && (i < 6 || (await servedBy(1)).length < 2 || (await servedBy(2)).length < 2); i++) {
      if (i >= 6) await new Promise((r) => setTimeout(r, 100));
      const res = await request('POST', '/graphql', { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-forwarded-for': '198.51.100.66' }, body);
      expect(res.status, res.text).toBe(200);
      expect(JSON.parse(res.text).data.patient).toEqual({ id: patient.id, givenName: patient.givenName });
      ids.push(String(res.headers['x-request-id']));
    }
    const rows = await withClient(stack.db.adminUrl, (c) =>
      c.query<{ request_id: string; client_addr: string }>('SELECT DISTINCT request_id, client_addr FROM phigate.audit_events WHERE request_id = ANY($1)', [ids]),
    );
    expect(new Set(rows.rows.map((r) => r.request_id))).toEqual(new Set(ids));
    expect(new Set(rows.rows.map((r) => r.client_addr))).toEqual(new Set([CLIENT]));
    // Each gateway answered some of them, and each request was answered by exactly one. The
    // gateways write their log lines asynchronously: the last answer's line may still be on its way.
    let [one, two] = [await servedBy(1), await servedBy(2)];
    for (const until = Date.now() + 15_000; one.length + two.length < ids.length && Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, 200));
      [one, two] = [await servedBy(1), await servedBy(2)];
    }
    const haproxyLog = await readFile(path.join(workdir, 'haproxy.log'), 'utf8');
    expect(one.length, haproxyLog).toBeGreaterThanOrEqual(2);
    expect(two.length, haproxyLog).toBeGreaterThanOrEqual(2);
    expect(one.length + two.length).toBe(ids.length);
    expect(one.filter((id) => two.includes(id))).toEqual([]);
  });
});
