import { createSecretKey, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Peppers } from '../../src/auth/api-key-pepper.ts';
import { cutApiKeyExpiry, insertApiKey, revokeApiKeyRow, type Queryable } from '../../src/db/api-keys.ts';
import { migrate, MIGRATIONS_DIR } from '../../src/db/migrate.ts';
import { rotateApiKey, type KeyManager } from '../../src/records/api-keys.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { withDatabase } from '../support/global-setup.ts';

// A key is rotated once. Two rotations of one key at the same time used to both mint a successor
// (first found by an outside tester): under READ COMMITTED the second UPDATE waited for the first's
// row lock, then re-checked only the row itself, its NOT EXISTS (a key that replaces this one)
// still reading the snapshot from before the first committed. cutApiKeyExpiry now locks the row in
// a statement of its own first, and migration 071's unique index refuses a second successor.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await withClient(db.adminUrl, async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-rot', 'Rotation') ON CONFLICT DO NOTHING`);
    await c.query(`INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES (1, '\\x00', 'local', 'x') ON CONFLICT DO NOTHING`);
  });
});
afterAll(async () => db?.drop());

const asApp = async (c: pg.Client) => {
  await c.query('BEGIN');
  await c.query('SET LOCAL ROLE phigate_app');
};

const key = (id: string, replaces: string | null) => ({
  id, partner: 'acme', clinics: ['c-rot'], fields: ['Patient.mrn'], purpose: 'HPAYMT', secretHash: randomBytes(32), pepperVersion: 1,
  ratePerMinute: 60, burst: 10, createdBy: 'admin', expiresInSeconds: 86_400, replaces,
});

async function newKey(): Promise<string> {
  const id = randomUUID();
  await withClient(db.adminUrl, (c) => insertApiKey(c, key(id, null)));
  return id;
}

const successorsOf = (old: string) =>
  withClient(db.adminUrl, async (c) => (await c.query('SELECT id FROM phigate.api_keys WHERE replaces = $1', [old])).rows);

/**
 * Two app-role transactions, `a` and `b`, where `b` has taken a snapshot before `a` commits, as a
 * concurrent request does; `first` runs and stays uncommitted in `a`, `second` starts in `b` (and
 * waits for `a`'s locks), then `a` commits and `second` is let finish.
 */
