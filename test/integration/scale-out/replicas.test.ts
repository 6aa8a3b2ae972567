import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parse, stringify } from 'yaml';
import { ENCOUNTER_COLUMNS, PATIENT_COLUMNS } from '../../../src/db/patients.ts';
import { withClient } from '../../support/db.ts';
import { POLICY_FILE } from '../../support/gateway.ts';
import { inOneWindow, MINUTE } from '../../support/one-window.ts';
import { ROOT, startGatewayProcess, type GatewayProcess } from '../../support/gateway-process.ts';
import { startProcessStack, type ProcessStack } from '../../support/process-stack.ts';

// Two gateway processes on one database and one Redis, as two replicas behind a balancer: every
// request below goes to the other replica than the one before. What one replica grants, counts or
// revokes holds on the other at once (API-key buckets shared through Redis: api-keys-replicas.test.ts).
// A clinic key rotated by the operator's CLI reaches both within the keyring's 'latest version' TTL,
// and both replicas' sealers build one audit log that `phigate audit verify` accepts.

// Each gateway process loads TypeScript through tsx: seconds on a busy machine.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 180_000 });

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SKIP = REDIS_URL === 'none' ? 'REDIS_URL=none: no Redis to share' : null;
/** Small enough for a few requests to reach: rows a registrar may read per minute across replicas. */
const ROWS_PER_MINUTE = 6;
const REASON = 'Unconscious patient in the emergency department, chart needed now';
/**
 * PHIGATE_KEY_CACHE_MAX_AGE_SECONDS: the keyring caches 'latest version' for at most the cache's
 * maximum age, so this is how soon after a rotation every replica writes under the new version.
 */
const KEY_CACHE_SECONDS = 2;

let stack: ProcessStack;
let sinkDir: string;
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
  // One sink directory for both replicas: whichever holds the sink's lock delivers the next lines.
  sinkDir = path.join(stack.dataDir, 'audit-sink');
  await mkdir(sinkDir);
  const env = {
    ...stack.env,
    PHIGATE_POLICY_FILE: policyFile,
    REDIS_URL,
    PHIGATE_REDIS_KEY_PREFIX: `phigate-test-${randomBytes(6).toString('hex')}:`,
    PHIGATE_API_KEY_CACHE_SECONDS: '1',
    PHIGATE_SHUTDOWN_GRACE_MS: '500',
    PHIGATE_KEY_CACHE_MAX_AGE_SECONDS: String(KEY_CACHE_SECONDS),
    PHIGATE_AUDIT_SINK_DIR: sinkDir,
    PHIGATE_AUDIT_SEAL_MS: '250',
    PHIGATE_AUDIT_CHECKPOINT_SECONDS: '1',
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

/** Every answer either replica gave in this file, by the gateway's request id. */
const answered: { replica: number; status: number; requestId: string }[] = [];

async function gql(authorization: string, query: string, variables?: Record<string, unknown>) {
  return gqlOn(replicas.indexOf(next()), authorization, query, variables);
}
/** Past the balancer, to one replica. */
async function gqlOn(replica: number, authorization: string, query: string, variables?: Record<string, unknown>) {
  const res = await fetch(replicas[replica]!.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify({ query, variables }) });
  answered.push({ replica, status: res.status, requestId: res.headers.get('x-request-id') ?? '' });
  return { replica, status: res.status, body: (await res.json()) as { data?: any; errors?: { extensions?: { code?: string } }[] } };
}

