import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, assertSafeAppRole, type Pool } from '../../src/db/pool.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { POLICY_FILE } from '../support/gateway.ts';
import { openRequestTransaction, withRequestTransaction as withTx, type SecurityContext, type TransactionOptions } from '../../src/db/transaction.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../support/db.ts';

// Row security at the database level, with no gateway in between: these hold even if every line
// of TypeScript were wrong.

let db: TestDatabase;
let pool: Pool;
let session: Pool;
const ids = { a1: randomUUID(), a2: randomUUID(), b1: randomUUID() };

const ctx = (over: Partial<SecurityContext>): SecurityContext => ({
  actor: 'nobody',
  actorKind: 'user',
  roles: [],
  clinics: [],
  requestId: randomUUID(),
  purpose: 'test',
  ...over,
});

async function visiblePatients(c: SecurityContext): Promise<string[]> {
  return withRequestTransaction(pool, c, async (tx) =>
    (await tx.query<{ id: string }>('SELECT id FROM phigate.patients ORDER BY id')).rows.map((r) => r.id),
  );
}

const visiblePatientsOn = (p: Pool, c: SecurityContext): Promise<string[]> =>
  withRequestTransaction(p, c, async (tx) => (await tx.query<{ id: string }>('SELECT id FROM phigate.patients ORDER BY id')).rows.map((r) => r.id));