async function race<T>(first: (a: Queryable) => Promise<unknown>, second: (b: Queryable) => Promise<T>): Promise<PromiseSettledResult<T>> {
  const a = new pg.Client({ connectionString: db.adminUrl });
  const b = new pg.Client({ connectionString: db.adminUrl });
  await a.connect();
  await b.connect();
  try {
    await asApp(a);
    await asApp(b);
    await b.query('SELECT 1');
    await first(a);
    const pending = second(b).then(
      (value) => ({ status: 'fulfilled', value }) as const,
      (reason: unknown) => ({ status: 'rejected', reason }) as const,
    );
    // `second` must be waiting on `a`'s row lock when `a` commits: its backend says so.
    const bPid = (b as unknown as { processID: number }).processID;
    await withClient(db.adminUrl, async (c) => {
      for (let i = 0; i < 500; i++) {
        const { rows } = await c.query(`SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1`, [bPid]);
        if (rows[0]?.wait_event_type === 'Lock') return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('the second transaction never waited for the first');
    });
    await a.query('COMMIT');
    const settled = await pending;
    await b.query(settled.status === 'fulfilled' ? 'COMMIT' : 'ROLLBACK');
    return settled;
  } finally {
    await a.end();
    await b.end();
  }
}

// A pepper that needs no key provider: the hash it makes is never checked here.
const peppers: Peppers = { current: () => ({ version: 1, key: createSecretKey(randomBytes(32)) }), get: () => createSecretKey(randomBytes(32)) };
const manager: KeyManager = { actor: 'cli:rotation-race-test', clinics: null, role: null, purpose: 'HSYSADMIN', audit: () => undefined };

describe('concurrent changes of one key', () => {
  it('two concurrent rotations of one key leave one successor (the statement the tester raced)', async () => {
    const old = await newKey();
    const second = await race(
      async (a) => {
        expect(await cutApiKeyExpiry(a, old, 3600)).not.toBeNull();
        await insertApiKey(a, key(randomUUID(), old));
      },
      async (b) => {
        const cut = await cutApiKeyExpiry(b, old, 3600);
        if (cut !== null) await insertApiKey(b, key(randomUUID(), old));
        return cut;
      },
    );
    expect(second).toEqual({ status: 'fulfilled', value: null });
    expect(await successorsOf(old)).toHaveLength(1);
  });

  it('the loser of two rotations is told the key is already rotated', async () => {
    const old = await newKey();
    const second = await race(
      (a) => rotateApiKey(a, peppers, manager, old, 3600),
      (b) => rotateApiKey(b, peppers, manager, old, 3600),
    );
    expect(second.status).toBe('rejected');
    expect((second as PromiseRejectedResult).reason).toMatchObject({ code: 'BAD_USER_INPUT', message: expect.stringMatching(/already rotated/) });
    expect(await successorsOf(old)).toHaveLength(1);
  });

  it('a rotation racing a revocation of the key mints nothing', async () => {
    const old = await newKey();
    const second = await race(
      (a) => revokeApiKeyRow(a, old),
      (b) => rotateApiKey(b, peppers, manager, old, 3600),
    );
    expect((second as PromiseRejectedResult).reason).toMatchObject({ code: 'BAD_USER_INPUT' });
    expect(await successorsOf(old)).toHaveLength(0);
  });

  it('the database refuses a second successor whatever writes it', async () => {
    const old = await newKey();
    await withClient(db.adminUrl, (c) => insertApiKey(c, key(randomUUID(), old)));
    await expect(withClient(db.adminUrl, (c) => insertApiKey(c, key(randomUUID(), old)))).rejects.toMatchObject({
      code: '23505',
      constraint: 'api_keys_one_successor',
    });
  });
});

describe('migration 071 on a database where the race already happened', () => {
  let dir: string;
  let name: string;
  let url: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'phigate-071-'));
    const cluster = inject('phigateDb').adminUrl;
    name = `phigate_t_071_${randomBytes(5).toString('hex')}`;
    await withClient(cluster, (c) => c.query(`CREATE DATABASE ${name}`));
    url = withDatabase(cluster, name);
  });
  afterAll(async () => {
    await withClient(inject('phigateDb').adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    await rm(dir, { recursive: true, force: true });
  });

  async function migrateTo(last: number | null): Promise<void> {
    const upTo = path.join(dir, `m-${last ?? 'all'}-${randomBytes(3).toString('hex')}`);
    await mkdir(upTo);
    for (const f of (await readdir(MIGRATIONS_DIR)).filter((n) => n.endsWith('.sql'))) {
      if (last === null || Number(f.slice(0, 3)) <= last) await symlink(path.join(MIGRATIONS_DIR, f), path.join(upTo, f));
    }
    await migrate(url, { dir: upTo });
  }

  it('stops naming the remedy, and goes through once the extra successor is retired', async () => {
    await migrateTo(70);
    const old = randomUUID();
    const keep = randomUUID();
    const extra = randomUUID();
    await withClient(url, async (c) => {
      await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-rot', 'Rotation')`);
      await c.query(`INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES (1, '\\x00', 'local', 'x')`);
      await insertApiKey(c, key(old, null));
      await insertApiKey(c, key(keep, old));
      await insertApiKey(c, key(extra, old));
    });
    await expect(migrateTo(null)).rejects.toThrow(/071_api_key_one_successor.*1 API key\(s\) have more than one successor.*apikey revoke ID.*SET replaces = NULL/s);

    await withClient(url, async (c) => {
      await revokeApiKeyRow(c, extra);
      await c.query('UPDATE phigate.api_keys SET replaces = NULL WHERE id = $1', [extra]);
    });
    await migrateTo(null);
    await expect(withClient(url, (c) => insertApiKey(c, key(randomUUID(), old)))).rejects.toMatchObject({ constraint: 'api_keys_one_successor' });
  });
});