/** `phigate <args>` as the operator runs it beside the replicas: same database, master key and data directory. */
function phigate(args: string[]) {
  const child = spawn(process.execPath, ['bin/phigate.js', ...args], {
    cwd: ROOT,
    env: { ...stack.env, PHIGATE_MIGRATE_URL: stack.db.adminUrl, PHIGATE_AUDIT_SINK_DIR: sinkDir, PHIGATE_KEY_CACHE_MAX_AGE_SECONDS: String(KEY_CACHE_SECONDS) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}
const sql = <T = any>(text: string, values: unknown[] = []) => withClient(stack.db.adminUrl, async (c) => (await c.query(text, values)).rows as T[]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Polls `check` until it returns true; the deadline only bounds a hung run, it asserts no speed. */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 120_000; !(await check()); await sleep(250)) {
    if (Date.now() > deadline) throw new Error(`still not so after 120 s: ${what}`);
  }
}
const codes = (r: { body: { errors?: { extensions?: { code?: string } }[] } }) => (r.body.errors ?? []).map((e) => e.extensions?.code);
const bearer = async (sub: string, roles: string[], clinics = ['c-north']) => `Bearer ${await stack.issuer.token({ sub, roles, clinics, mfa: true })}`;

describe.skipIf(SKIP !== null)('two replicas, one database, one Redis', () => {
  it('the PHI-per-minute cap is one count across both replicas', { timeout: 60_000 }, async () => {
    const page = '{ patients(first: 2) { edges { node { id givenName } } } }';
    // The minute is the database's clock minute: five requests straddling two would find the cap
    // lifted by the second (a CI run saw the fourth answered 200), so such a run is run again.
    await inOneWindow(stack.db.adminUrl, MINUTE, async () => {
      const auth = await bearer(`reg-${randomBytes(4).toString('hex')}`, ['registrar']);
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

  it('a clinic key rotated by the CLI: within the keyring TTL new writes through either replica use it, old rows read on both, --reencrypt leaves every value as last written', { timeout: 180_000 }, async () => {
    const clinic = 'c-south';
    const [writerDr, otherDr] = stack.data.staff.filter((s) => s.roles.includes('physician') && s.clinics.includes(clinic));
    const mine = stack.data.patients.filter((p) => p.clinicId === clinic);
    const written = mine.filter((p) => p.careTeam.includes(writerDr!.sub));
    const untouched = mine.filter((p) => p.careTeam.includes(otherDr!.sub) && !p.careTeam.includes(writerDr!.sub));
    expect(written.length).toBeGreaterThanOrEqual(2);
    expect(untouched.length).toBeGreaterThanOrEqual(1);
    // The probe is written only by the checks below, the others only by the running writer.
    const [probe, ...loopPatients] = written;
    const writer = await bearer(writerDr!.sub, ['physician'], [clinic]);
    const other = await bearer(otherDr!.sub, ['physician'], [clinic]);
    const UPDATE = 'mutation($id: ID!, $name: String) { updatePatient(id: $id, input: { givenName: $name }) { id } }';
    const READ = 'query($id: ID!) { patient(id: $id) { givenName encounters { id kind } } }';
    const lastWritten = new Map(mine.map((p) => [p.id, p.givenName]));
    const sealedVersion = async (id: string) => (await sql<{ v: number }>('SELECT phigate.sealed_version(given_name) AS v FROM phigate.patients WHERE id = $1', [id]))[0]!.v;
    const writeOn = async (replica: number, name: string) => {
      const r = await gqlOn(replica, writer, UPDATE, { id: probe!.id, name });
      expect(r.body.errors).toBeUndefined();
      lastWritten.set(probe!.id, name);
    };
    for (const replica of [0, 1]) {
      await writeOn(replica, `Before${replica}`);
      expect(await sealedVersion(probe!.id)).toBe(1);
    }

    // Reads and writes alternate between the replicas throughout, paced below the physician's rows per minute.
    let running = true;
    const failures: unknown[] = [];
    const writes = (async () => {
      for (let n = 0; running; n++, await sleep(150)) {
        const p = loopPatients[n % loopPatients.length]!;
        const r = await gql(writer, UPDATE, { id: p.id, name: `Rotating${n}` });
        if (r.status !== 200 || r.body.errors) failures.push({ replica: r.replica, status: r.status, errors: r.body.errors });
        else lastWritten.set(p.id, `Rotating${n}`);
      }
    })();
    const reads = (async () => {
      for (let n = 0; running; n++, await sleep(150)) {
        const [auth, p] = n % 2 === 0 ? [writer, written[n % written.length]!] : [other, untouched[n % untouched.length]!];
        const r = await gql(auth, READ, { id: p.id });
        if (r.status !== 200 || r.body.errors || typeof r.body.data?.patient?.givenName !== 'string') failures.push({ replica: r.replica, status: r.status, errors: r.body.errors });
      }
    })();

    const rotated = await phigate(['keys', 'rotate', '--clinic', clinic]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toContain(`${clinic}: data key version 2 created; new writes use it on every replica within ${KEY_CACHE_SECONDS} s`);
    // The stated bound, and time for a version lookup that was in flight when the rotation committed
    // (its answer is cached from when it arrives; a loaded machine can hold it back for a while).
    await sleep(KEY_CACHE_SECONDS * 1000 + 3000);
    for (const replica of [0, 1]) {
      await writeOn(replica, `After${replica}`);
      expect(await sealedVersion(probe!.id)).toBe(2);
    }
    // Rows nobody wrote since are still under version 1, and both replicas open them.
    for (const p of untouched) {
      expect(await sealedVersion(p.id)).toBe(1);
      for (const replica of [0, 1]) expect((await gqlOn(replica, other, READ, { id: p.id })).body.data?.patient?.givenName).toBe(p.givenName);
    }

    // Version 2 exists and has rows behind it: --reencrypt moves the rest onto it, no third version.
    const reencrypted = await phigate(['keys', 'rotate', '--clinic', clinic, '--reencrypt']);
    expect(reencrypted.code, reencrypted.stderr).toBe(0);
    expect(reencrypted.stdout).toMatch(/resuming it, no new version made/);
    expect(reencrypted.stdout).toMatch(/onto version 2; 0 patients, 0 grants left/);
    running = false;
    await Promise.all([writes, reads]);
    expect(failures).toEqual([]);

    expect(await sql(`SELECT version FROM phigate.keyring WHERE purpose = 'data' AND scope = $1 ORDER BY version`, [clinic])).toEqual([{ version: 1 }, { version: 2 }]);
    const versionsOf = (table: string, columns: string[]) =>
      sql<{ v: number | null }>(
        `SELECT DISTINCT phigate.sealed_version(x.b) AS v FROM phigate.${table} t CROSS JOIN LATERAL (VALUES ${columns.map((c) => `(t.${c})`).join(', ')}) AS x(b)
         WHERE t.clinic_id = $1 AND x.b IS NOT NULL`,
        [clinic],
      );
    expect(await versionsOf('patients', Object.values(PATIENT_COLUMNS))).toEqual([{ v: 2 }]);
    expect(await versionsOf('encounters', Object.values(ENCOUNTER_COLUMNS))).toEqual([{ v: 2 }]);
    for (const [auth, patients] of [[writer, written], [other, untouched]] as const) {
      for (const p of patients) {
        for (const replica of [0, 1]) {
          const r = await gqlOn(replica, auth, READ, { id: p.id });
          expect(r.body.errors).toBeUndefined();
          expect(r.body.data.patient.givenName).toBe(lastWritten.get(p.id));
          const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
          expect([...r.body.data.patient.encounters].sort(byId)).toEqual(p.encounters.map((e) => ({ id: e.id, kind: e.kind })).sort(byId));
        }
      }
    }
  });

  it("both replicas' sealers build one log: audit verify exits 0, also while both serve; every request either replica answered 200 is sealed; the shared sink holds each leaf once", { timeout: 180_000 }, async () => {
    const READ = 'query($id: ID!) { patient(id: $id) { givenName } }';
    const dr = stack.data.staff.find((s) => s.roles.includes('physician') && s.clinics.includes('c-north'))!;
    const auth = await bearer(dr.sub, ['physician']);
    const patient = stack.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(dr.sub))!;
    const phiReads = [];
    for (const replica of [0, 1]) {
      const r = await gqlOn(replica, auth, READ, { id: patient.id });
      expect(r.body.data?.patient).toEqual({ givenName: patient.givenName });
      phiReads.push(answered.at(-1)!.requestId);
    }

    // Verified while both replicas keep reading, sealing and delivering to the sink: what the sink
    // gains during the walk is newer than the walk's snapshot, not a leaf the database lacks.
    let running = true;
    const servedMeanwhile = new Set<number>();
    const clinicians = stack.data.staff.filter((s) => s.clinics.includes('c-north') && (s.roles.includes('physician') || s.roles.includes('nurse')));
    const traffic = Promise.all(
      clinicians.map(async (s) => {
        const token = await bearer(s.sub, [s.roles[0]!]);
        const theirs = stack.data.patients.filter((p) => p.careTeam.includes(s.sub));
        // Paced below each clinician's rows per minute.
        for (let n = 0; running; n++, await sleep(150)) {
          const r = await gql(token, READ, { id: theirs[n % theirs.length]!.id });
          if (r.status === 200 && r.body.data?.patient) servedMeanwhile.add(r.replica);
        }
      }),
    );
    const live = [];
    for (let i = 0; i < 3; i++) live.push(await phigate(['audit', 'verify', '--sink-dir', sinkDir]));
    running = false;
    await traffic;
    expect(servedMeanwhile).toEqual(new Set([0, 1]));
    for (const v of live) {
      expect(v.code, `${v.stdout}\n${v.stderr}`).toBe(0);
      expect(v.stdout).toMatch(/^audit log verified: /m);
    }

    const ok = answered.filter((a) => a.status === 200);
    expect(new Set(ok.map((a) => a.replica))).toEqual(new Set([0, 1]));
    const ids = ok.map((a) => a.requestId);
    expect(ids.every((id) => id !== '')).toBe(true);

    // Events of those requests, each with its leaf when sealed (the join by request id). Every
    // event here is a record's (028): its leaf is its record's, keyed by the record's first event.
    const eventsOf = () =>
      sql<{ request_id: string; id: string; leaf: string | null }>(
        `SELECT e.request_id, e.id, l.leaf_index AS leaf FROM phigate.audit_events e LEFT JOIN phigate.audit_log l ON l.event_id = (e.id >> 16) << 16 WHERE e.request_id = ANY($1::text[])`,
        [ids],
      );
    let events = await eventsOf();
    for (const id of phiReads) expect(events.filter((e) => e.request_id === id).length).toBeGreaterThan(0);
    // Requests of both replicas left events: the union is what is checked below.
    const replicaOf = new Map(ok.map((a) => [a.requestId, a.replica]));
    expect(new Set(events.map((e) => replicaOf.get(e.request_id)))).toEqual(new Set([0, 1]));
    await eventually('every event of those requests has a leaf', async () => (events = await eventsOf()).every((e) => e.leaf !== null));
    const needed = Math.max(...events.map((e) => Number(e.leaf))) + 1;
    await eventually(`a signed checkpoint covers leaf ${needed - 1}`, async () => (await sql('SELECT 1 FROM phigate.audit_checkpoints WHERE tree_size >= $1', [needed])).length > 0);

    type SinkEvent = { audit: 'event' | 'record'; leaf: number; id: string; canonical: string };
    const sinkEvents = async (): Promise<SinkEvent[]> => {
      const files = (await readdir(sinkDir)).filter((f) => /^audit-\d{20}\.jsonl$/.test(f)).sort();
      const lines = (await Promise.all(files.map((f) => readFile(path.join(sinkDir, f), 'utf8')))).flatMap((t) => t.split('\n').filter((l) => l !== ''));
      return lines.map((l) => JSON.parse(l) as { audit: string }).filter((l): l is SinkEvent => l.audit === 'event' || l.audit === 'record');
    };
    await eventually(`the sink holds leaf ${needed - 1}`, async () => (await sinkEvents()).some((e) => e.leaf >= needed - 1));

    const verified = await phigate(['audit', 'verify', '--sink-dir', sinkDir]);
    expect(verified.code, `${verified.stdout}\n${verified.stderr}`).toBe(0);
    expect(verified.stdout).toMatch(/^audit log verified: /m);

    // Each leaf once, from 0 without a gap; a line delivered twice would show as a second line of its leaf.
    const inSink = await sinkEvents();
    const byLeaf = new Map<number, SinkEvent[]>();
    for (const e of inSink) byLeaf.set(e.leaf, [...(byLeaf.get(e.leaf) ?? []), e]);
    const repeated = [...byLeaf].filter(([, lines]) => lines.length > 1).map(([leaf]) => leaf);
    expect(repeated).toEqual([]);
    expect([...byLeaf.keys()].sort((a, b) => a - b)).toEqual([...Array(byLeaf.size).keys()]);
    for (const e of events) expect(byLeaf.get(Number(e.leaf))?.[0]?.id).toBe(String((BigInt(e.id) >> 16n) << 16n));
  });
});
