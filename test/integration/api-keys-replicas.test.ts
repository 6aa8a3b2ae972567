import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createKeyring } from '../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../../src/db/key-store.ts';
import { createPool } from '../../src/db/pool.ts';
import { generateDataset } from '../../src/seed/dataset.ts';
import { writeDataset } from '../../src/seed/write.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { startTestIssuer, type TestIssuer } from '../support/oidc-issuer.ts';

// Partner keys across processes, as operators run them: keys issued with `npx phigate apikey`,
// two gateway processes sharing the real Redis at 127.0.0.1:6379 (a key prefix of this run only),
// one bucket per key whichever replica answers; and a gateway whose Redis is unreachable refuses
// keyed requests with 503, says so in its log and /readyz, and goes on serving users.

// Each CLI run and gateway start loads TypeScript through tsx: seconds each on a busy machine.
vi.setConfig({ testTimeout: 240_000, hookTimeout: 120_000 });

const ROOT = path.resolve(import.meta.dirname, '../..');
const REDIS_URL = 'redis://127.0.0.1:6379';
const PREFIX = `phigate-test-${randomBytes(6).toString('hex')}:`;
const ME = '{ me { subject kind } }';

let db: TestDatabase;
let issuer: TestIssuer;
let dataDir: string;
const masterKey = randomBytes(32);
const children: { stop(): Promise<void> }[] = [];

const baseEnv = () => ({
  PATH: process.env.PATH ?? '',
  PHIGATE_ENV: 'development',
  PHIGATE_DATA_DIR: dataDir,
  ...db.gatewayEnv,
  PHIGATE_LOCAL_MASTER_KEY: masterKey.toString('base64'),
});

beforeAll(async () => {
  db = await createTestDatabase();
  issuer = await startTestIssuer();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-apikeys-'));
  const pool = createPool(db.appUrl, { max: 2 });
  try {
    const keyring = createKeyring({ provider: createLocalKeyProvider(masterKey), store: createPgKeyStore(pool) });
    await withClient(db.adminUrl, (c) => writeDataset(c, keyring, generateDataset({ patients: 6, seed: 5 })));
  } finally {
    await pool.end();
  }
});
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop()));
  await issuer?.close();
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['bin/phigate.js', ...args], { cwd: ROOT, env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

async function gatewayProcess(env: Record<string, string>): Promise<{ url: string; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { ...baseEnv(), PHIGATE_HOST: '127.0.0.1', PHIGATE_PORT: '0', PHIGATE_OIDC_ISSUER: issuer.issuer, PHIGATE_SHUTDOWN_GRACE_MS: '500', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  children.push({
    async stop() {
      child.kill('SIGTERM');
      const killed = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killed);
      expect(output).toContain('"stopped"');
    },
  });
  const deadline = Date.now() + 120_000;
  for (;;) {
    const listening = output.split('\n').find((l) => l.includes('"phigate listening"'));
    if (listening) return { url: (JSON.parse(listening) as { url: string }).url, output: () => output };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the gateway did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const call = (url: string, authorization: string, query = ME) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify({ query }) });

describe('phigate apikey', () => {
  it('create prints the key once; list shows ids, never the secret; bad input names the option', async () => {
    const created = await cli('apikey', 'create', '--partner', 'cli-lab', '--clinics', 'c-north', '--fields', 'mrn,givenName', '--purpose', 'treat', '--expires', '30d');
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim();
    const [, id, secret] = /^phg_([0-9a-f-]{36})_(\S{43})$/.exec(key)!;
    expect(created.stderr).toContain(id);
    expect(created.stderr).not.toContain(secret);
    const list = await cli('apikey', 'list');
    expect(list.stdout).toContain(`${id}  active  partner=cli-lab  clinics=c-north  fields=Patient.givenName,Patient.mrn  purpose=TREAT`);
    expect(list.stdout + list.stderr).not.toContain(secret!);
    const bad = await cli('apikey', 'create', '--partner', 'cli-lab', '--clinics', 'c-north', '--fields', 'mrn', '--purpose', 'TREAT', '--expires', 'soon');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--expires must be a duration');
    const audit = await withClient(db.adminUrl, (c) => c.query(`SELECT actor, actor_kind, detail FROM phigate.audit_events WHERE action = 'api_key' AND record_id = $1`, [id]));
    expect(audit.rows).toEqual([{ actor: expect.stringMatching(/^cli:/), actor_kind: 'system', detail: 'created' }]);

    const rotated = await cli('apikey', 'rotate', id!, '--overlap', '0m');
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout.trim()).toMatch(/^phg_/);
    const revoked = await cli('apikey', 'revoke', rotated.stdout.trim().slice(4, 40));
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain('revoked');
  });
});

describe('rate limits shared through Redis', () => {
  it('two gateway processes draw on one bucket per key', async () => {
    const created = await cli('apikey', 'create', '--partner', 'shared-lab', '--clinics', 'c-north', '--fields', 'mrn', '--purpose', 'HPAYMT', '--rate-per-minute', '1', '--burst', '10');
    expect(created.code, created.stderr).toBe(0);
    const auth = `ApiKey ${created.stdout.trim()}`;
    const env = { REDIS_URL, PHIGATE_REDIS_KEY_PREFIX: PREFIX };
    const [a, b] = await Promise.all([gatewayProcess(env), gatewayProcess(env)]);
    const statuses: { a: number[]; b: number[] } = { a: [], b: [] };
    for (let i = 0; i < 12; i++) {
      statuses.a.push((await call(a.url, auth)).status);
      statuses.b.push((await call(b.url, auth)).status);
    }
    const ok = [...statuses.a, ...statuses.b].filter((s) => s === 200).length;
    // Ten tokens for the two of them (one more may drip in during the run), not ten each.
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(ok).toBeLessThanOrEqual(11);
    expect(statuses.a.filter((s) => s === 200).length).toBeGreaterThan(0);
    expect(statuses.b.filter((s) => s === 200).length).toBeGreaterThan(0);
    const limited = await call(b.url, auth);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await limited.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('RATE_LIMITED');
    for (const g of [a, b]) expect(g.output()).not.toContain(created.stdout.trim().slice(41));
  });

  it('with Redis unreachable, keyed requests get 503, users are served, the log and /readyz say why', async () => {
    const created = await cli('apikey', 'create', '--partner', 'down-lab', '--clinics', 'c-north', '--fields', 'mrn', '--purpose', 'TREAT');
    const g = await gatewayProcess({ REDIS_URL: 'redis://127.0.0.1:1', PHIGATE_REDIS_KEY_PREFIX: PREFIX });
    const keyed = await call(g.url, `ApiKey ${created.stdout.trim()}`);
    expect(keyed.status).toBe(503);
    const body = (await keyed.json()) as { data?: unknown; errors: { extensions: { reason: string } }[] };
    expect(body.data ?? null).toBeNull();
    expect(body.errors[0]!.extensions.reason).toBe('rate_limit_unavailable');
    const token = await issuer.token({ sub: 'reg-north', roles: ['registrar'], clinics: ['c-north'], mfa: true });
    expect((await call(g.url, `Bearer ${token}`)).status).toBe(200);
    const ready = await fetch(g.url.replace('/graphql', '/readyz'));
    expect(await ready.json()).toMatchObject({ ready: true, degraded: true, checks: { database: 'ok', rateLimits: 'unavailable' } });
    expect(g.output()).toContain('rate-limit store (redis) unavailable');
  });
});