// Through PgBouncer 1.18 (PHIGATE_TEST_VIA_PGBOUNCER=1) no statement may be named.
const withRequestTransaction: typeof withTx = (p, c, fn, opts?: TransactionOptions) => withTx(p, c, fn, { preparedStatements: preparedStatements(), ...opts });

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2 });
  session = createPool(db.directAppUrl, { max: 1 });
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A'), ('c-b', 'B')`);
    const ins = `INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, $2, $3, '\\x00')`;
    await c.query(ins, [ids.a1, 'c-a', Buffer.from('a1')]);
    await c.query(ins, [ids.a2, 'c-a', Buffer.from('a2')]);
    await c.query(ins, [ids.b1, 'c-b', Buffer.from('b1')]);
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr-a', 'c-a'), ($1, 'nurse-a', 'c-a')`, [ids.a1]);
    await c.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, 'c-a', now(), 'visit'), ($3, $4, 'c-a', now(), 'visit')`,
      [randomUUID(), ids.a1, randomUUID(), ids.a2],
    );
  });
});

afterAll(async () => {
  await Promise.all([pool?.end(), session?.end()]);
  await db?.drop();
});

describe('prepared statements and row security', () => {
  // One connection, so both requests reuse the same prepared statement; a generic plan, so the
  // plan itself is reused: the context must still be read when each request executes it.
  it('a statement prepared under one request answers the next one in its own context', async () => {
    // A statement prepared on one server session: what PostgreSQL does, so past any pooler.
    const one = createPool(db.directAppUrl, { max: 1 });
    try {
      const seen = (c: SecurityContext) =>
        withTx(one, c, async (tx) => {
          await tx.query(`SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`);
          return (await tx.query<{ id: string }>('SELECT id FROM phigate.patients WHERE clinic_id = ANY($1::text[]) ORDER BY id', [['c-a', 'c-b']])).rows.map((r) => r.id);
        });
      const a = ctx({ actor: 'reg-a', roles: ['registrar'], clinics: ['c-a'] });
      const b = ctx({ actor: 'reg-b', roles: ['registrar'], clinics: ['c-b'] });
      for (let i = 0; i < 3; i++) {
        expect(await seen(a)).toEqual([ids.a1, ids.a2].sort());
        expect(await seen(b)).toEqual([ids.b1]);
      }
      const prepared = await withTx(one, a, (tx) => tx.query<{ name: string }>(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'phigate_%'`));
      expect(prepared.rows.length).toBeGreaterThan(0);
    } finally {
      await one.end();
    }
  });

  it("a read's connection goes to the next request when its COMMIT is sent, and that request runs in its own context only", async () => {
    const one = createPool(db.appUrl, { max: 1 });
    try {
      const a = openRequestTransaction(one, ctx({ actor: 'reg-a', roles: ['registrar'], clinics: ['c-a'] }), { preparedStatements: preparedStatements() });
      a.readOnly();
      expect((await a.query('SELECT id FROM phigate.patients ORDER BY id')).rows.map((r) => r.id)).toEqual([ids.a1, ids.a2].sort());
      const b = withRequestTransaction(one, ctx({ actor: 'reg-b', roles: ['registrar'], clinics: ['c-b'] }), async (tx) => {
        const { rows } = await tx.query<{ id: string; actor: string }>("SELECT id, current_setting('phigate.actor') AS actor FROM phigate.patients ORDER BY id");
        return rows;
      });
      expect(one.waitingCount).toBe(1);
      const committed = a.commit();
      // Before any answer from the server can have arrived (no I/O runs before a tick ends).
      await new Promise((resolve) => process.nextTick(resolve));
      expect(one.waitingCount).toBe(0);
      await committed;
      expect(await b).toEqual([{ id: ids.b1, actor: 'reg-b' }]);
      const c = await one.connect();
      try {
        const { rows } = await c.query<{ actor: string; open: boolean }>("SELECT current_setting('phigate.actor', true) AS actor, now() <> statement_timestamp() AS open");
        expect(rows[0]).toEqual({ actor: '', open: false });
      } finally {
        c.release();
      }
    } finally {
      await one.end();
    }
  });

  it('a read whose session ends before its COMMIT is answered fails alone: the next holder gets a fresh connection and its rows', async () => {
    const one = createPool(db.appUrl, { max: 1 });
    try {
      const acquired = new Promise<pg.PoolClient>((resolve) => one.once('acquire', resolve));
      const a = openRequestTransaction(one, ctx({ actor: 'reg-a', roles: ['registrar'], clinics: ['c-a'] }), { preparedStatements: preparedStatements() });
      a.readOnly();
      const { rows } = await a.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      // The client reads nothing until its COMMIT has left, so the server's FATAL is the answer
      // to that COMMIT, after the connection went back to the pool (commitReadOnly); the socket's
      // end comes in a later read, after the next holder has had its turn.
      const socket = (await acquired).connection.stream as unknown as { _handle: { readStop(): number; readStart(): number } };
      socket._handle.readStop();
      await admin(async (c) => {
        await c.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
        while ((await c.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [rows[0]!.pid])).rowCount !== 0) await c.query('SELECT pg_sleep(0.01)');
      });
      const committed = a.commit();
      socket._handle.readStart();
      await expect(committed).rejects.toMatchObject({ code: 'INTERNAL' });
      const b = ctx({ actor: 'reg-b', roles: ['registrar'], clinics: ['c-b'] });
      expect(await visiblePatientsOn(one, b)).toEqual([ids.b1]);
      expect(await visiblePatientsOn(one, b)).toEqual([ids.b1]);
    } finally {
      await one.end();
    }
  });

  it('with preparedStatements off nothing is prepared', async () => {
    const one = createPool(db.appUrl, { max: 1 });
    try {
      const off = { preparedStatements: false };
      const a = ctx({ actor: 'reg-a', roles: ['registrar'], clinics: ['c-a'] });
      await withRequestTransaction(one, a, (tx) => tx.query('SELECT id FROM phigate.patients WHERE id = $1', [ids.a1]), off);
      const prepared = await withRequestTransaction(one, a, (tx) => tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_prepared_statements`, []), off);
      expect(prepared.rows[0]!.n).toBe(0);
    } finally {
      await one.end();
    }
  });
});

describe('row security without the gateway', () => {
  it('the gateway role passes the start-up safety check', async () => {
    await expect(assertSafeAppRole(pool)).resolves.toBeUndefined();
  });

  it('with no context at all, the app role sees zero rows', async () => {
    expect((await pool.query('SELECT id FROM phigate.patients')).rowCount).toBe(0);
    expect((await pool.query('SELECT id FROM phigate.encounters')).rowCount).toBe(0);
    expect((await pool.query('SELECT patient_id FROM phigate.care_team')).rowCount).toBe(0);
  });

  it('clinic A context sees clinic A rows and none of clinic B', async () => {
    expect(await visiblePatients(ctx({ roles: ['registrar'], clinics: ['c-a'] }))).toEqual([ids.a1, ids.a2].sort());
    expect(await visiblePatients(ctx({ roles: ['registrar'], clinics: ['c-b'] }))).toEqual([ids.b1]);
  });

  it('physicians and nurses see only care-team patients; outside the team, nothing', async () => {
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['physician'], clinics: ['c-a'] }))).toEqual([ids.a1]);
    expect(await visiblePatients(ctx({ actor: 'nurse-a', roles: ['nurse'], clinics: ['c-a'] }))).toEqual([ids.a1]);
    expect(await visiblePatients(ctx({ actor: 'nurse-x', roles: ['nurse'], clinics: ['c-a'] }))).toEqual([]);
    // Being on a care team does not open another clinic.
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['physician'], clinics: ['c-b'] }))).toEqual([]);
  });

  it('a role with no row scope (compliance, or MFA not met: no roles) sees nothing', async () => {
    expect(await visiblePatients(ctx({ roles: ['compliance'], clinics: ['c-a'] }))).toEqual([]);
    expect(await visiblePatients(ctx({ roles: [], clinics: ['c-a'] }))).toEqual([]);
  });

  // 035_read_cpu.sql asks for the widest scope of the request's roles in one call.
  it('a request holding several roles sees what the widest of their scopes allows; a role with no scope adds nothing', async () => {
    const all = [ids.a1, ids.a2].sort();
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['physician', 'registrar'], clinics: ['c-a'] }))).toEqual(all);
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['compliance', 'physician'], clinics: ['c-a'] }))).toEqual([ids.a1]);
    expect(await visiblePatients(ctx({ actor: 'nurse-x', roles: ['nurse', 'billing'], clinics: ['c-a'] }))).toEqual(all);
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['physician', 'no-such-role'], clinics: ['c-a'] }))).toEqual([ids.a1]);
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['no-such-role'], clinics: ['c-a'] }))).toEqual([]);
    // A partner key scope without a live key named as the actor reaches nothing, beside any other role.
    expect(await visiblePatients(ctx({ actor: 'dr-a', roles: ['partner', 'physician'], clinics: ['c-a'] }))).toEqual([ids.a1]);
  });

  it('encounters are visible exactly when their patient is', async () => {
    const seen = await withRequestTransaction(pool, ctx({ actor: 'dr-a', roles: ['physician'], clinics: ['c-a'] }), async (tx) =>
      (await tx.query<{ patient_id: string }>('SELECT patient_id FROM phigate.encounters')).rows.map((r) => r.patient_id),
    );
    expect(seen).toEqual([ids.a1]);
  });

  it('the context does not outlive its transaction on a pooled connection', async () => {
    await visiblePatients(ctx({ roles: ['registrar'], clinics: ['c-a'] }));
    const c = await pool.connect();
    try {
      const { rows } = await c.query("SELECT current_setting('phigate.clinics', true) AS clinics, count(*)::int AS n FROM phigate.patients");
      expect(rows[0]).toEqual({ clinics: '', n: 0 });
    } finally {
      c.release();
    }
  });

  it('the owner is bound too (FORCE ROW LEVEL SECURITY)', async () => {
    const n = await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("SELECT set_config('phigate.clinics', 'c-a', true), set_config('phigate.roles', 'registrar', true)");
      await c.query('SET LOCAL ROLE phigate_owner');
      const { rows } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM phigate.patients');
      await c.query('ROLLBACK');
      return rows[0]!.n;
    });
    expect(n).toBe(0);
  });

  it.each([
    ['SET ROLE phigate_owner', /permission denied/],
    ['SET ROLE postgres', /permission denied/],
    ['SET SESSION AUTHORIZATION postgres', /permission denied/],
    ['ALTER TABLE phigate.patients DISABLE ROW LEVEL SECURITY', /must be owner/],
    ['ALTER ROLE CURRENT_USER BYPASSRLS', /permission denied|must be superuser/],
    ['DROP POLICY patients_select ON phigate.patients', /must be owner/],
  ])('the app role cannot escape with %s', async (sql, error) => {
    await expect(pool.query(sql)).rejects.toThrow(error);
  });

  // Session settings go straight to PostgreSQL: through a transaction-mode pooler they would stay
  // on the server connection after this client is gone (the gateway itself never sets one).
  it('SET row_security = off makes a protected query fail rather than bypass', async () => {
    const c = await session.connect();
    try {
      await c.query('SET row_security = off');
      await expect(c.query('SELECT id FROM phigate.patients')).rejects.toThrow(/row-level security/);
    } finally {
      c.release(true);
    }
  });

  it('SET ROLE phigate_app then RESET ROLE changes nothing', async () => {
    const c = await session.connect();
    try {
      await c.query('SET ROLE phigate_app');
      await c.query('RESET ROLE');
      expect((await c.query('SELECT id FROM phigate.patients')).rowCount).toBe(0);
    } finally {
      c.release(true);
    }
  });

  it('writes are bound: no insert into another clinic, no moving a patient, no audit tampering', async () => {
    const registrarA = ctx({ roles: ['registrar'], clinics: ['c-a'] });
    await expect(
      withRequestTransaction(pool, registrarA, (tx) =>
        tx.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, 'c-b', '\\x01', '\\x00')`, [randomUUID()]),
      ),
    ).rejects.toThrow(/row-level security/);
    await expect(
      withRequestTransaction(pool, registrarA, (tx) => tx.query(`UPDATE phigate.patients SET clinic_id = 'c-b' WHERE id = $1`, [ids.a1])),
    ).rejects.toThrow(/permission denied/);
    await withRequestTransaction(pool, registrarA, (tx) =>
      tx.query(
        `INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name) VALUES ('r', 'a', 'user', 'p', 'read', 'Patient')`,
      ),
    );
    await expect(pool.query('SELECT * FROM phigate.audit_events')).rejects.toThrow(/permission denied/);
    await expect(pool.query('UPDATE phigate.audit_events SET actor = $1', ['x'])).rejects.toThrow(/permission denied/);
    await expect(pool.query('DELETE FROM phigate.audit_events')).rejects.toThrow(/permission denied/);
  });

  it('nobody, not even a superuser through the tables, updates or deletes audit rows', async () => {
    await admin(async (c) => {
      // phigate.audit_events is a view over the two tables that hold the events (028).
      await expect(c.query("UPDATE phigate.audit_events SET actor = 'x'")).rejects.toThrow(/append-only/);
      await expect(c.query('DELETE FROM phigate.audit_events')).rejects.toThrow(/append-only/);
      await expect(c.query("UPDATE phigate.audit_records SET actor = 'x'")).rejects.toThrow(/append-only/);
      await expect(c.query('DELETE FROM phigate.audit_records')).rejects.toThrow(/append-only/);
      for (const table of ['audit_records', 'audit_events_v1']) await expect(c.query(`TRUNCATE phigate.${table}`)).rejects.toThrow(/append-only/);
    });
  });

  it('analytics reads aggregate views only (cells this small are suppressed); the auditor reads audit only', async () => {
    await admin(async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE phigate_analytics');
      expect((await c.query('SELECT * FROM phigate.analytics_patients_by_clinic')).rowCount).toBe(0);
      expect((await c.query('SELECT * FROM phigate.analytics_encounters_by_month')).rowCount).toBe(0);
      await c.query('ROLLBACK');
      for (const sql of ['SELECT id, clinic_id FROM phigate.patients', 'SELECT occurred_at FROM phigate.encounters', 'SELECT ssn FROM phigate.patients']) {
        await c.query('BEGIN');
        await c.query('SET LOCAL ROLE phigate_analytics');
        await expect(c.query(sql)).rejects.toThrow(/permission denied/);
        await c.query('ROLLBACK');
      }
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE phigate_auditor');
      expect((await c.query('SELECT id FROM phigate.audit_events')).rowCount).toBeGreaterThan(0);
      await expect(c.query('SELECT id FROM phigate.patients')).rejects.toThrow(/permission denied/);
      await c.query('ROLLBACK');
    });
  });

  it('a superuser or BYPASSRLS login is refused at start-up', async () => {
    const superPool = createPool(db.adminUrl, { max: 1 });
    try {
      await expect(assertSafeAppRole(superPool)).rejects.toThrow(/superuser/);
    } finally {
      await superPool.end();
    }
    const role = `phigate_bypass_${Date.now()}`;
    await admin((c) => c.query(`CREATE ROLE ${role} LOGIN PASSWORD 'x' BYPASSRLS IN ROLE phigate_app`));
    const bypassPool = createPool(db.urlAs(role, 'x'), { max: 1 });
    try {
      await expect(assertSafeAppRole(bypassPool)).rejects.toThrow(/BYPASSRLS/);
    } finally {
      await bypassPool.end();
      await admin((c) => c.query(`DROP ROLE ${role}`));
    }
  });
});

