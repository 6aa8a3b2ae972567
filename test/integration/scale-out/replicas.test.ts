import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parse, stringify } from 'yaml';
import { POLICY_FILE } from '../../support/gateway.ts';
import { startGatewayProcess, type GatewayProcess } from '../../support/gateway-process.ts';
import { startProcessStack, type ProcessStack } from '../../support/process-stack.ts';

// Two gateway processes on one database and one Redis, as two replicas behind a balancer: every
// request below goes to the other replica than the one before. What one replica grants, counts or
// revokes holds on the other at once (API-key buckets shared through Redis: api-keys-replicas.test.ts).

// Each gateway process loads TypeScript through tsx: seconds on a busy machine.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 180_000 });

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SKIP = REDIS_URL === 'none' ? 'REDIS_URL=none: no Redis to share' : null;
/** Small enough for a few requests to reach: rows a registrar may read per minute across replicas. */
const ROWS_PER_MINUTE = 6;
const REASON = 'Unconscious patient in the emergency department, chart needed now';

let stack: ProcessStack;
const replicas: { url: string; proc: GatewayProcess }[] = [];
let turn = 0;
/** The replica after the one that answered last, as a round-robin balancer sends. */
const next = () => replicas[turn++ % replicas.length]!;

beforeAll(async () => {
  if (SKIP) return;
  stack = await startProcessStack({ patients: 24, seed: 16 });
  const tree = parse(readFileSync(POLICY_FILE, 'utf8')) as { roles: Record<string, { limits: Record<string, number> }> };
  tree.roles.registrar!.limits = { ...tree.roles.registrar!.limits, rowsPerRequest: 4, rowsPerMinute: ROWS_PER_MINUTE };
  const policyFile = path.join(stack.dataDir, 'policy.yaml');
  await writeFile(policyFile, stringify(tree));
  const env = {
    ...stack.env,
    PHIGATE_POLICY_FILE: policyFile,
    REDIS_URL,
    PHIGATE_REDIS_KEY_PREFIX: `phigate-test-${randomBytes(6).toString('hex')}:`,
    PHIGATE_API_KEY_CACHE_SECONDS: '1',
    PHIGATE_SHUTDOWN_GRACE_MS: '500',
  };
  const started = await Promise.all([0, 1].map(() => startGatewayProcess(process.execPath, ['--import', 'tsx', 'src/main.ts'], env)));
  for (const proc of started) {
    const line = proc.output().split('\n').find((l) => l.includes('"phigate listening"'))!;
    replicas.push({ url: (JSON.parse(line) as { url: string }).url, proc });
  }
});
afterAll(async () => {
  for (const { proc } of replicas) {
    process.kill(proc.pid, 'SIGTERM');
    await proc.exited;
  }
  await stack?.close();
});

async function gql(authorization: string, query: string, variables?: Record<string, unknown>) {
  const replica = next();
  const res = await fetch(replica.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify({ query, variables }) });
  return { replica: replicas.indexOf(replica), status: res.status, body: (await res.json()) as { data?: any; errors?: { extensions?: { code?: string } }[] } };
}
const codes = (r: { body: { errors?: { extensions?: { code?: string } }[] } }) => (r.body.errors ?? []).map((e) => e.extensions?.code);
const bearer = async (sub: string, roles: string[], clinics = ['c-north']) => `Bearer ${await stack.issuer.token({ sub, roles, clinics, mfa: true })}`;

describe.skipIf(SKIP !== null)('two replicas, one database, one Redis', () => {
  it('the PHI-per-minute cap is one count across both replicas', async () => {
    const auth = await bearer(`reg-${randomBytes(4).toString('hex')}`, ['registrar']);
    const page = '{ patients(first: 2) { edges { node { id givenName } } } }';
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await gql(auth, page));
    // 2 rows a request, 6 a minute: three requests (on replicas 0, 1, 0) use the minute up, whichever answered.
    expect(answers.slice(0, 3).map((a) => [a.status, a.body.data?.patients.edges.length])).toEqual([[200, 2], [200, 2], [200, 2]]);
    expect(new Set(answers.slice(0, 3).map((a) => a.replica)).size).toBe(2);
    for (const refused of answers.slice(3)) {
      expect(refused.status).toBe(429);
      expect(codes(refused)).toEqual(['RATE_LIMITED']);
    }
    expect(new Set(answers.slice(3).map((a) => a.replica)).size).toBe(2);
  });

  it('a break-glass grant opened on one replica opens the chart on the other; revoked there, it is closed on the first', async () => {
    const dr = stack.data.staff.find((s) => s.roles.includes('physician') && s.clinics.includes('c-north'))!;
    const patient = stack.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(dr.sub))!;
    const auth = await bearer(dr.sub, ['physician']);
    const READ = 'query($id: ID!) { patient(id: $id) { id givenName } }';
    const before = await gql(auth, READ, { id: patient.id });
    expect(before.body.data?.patient).toBeNull();
    const opened = await gql(auth, 'mutation($id: ID!, $r: String!) { breakGlass(patientId: $id, reason: $r) { id active } }', { id: patient.id, r: REASON });
    expect(opened.body.errors).toBeUndefined();
    const read = await gql(auth, READ, { id: patient.id });
    expect(read.replica).not.toBe(opened.replica);
    expect(read.body.data?.patient).toEqual({ id: patient.id, givenName: patient.givenName });
    const revoked = await gql(await bearer('compliance-x', ['compliance']), 'mutation($id: ID!) { revokeBreakGlass(id: $id) { id active } }', { id: opened.body.data.breakGlass.id });
    expect(revoked.body.data?.revokeBreakGlass).toMatchObject({ active: false });
    // Two reads, so that each replica is asked once after the revocation.
    for (let i = 0; i < 2; i++) expect((await gql(auth, READ, { id: patient.id })).body.data?.patient).toBeNull();
  });

  it('an API key revoked through one replica is refused by both, within the key cache (1 s here)', async () => {
    const admin = await bearer('admin-scale', ['clinic_admin']);
    const created = await gql(admin, 'mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id } } }', {
      i: { partner: 'scale-lab', clinics: ['c-north'], fields: ['mrn'], purpose: 'HPAYMT' },
    });
    expect(created.body.errors).toBeUndefined();
    const key = `ApiKey ${created.body.data.createApiKey.key}`;
    const ME = '{ me { subject kind } }';
    for (let i = 0; i < 2; i++) expect((await gql(key, ME)).status).toBe(200);
    const revoked = await gql(admin, 'mutation($id: ID!) { revokeApiKey(id: $id) { status } }', { id: created.body.data.createApiKey.apiKey.id });
    expect(revoked.body.data?.revokeApiKey.status).toBe('revoked');
    // The replica that revoked forgets the key at once; the other one within its cache lifetime.
    await new Promise((r) => setTimeout(r, 1_500));
    for (let i = 0; i < 2; i++) expect((await gql(key, ME)).status).toBe(401);
  });
});