/** A partner key row as the gateway writes it (src/db/api-keys.ts); the secret hash is irrelevant here. */
async function insertKey(clinics: string[], end: 'live' | 'revoked' | 'expired' = 'live'): Promise<string> {
  const id = randomUUID();
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES (1, '\\x00', 'local', 'test') ON CONFLICT DO NOTHING`);
    await c.query(
      `INSERT INTO phigate.api_keys (id, partner, clinics, fields, purpose, secret_hash, pepper_version, rate_per_minute, burst, created_by, expires_at, revoked_at)
       VALUES ($1, 'lab', $2, '{Patient.mrn}', 'TREAT', $3, 1, 60, 10, 'test',
               CASE WHEN $4 = 'expired' THEN now() - interval '1 second' ELSE now() + interval '1 day' END,
               CASE WHEN $4 = 'revoked' THEN now() END)`,
      [id, clinics, Buffer.alloc(32), end],
    );
  });
  return id;
}

describe('the partner scope (schema/migrations/011_api_keys.sql)', () => {
  const partner = (actor: string, clinics = ['c-a']) => ctx({ actor, actorKind: 'partner', roles: ['partner'], clinics });

  it("a live key sees every patient of the context's clinics, and their encounters", async () => {
    const key = await insertKey(['c-a']);
    expect(await visiblePatients(partner(key))).toEqual([ids.a1, ids.a2].sort());
    const encounters = await withRequestTransaction(pool, partner(key), async (tx) => (await tx.query('SELECT patient_id FROM phigate.encounters')).rows);
    expect(encounters).toHaveLength(2);
  });

  it('a revoked or expired key, an actor that is no key, or clinics beyond the key, see nothing', async () => {
    expect(await visiblePatients(partner(await insertKey(['c-a'], 'revoked')))).toEqual([]);
    expect(await visiblePatients(partner(await insertKey(['c-a'], 'expired')))).toEqual([]);
    expect(await visiblePatients(partner('dr-a'))).toEqual([]);
    expect(await visiblePatients(partner(await insertKey(['c-a']), ['c-a', 'c-b']))).toEqual([]);
  });

  it('revocation shows in the next transaction', async () => {
    const key = await insertKey(['c-a']);
    expect(await visiblePatients(partner(key))).toHaveLength(2);
    await admin((c) => c.query('UPDATE phigate.api_keys SET revoked_at = now() WHERE id = $1', [key]));
    expect(await visiblePatients(partner(key))).toEqual([]);
  });
});

/** Bytes standing for a sealed reason: the database checks its size, the gateway its tag. */
const SEALED = Buffer.concat([Buffer.from([2]), Buffer.alloc(40, 7)]);

describe('break-glass grants are bound to their patient\'s clinic (schema/migrations/034_break_glass_clinic.sql)', () => {
  const doctor = (actor: string, clinics = ['c-a']) => ctx({ actor, roles: ['physician'], clinics });
  const openGrant = (c: SecurityContext, patientId: string, crossClinic = false) =>
    withRequestTransaction(pool, c, async (tx) => {
      const grant = (
        await tx.query<{ id: string; clinic_id: string }>(
          `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, request_id, expires_at)
           VALUES (phigate.ctx_actor(), 'physician', $1, $2, 'r', clock_timestamp() + interval '1 hour') RETURNING id, clinic_id`,
          [patientId, crossClinic],
        )
      ).rows[0]!;
      await tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [grant.id, SEALED]);
      return grant;
    });
  /** A grant row as it could have been left before 034 (or by hand): triggers off, any clinic. */
  const plantGrant = (actor: string, patientId: string, clinicId: string | null, crossClinic: boolean) =>
    admin(async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL session_replication_role = replica');
      await c.query(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, expires_at)
         VALUES ($1, 'physician', $2, $3, $4, 'emergency', 'r', now() + interval '1 hour')`,
        [actor, patientId, clinicId, crossClinic],
      );
      await c.query('COMMIT');
    });

  it('the database files a grant under its patient\'s clinic, and it opens that patient', async () => {
    const grant = await openGrant(doctor('dr-bind-1'), ids.a2);
    expect(grant.clinic_id).toBe('c-a');
    expect(await visiblePatients(doctor('dr-bind-1'))).toEqual([ids.a2]);
    // Whatever clinic an insert names, even the owner's, the patient's is kept.
    await admin((c) =>
      c.query(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, expires_at)
         VALUES ('dr-bind-2', 'physician', $1, 'c-b', false, 'emergency', 'r', now() + interval '1 hour')`,
        [ids.a2],
      ),
    );
    expect((await admin((c) => c.query(`SELECT clinic_id FROM phigate.break_glass_grants WHERE actor = 'dr-bind-2'`))).rows).toEqual([{ clinic_id: 'c-a' }]);
  });

  it('a grant on a patient of another clinic, or on no patient, is refused alike unless it reaches across clinics', async () => {
    await expect(openGrant(doctor('dr-bind-3'), ids.b1)).rejects.toMatchObject({ code: '42501' });
    await expect(openGrant(doctor('dr-bind-3'), randomUUID())).rejects.toMatchObject({ code: '42501' });
    expect(await visiblePatients(doctor('dr-bind-3'))).toEqual([]);
    const across = await openGrant(doctor('dr-bind-4'), ids.b1, true);
    expect(across.clinic_id).toBe('c-b');
    expect(await visiblePatients(doctor('dr-bind-4'))).toEqual([ids.b1]);
  });

  it('a grant opens reading only: the database refuses its actor every write to the patient', async () => {
    const nurse = ctx({ actor: 'rn-bind-1', roles: ['nurse'], clinics: ['c-a'] });
    await withRequestTransaction(pool, nurse, async (tx) => {
      const { rows } = await tx.query<{ id: string }>(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, request_id, expires_at)
         VALUES (phigate.ctx_actor(), 'nurse', $1, false, 'r', clock_timestamp() + interval '1 hour') RETURNING id`,
        [ids.a2],
      );
      await tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [rows[0]!.id, SEALED]);
    });
    expect(await visiblePatients(nurse)).toEqual([ids.a2]);
    const physician = doctor('dr-bind-9');
    await openGrant(physician, ids.a2);
    expect(await visiblePatients(physician)).toEqual([ids.a2]);
    const updated = await withRequestTransaction(pool, physician, (tx) => tx.query(`UPDATE phigate.patients SET phone = '\\x01' WHERE id = $1`, [ids.a2]));
    expect(updated.rowCount).toBe(0);
    await expect(
      withRequestTransaction(pool, nurse, (tx) =>
        tx.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, 'c-a', now(), '\\x00')`, [randomUUID(), ids.a2]),
      ),
    ).rejects.toMatchObject({ code: '42501' });
  });

  it("a grant's clinic cannot be changed, not even by its actor", async () => {
    const grant = await openGrant(doctor('dr-bind-5'), ids.a2);
    await expect(
      withRequestTransaction(pool, doctor('dr-bind-5'), (tx) => tx.query(`UPDATE phigate.break_glass_grants SET clinic_id = 'c-b' WHERE id = $1`, [grant.id])),
    ).rejects.toMatchObject({ code: '42501' });
    await expect(admin((c) => c.query(`UPDATE phigate.break_glass_grants SET clinic_id = 'c-b' WHERE id = $1`, [grant.id]))).rejects.toMatchObject({
      code: '42501',
    });
  });

  it('a grant filed under another clinic than its patient\'s opens nothing, even one reaching across clinics; one under none cannot be written (069)', async () => {
    await plantGrant('dr-bind-6', ids.b1, 'c-a', true);
    await plantGrant('dr-bind-7', ids.a2, 'c-b', false);
    await expect(plantGrant('dr-bind-8', ids.a2, null, false)).rejects.toMatchObject({ code: '23502' });
    expect(await visiblePatients(doctor('dr-bind-6', ['c-a', 'c-b']))).toEqual([]);
    expect(await visiblePatients(doctor('dr-bind-7', ['c-a', 'c-b']))).toEqual([]);
  });
});

describe('break-glass texts are written sealed, once (schema/migrations/066_break_glass_sealed_text.sql)', () => {
  const doctor = (actor: string) => ctx({ actor, roles: ['physician'], clinics: ['c-a'] });
  const insert = (tx: { query: (text: string, values?: unknown[]) => Promise<{ rows: { id: string }[] }> }, withPlaintext: boolean) =>
    tx.query(
      `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, request_id, expires_at${withPlaintext ? ', reason' : ''})
       VALUES (phigate.ctx_actor(), 'physician', $1, false, 'r', clock_timestamp() + interval '1 hour'${withPlaintext ? ", 'plain'" : ''}) RETURNING id`,
      [ids.a2],
    );

  it('the gateway role writes no plaintext reason or comment', async () => {
    await expect(withRequestTransaction(pool, doctor('dr-text-1'), (tx) => insert(tx, true))).rejects.toMatchObject({ code: '42501' });
    const id = await withRequestTransaction(pool, doctor('dr-text-2'), async (tx) => {
      const { rows } = await insert(tx, false);
      await tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [rows[0]!.id, SEALED]);
      return rows[0]!.id;
    });
    for (const column of ['reason', 'review_comment']) {
      await expect(
        withRequestTransaction(pool, doctor('dr-text-2'), (tx) => tx.query(`UPDATE phigate.break_glass_grants SET ${column} = 'plain' WHERE id = $1`, [id])),
      ).rejects.toMatchObject({ code: '42501' });
    }
  });

  it("no sealed text is written for a shredded patient (a replica's cached key must not seal under a destroyed one)", async () => {
    const shredded = randomUUID();
    await admin(async (c) => {
      // A clinic of its own, so that no other test here counts this patient.
      await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-shred', 'Shred')`);
      await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1::uuid, 'c-shred', convert_to($1::text, 'UTF8'), '\\x00')`, [shredded]);
      await c.query(`INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped, shredded_at) VALUES ($1, 1, 'c-shred', 0, NULL, now())`, [shredded]);
    });
    const opening = withRequestTransaction(pool, ctx({ actor: 'dr-text-5', roles: ['physician'], clinics: ['c-shred'] }), async (tx) => {
      const { rows } = await tx.query<{ id: string }>(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, request_id, expires_at)
         VALUES (phigate.ctx_actor(), 'physician', $1, false, 'r', clock_timestamp() + interval '1 hour') RETURNING id`,
        [shredded],
      );
      await tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [rows[0]!.id, SEALED]);
    });
    await expect(opening).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE', reason: 'shredded' });
  });

  it('a grant commits only with a reason, and its sealed reason is written once', async () => {
    // The check waits for COMMIT (the opening request seals the reason after the insert binds the clinic).
    await expect(withRequestTransaction(pool, doctor('dr-text-3'), (tx) => insert(tx, false))).rejects.toMatchObject({
      reason: 'commit_failed',
      cause: expect.objectContaining({ code: '23514' }),
    });
    const id = await withRequestTransaction(pool, doctor('dr-text-4'), async (tx) => {
      const { rows } = await insert(tx, false);
      await tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [rows[0]!.id, SEALED]);
      return rows[0]!.id;
    });
    await expect(
      withRequestTransaction(pool, doctor('dr-text-4'), (tx) =>
        tx.query('UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1', [id, Buffer.concat([SEALED, Buffer.from([1])])]),
      ),
    ).rejects.toMatchObject({ code: '42501' });
    // A review comment goes in with its review only: its actor cannot put one on its own grant.
    await expect(
      withRequestTransaction(pool, doctor('dr-text-4'), (tx) => tx.query('UPDATE phigate.break_glass_grants SET review_comment_sealed = $2 WHERE id = $1', [id, SEALED])),
    ).rejects.toMatchObject({ code: '42501' });
    // Plaintext only ever goes: nobody, not even the owner, writes it back over a sealed reason.
    await expect(admin((c) => c.query(`UPDATE phigate.break_glass_grants SET reason = 'plain', reason_sealed = NULL WHERE id = $1`, [id]))).rejects.toMatchObject({
      code: '42501',
    });
  });
});

describe('policies/default.yaml and the SQL policies agree on row scopes', () => {
  it('each role sees exactly what its declared row scope allows', async () => {
    const policy = await loadPolicy(POLICY_FILE, PHI_FIELDS);
    expect(policy.roles.size).toBeGreaterThan(0);
    // The partner scope holds only under a live key, named as the actor.
    const partnerKey = await insertKey(['c-a']);
    for (const [name, role] of policy.roles) {
      // dr-a is on a1's care team; a2 has no team; b1 is in another clinic.
      const seen = await visiblePatients(ctx({ actor: name === 'partner' ? partnerKey : 'dr-a', roles: [name], clinics: ['c-a'] }));
      const expected = { care_team: [ids.a1], clinic: [ids.a1, ids.a2].sort(), none: [] }[role.rows];
      expect(seen, `role ${name} (rows: ${role.rows})`).toEqual(expected);
    }
  });
});
