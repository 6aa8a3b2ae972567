import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FieldCipher } from '../../src/crypto/field-cipher.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { createSearchQuota } from '../../src/db/search-quota.ts';
import { openRequestTransaction, withRequestTransaction, type SecurityContext } from '../../src/db/transaction.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';

// Resource bounds: statement and idle-in-transaction timeouts per transaction, a request deadline
// that abandons and rolls back, admission in front of execution (503 when the pool and its queue
// are full), and a graceful shutdown that finishes what is in flight and refuses what is new.
// Slowness is made where the gateway really waits: a decryption held at a gate, a row lock held
// by another session, pg_sleep at the transaction level.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 24 });
});
afterAll(async () => gw?.close());

// ---- helpers -------------------------------------------------------------------------------------

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');
const READ_SSN = `query($id: ID!) { patient(id: $id) { id ssn } }`;
// The same read beside another root field: it keeps its transaction, and its connection, until it
// settles. Alone, a read by id sends its COMMIT behind its lookup and gives the connection back
// before its fields are decrypted (src/graphql/types/query.ts), so nothing would be held at the gate.
const HELD_READ_SSN = `query($id: ID!) { patient(id: $id) { id ssn } me { subject } }`;

async function send(on: TestGateway, token: string, query: string, variables?: Record<string, unknown>): Promise<GqlResponse & { requestId: string }> {
  const response = await on.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry (a client's X-Request-Id never replaces it).
  return { ...response, requestId: response.headers.get('x-request-id') ?? '' };
}

/**
 * Holds every decryption of `cipher` until open() is called: a request parked mid-execution, its
 * transaction open. Both of the cipher's ways in are held (reads take decryptAt, others decrypt).
 */
function gateDecrypts(cipher: FieldCipher) {
  const decrypt = cipher.decrypt.bind(cipher);
  const decryptAt = cipher.decryptAt.bind(cipher);
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  let waiting = 0;
  cipher.decrypt = async (...args) => {
    waiting++;
    await opened;
    return decrypt(...args);
  };
  cipher.decryptAt = async (...args) => {
    waiting++;
    await opened;
    return decryptAt(...args);
  };
  return {
    open,
    get waiting() {
      return waiting;
    },
  };
}

/** What `request` answers while the administrator holds the locks `lock` takes, in a transaction it then rolls back. */
const whileHeld = <T>(lock: string, params: unknown[], request: () => Promise<T>): Promise<T> =>
  gw.admin(async (c) => {
    await c.query('BEGIN');
    await c.query(lock, params);
    try {
      return await request();
    } finally {
      await c.query('ROLLBACK');
    }
  });

/** Waits for a condition, not for a time; the bound only ends a wait that will never be met. */
async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Request sessions that sit in an open transaction: a leaked one would hold locks and a connection.
 * The audit writer's own ('phigate-audit') may rightly hold one begun ahead for a read still running.
 */
const openTransactions = async () =>
  Number(
    (await gw.admin((c) => c.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'phigate' AND state LIKE 'idle in transaction%'`)))
      .rows[0].n,
  );

const auditOf = (requestId: string) => gw.auditRows('request_id = $1', [requestId]);

const sessionAlive = async (pid: number) => ((await gw.admin((c) => c.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]))).rowCount ?? 0) > 0;

const refusedConnection = (port: number) =>
  new Promise<string>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });

function expectNoPhi(r: { text: string }): void {
  for (const p of gw.data.patients) for (const v of [p.ssn, p.mrn, p.givenName, p.familyName]) expect(r.text).not.toContain(v);
}

const context = (requestId: string): SecurityContext => ({
  actor: 'bounds-test',
  actorKind: 'user',
  roles: ['registrar'],
  clinics: ['c-north'],
  requestId,
  purpose: 'healthcare_operations',
});

// An audit row is the one thing the app role may insert without a patient; whether it survived
// tells whether the transaction committed.
const INSERT_MARK = `INSERT INTO phigate.audit_events (request_id, actor, actor_kind, action, type_name, purpose)
  VALUES (current_setting('phigate.request_id'), 'bounds-test', 'user', 'key', 'BoundsTest', 'healthcare_operations')`;

// ---- per transaction -----------------------------------------------------------------------------

describe('transaction timeouts', () => {
  let pool: Pool;
  beforeAll(() => {
    // One connection, so the next transaction provably reuses the one that timed out (or replaces it).
    pool = createPool(gw.db.appUrl, { max: 1 });
  });
  afterAll(async () => pool?.end());

  it('a statement over statement_timeout fails (57014), and the connection is clean for the next transaction', async () => {
    const requestId = `rb-${randomBytes(8).toString('hex')}`;
    // A sleep no test outlives: 57014 is the server cancelling it, and only statement_timeout cancels
    // here (a bound on the time taken would race a loaded machine instead).
    const error = await withRequestTransaction(
      pool,
      context(requestId),
      async (tx) => {
        await tx.query(INSERT_MARK);
        await tx.query('SELECT pg_sleep(600)');
      },
      { statementTimeoutMs: 200 },
    ).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('57014');
    expect(await auditOf(requestId)).toEqual([]);

    // Same connection, outside any request: no transaction left open, no setting of the last one.
    const { rows } = await pool.query(
      `SELECT now() = statement_timestamp() AS own_transaction, current_setting('statement_timeout') AS statement_timeout,
              coalesce(current_setting('phigate.actor', true), '') AS actor, coalesce(current_setting('phigate.roles', true), '') AS roles`,
    );
    expect(rows[0]).toEqual({ own_transaction: true, statement_timeout: '0', actor: '', roles: '' });
    expect(pool.totalCount).toBe(1);
    await expect(withRequestTransaction(pool, context('rb-after-timeout'), (tx) => tx.query('SELECT 1 AS ok'))).resolves.toMatchObject({ rows: [{ ok: 1 }] });
  });

  it('a transaction left idle past idle_in_transaction_session_timeout is ended by the server and never commits', async () => {
    const requestId = `rb-${randomBytes(8).toString('hex')}`;
    const error = await withRequestTransaction(
      pool,
      context(requestId),
      async (tx) => {
        await tx.query(INSERT_MARK);
        // Idle until the server has ended the session, however late a loaded machine's timer fires.
        const { rows } = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        await until(async () => (await sessionAlive(rows[0]!.pid)) === false, 'the server to end the idle session');
        await tx.query('SELECT 1');
      },
      { idleInTransactionTimeoutMs: 200 },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(await auditOf(requestId)).toEqual([]);
    // The dead connection was dropped, not handed to the next request.
    await expect(withRequestTransaction(pool, context('rb-after-idle'), (tx) => tx.query('SELECT 1 AS ok'))).resolves.toMatchObject({ rows: [{ ok: 1 }] });
  });

  it('an aborted transaction rolls back at once, then can neither query nor commit', async () => {
    const requestId = `rb-${randomBytes(8).toString('hex')}`;
    const tx = openRequestTransaction(pool, context(requestId));
    await tx.query(INSERT_MARK);
    expect(await tx.abort()).toBe(true);
    expect(tx.failed).toBe(true);
    expect(pool.idleCount).toBe(1);
    await expect(tx.query('SELECT 1')).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(tx.commit()).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(await auditOf(requestId)).toEqual([]);
  });

  it('a statement a resolver sends while an abort is rolling back is refused, never run after the ROLLBACK', async () => {
    const requestId = `rb-${randomBytes(8).toString('hex')}`;
    const tx = openRequestTransaction(pool, context(requestId));
    await tx.query('SELECT 1');
    const busy = tx.query('SELECT pg_sleep(0.3)');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const aborting = tx.abort();
    // On the wire this would follow the ROLLBACK: in autocommit, or in the next request's transaction.
    const stray = tx.query(`INSERT INTO phigate.audit_events (request_id, actor, actor_kind, action, type_name, purpose)
      VALUES ('${requestId}', 'bounds-test', 'user', 'key', 'BoundsTest', 'healthcare_operations')`);
    await expect(stray).rejects.toMatchObject({ code: 'INTERNAL' });
    await busy;
    expect(await aborting).toBe(true);
    expect(await auditOf(requestId)).toEqual([]);
    expect(pool.idleCount).toBe(1);
  });
});

// ---- per request ---------------------------------------------------------------------------------

describe('request timeout', () => {
  let slow: TestGateway;
  beforeAll(async () => {
    slow = await startTestGateway({ replicaOf: gw, gatewayOptions: { requestTimeoutMs: 300 } });
  });
  afterAll(async () => slow?.close());

  it('a read past the deadline is abandoned: 503 with Retry-After, no PHI, no audit row, transaction rolled back', async () => {
    const token = await gw.tokenFor('reg-north');
    // The gate stays shut until the answer is in: only the deadline can have answered it.
    const gate = gateDecrypts(slow.cipher);
    const r = await send(slow, token, READ_SSN, { id: north()[0]!.id });
    expect(r.status, r.text).toBe(503);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['INTERNAL', 'request_timeout']]);
    expect(r.body.data ?? null).toBeNull();
    expectNoPhi(r);
    expect(await openTransactions()).toBe(0);

    // The abandoned execution, released, still cannot audit, commit or decrypt any further: once it
    // has run to its end (its request line), nothing of it was audited.
    gate.open();
    await until(() => slow.logs.some((l) => l.requestId === r.requestId && l.msg === 'request'), 'the abandoned execution to end', 30_000);
    expect(slow.logs.filter((l) => l.requestId === r.requestId && l.msg === 'request').map((l) => l.outcome)).toEqual(['transaction_failed']);
    expect(await auditOf(r.requestId)).toEqual([]);
  });

  it('a write past the deadline is rolled back: the database is unchanged and no write is audited', async () => {
    const token = await gw.tokenFor('reg-north');
    const patient = north()[1]!;
    const stored = async () => (await gw.admin((c) => c.query('SELECT phone, updated_at FROM phigate.patients WHERE id = $1', [patient.id]))).rows[0];
    const before = await stored();

    // Another session holds the row until the answer is in, so the gateway's UPDATE waits past the
    // request's deadline however slowly the machine runs.
    const locker = await gw.admin(async (c) => {
      await c.query('BEGIN');
      await c.query('SELECT 1 FROM phigate.patients WHERE id = $1 FOR UPDATE', [patient.id]);
      try {
        return await send(slow, token, `mutation($id: ID!) { updatePatient(id: $id, input: { phone: "+1 555 0177" }) { id } }`, { id: patient.id });
      } finally {
        await c.query('COMMIT');
      }
    });
    expect(locker.status, locker.text).toBe(503);
    expect(locker.body.errors![0]!.extensions).toMatchObject({ code: 'INTERNAL', reason: 'request_timeout' });
    expect(await stored()).toEqual(before);
    expect(await auditOf(locker.requestId)).toEqual([]);
    // The abandoned UPDATE's session ends once it sees its connection gone; none is left open.
    await until(async () => (await openTransactions()) === 0, 'the abandoned transaction to end');
    expect(await stored()).toEqual(before);
  });

  it('a request within the deadline is untouched by it', async () => {
    // A deadline this read meets on a loaded machine too: 300 ms was missed under CI's load.
    const roomy = await startTestGateway({ replicaOf: gw, gatewayOptions: { requestTimeoutMs: 15_000 } });
    try {
      const r = await send(roomy, await gw.tokenFor('reg-north'), READ_SSN, { id: north()[2]!.id });
      expect(r.status, r.text).toBe(200);
      expect(r.body.data!.patient.ssn).toBe(north()[2]!.ssn);
      expect((await auditOf(r.requestId)).map((a) => a.action)).toEqual(['read']);
    } finally {
      await roomy.close();
    }
  });
});

describe('a deadline that passes after COMMIT began', () => {
  // A COMMIT held where PostgreSQL really spends it: a deferred constraint trigger that, for one
  // patient's rows, waits for an advisory lock this test holds. The COMMIT lasts until the test lets
  // it go, where a fixed pg_sleep raced a loaded machine (the deadline passing before COMMIT began).
  const HOLD = 7_391_044;
  const holdCommits = async (patientId: string) =>
    gw.admin(async (c) => {
      await c.query(`CREATE FUNCTION phigate.bounds_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = '${patientId}' THEN PERFORM pg_advisory_xact_lock(${HOLD}); END IF; RETURN NULL; END $$`);
      await c.query('GRANT EXECUTE ON FUNCTION phigate.bounds_slow_commit() TO PUBLIC');
      await c.query(`CREATE CONSTRAINT TRIGGER bounds_slow_commit AFTER UPDATE ON phigate.patients
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION phigate.bounds_slow_commit()`);
    });
  const dropSlowCommit = () =>
    gw.admin(async (c) => {
      await c.query('DROP TRIGGER IF EXISTS bounds_slow_commit ON phigate.patients');
      await c.query('DROP FUNCTION IF EXISTS phigate.bounds_slow_commit()');
    });
  /** The advisory lock the held COMMIT waits for, on a session of its own; release() lets the COMMIT go on. */
  const holdLock = async () => {
    const c = new pg.Client({ connectionString: gw.db.adminUrl });
    await c.connect();
    await c.query('SELECT pg_advisory_lock($1)', [HOLD]);
    let released = false;
    return {
      async release() {
        if (released) return;
        released = true;
        await c.end();
      },
    };
  };
  const waitingCommit = `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename <> current_user
    AND query = 'COMMIT' AND wait_event_type = 'Lock' AND wait_event = 'advisory'`;
  const commitHeld = async (): Promise<number> => {
    let pids: number[] = [];
    await until(async () => (pids = (await gw.admin((c) => c.query(waitingCommit))).rows.map((r) => r.pid as number)).length === 1, 'the write to be in its COMMIT');
    return pids[0]!;
  };
  const stored = async (id: string) => (await gw.admin((c) => c.query('SELECT phone, updated_at FROM phigate.patients WHERE id = $1', [id]))).rows[0];
  const UPDATE_PHONE = `mutation($id: ID!, $phone: String) { updatePatient(id: $id, input: { phone: $phone }) { id } }`;
  // Long enough for the write to reach its COMMIT on a loaded machine before the deadline.
  const DEADLINE_MS = 5_000;

  it('a write whose COMMIT succeeds after the deadline is answered with its data, never told nothing was kept', { timeout: 60_000 }, async () => {
    // The wait for a begun COMMIT (the statement timeout) outlasts the hold below by far.
    const late = await startTestGateway({ replicaOf: gw, gatewayOptions: { requestTimeoutMs: DEADLINE_MS, transaction: { statementTimeoutMs: 30_000 } } });
    const patient = north()[5]!;
    await holdCommits(patient.id);
    const lock = await holdLock();
    try {
      const before = await stored(patient.id);
      const answer = send(late, await gw.tokenFor('reg-north'), UPDATE_PHONE, { id: patient.id, phone: '+1 555 0188' });
      await commitHeld();
      // The request began before its COMMIT did: after this, its deadline is past.
      await new Promise((resolve) => setTimeout(resolve, DEADLINE_MS + 500));
      await lock.release();
      const r = await answer;
      const after = await stored(patient.id);
      expect(after).not.toEqual(before);
      expect(r.status, r.text).toBe(200);
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data!.updatePatient.id).toBe(patient.id);
      expect((await auditOf(r.requestId)).length).toBeGreaterThan(0);
    } finally {
      await lock.release();
      await dropSlowCommit();
      await late.close();
    }
  });

  it('a write whose COMMIT is still running when the wait for it ends is told its outcome is unknown: no Retry-After, and it may well be kept', { timeout: 60_000 }, async () => {
    // Deferred triggers run after PostgreSQL disarms statement_timeout for the COMMIT: nothing bounds them.
    const late = await startTestGateway({ replicaOf: gw, gatewayOptions: { requestTimeoutMs: DEADLINE_MS, transaction: { statementTimeoutMs: 2_000 } } });
    const patient = north()[6]!;
    await holdCommits(patient.id);
    const lock = await holdLock();
    try {
      const before = await stored(patient.id);
      // The COMMIT is held until the answer is in.
      const r = await send(late, await gw.tokenFor('reg-north'), UPDATE_PHONE, { id: patient.id, phone: '+1 555 0189' });
      expect(r.status, r.text).toBe(504);
      expect(r.headers.get('retry-after')).toBeNull();
      expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['INTERNAL', 'commit_outcome_unknown']]);
      expect(r.body.data ?? null).toBeNull();
      // What "nothing of it was kept" would have said wrongly: the COMMIT goes on, and succeeds.
      await lock.release();
      await expect.poll(() => stored(patient.id), { timeout: 30_000 }).not.toEqual(before);
      expect((await auditOf(r.requestId)).length).toBeGreaterThan(0);
    } finally {
      await lock.release();
      await dropSlowCommit();
      await late.close();
    }
  });

  it('a write whose connection is lost while its COMMIT runs is told its outcome is unknown, not a 200 carrying INTERNAL', { timeout: 60_000 }, async () => {
    // A row no other case writes (the other cases here only read it).
    const patient = north()[3]!;
    await holdCommits(patient.id);
    const lock = await holdLock();
    try {
      const before = await stored(patient.id);
      const answer = send(gw, await gw.tokenFor('reg-north'), UPDATE_PHONE, { id: patient.id, phone: '+1 555 0194' });
      await gw.admin(async (c) => c.query('SELECT pg_terminate_backend($1)', [await commitHeld()]));
      const r = await answer;
      expect(r.status, r.text).toBe(504);
      expect(r.headers.get('retry-after')).toBeNull();
      expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['INTERNAL', 'commit_outcome_unknown']]);
      expect(r.body.data ?? null).toBeNull();
      // Ended before the COMMIT finished: PostgreSQL rolled it back, which the gateway could not know.
      await lock.release();
      expect(await stored(patient.id)).toEqual(before);
    } finally {
      await lock.release();
      await dropSlowCommit();
    }
  });
});

describe('database failures are answered as what they are', () => {
  const READ_BY_SSN = `query($ssn: String!) { patientBySsn(ssn: $ssn) { id ssn } }`;
  const answerOf = (r: GqlResponse) => r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason]);
  const searchEvents = (rows: readonly Record<string, unknown>[]) =>
    rows.map(({ action, field, detail, patient_id, actor }) => ({ action, field, detail, patient_id, actor }));
  /** Nothing of the driver's or the server's own words reaches the answer or the log. */
  const expectNothingOfTheDriver = (r: { text: string }, logs: readonly Record<string, unknown>[]) => {
    for (const text of [r.text, JSON.stringify(logs)]) {
      expect(text).not.toMatch(/timeout exceeded|canceling statement|terminat|Connection|SELECT|UPDATE|phigate\./);
    }
  };

  it("the search quota's pool giving no connection in time: 503 with Retry-After (db_unavailable), no PHI", async () => {
    const quotaPool = createPool(gw.db.auxUrl, { max: 1, connectionTimeoutMs: 300 });
    const held = await quotaPool.connect();
    const searching = await startTestGateway({ replicaOf: gw, gatewayOptions: { searchQuota: createSearchQuota(quotaPool) } });
    try {
      const r = await send(searching, await gw.tokenFor('reg-north'), READ_BY_SSN, { ssn: north()[0]!.ssn });
      expect(r.status, r.text).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(answerOf(r)).toEqual([['INTERNAL', 'db_unavailable']]);
      expect(r.body.data?.patientBySsn ?? null).toBeNull();
      expectNoPhi(r);
      expectNothingOfTheDriver(r, searching.logs);
      // The search was asked for, so it is traced, though it could not be counted.
      expect(searchEvents(await auditOf(r.requestId))).toEqual([{ action: 'search', field: 'patientBySsn', detail: 'ssn:failed', patient_id: null, actor: 'reg-north' }]);
    } finally {
      held.release();
      await searching.close();
      await quotaPool.end();
    }
  });

  it('a search whose lookup fails the transaction (57014) is traced though the request is rolled back: one search event, ssn:failed', async () => {
    const strict = await startTestGateway({ replicaOf: gw, gatewayOptions: { transaction: { statementTimeoutMs: 300 } } });
    try {
      const token = await gw.tokenFor('reg-north');
      const r = await whileHeld('LOCK TABLE phigate.patients IN ACCESS EXCLUSIVE MODE', [], () => send(strict, token, READ_BY_SSN, { ssn: north()[0]!.ssn }));
      expect(r.status, r.text).toBe(503);
      expect(answerOf(r)).toEqual([['INTERNAL', 'request_timeout']]);
      expectNoPhi(r);
      expect(searchEvents(await auditOf(r.requestId))).toEqual([{ action: 'search', field: 'patientBySsn', detail: 'ssn:failed', patient_id: null, actor: 'reg-north' }]);
    } finally {
      await strict.close();
    }
  });

  it('a read past statement_timeout (57014): answered as a request timeout, 503 with Retry-After, no PHI', async () => {
    const strict = await startTestGateway({ replicaOf: gw, gatewayOptions: { transaction: { statementTimeoutMs: 300 } } });
    try {
      const token = await gw.tokenFor('reg-north');
      const r = await whileHeld('LOCK TABLE phigate.patients IN ACCESS EXCLUSIVE MODE', [], () => send(strict, token, READ_SSN, { id: north()[0]!.id }));
      expect(r.status, r.text).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(answerOf(r)).toEqual([['INTERNAL', 'request_timeout']]);
      expect(r.body.data ?? null).toBeNull();
      expectNoPhi(r);
      expectNothingOfTheDriver(r, strict.logs);
      expect(await auditOf(r.requestId)).toEqual([]);
    } finally {
      await strict.close();
    }
  });

  it('a write past statement_timeout (57014): rolled back, answered as a request timeout', async () => {
    const strict = await startTestGateway({ replicaOf: gw, gatewayOptions: { transaction: { statementTimeoutMs: 300 } } });
    const patient = north()[7]!;
    const stored = async () => (await gw.admin((c) => c.query('SELECT phone, updated_at FROM phigate.patients WHERE id = $1', [patient.id]))).rows[0];
    try {
      const token = await gw.tokenFor('reg-north');
      const before = await stored();
      const r = await whileHeld('SELECT 1 FROM phigate.patients WHERE id = $1 FOR UPDATE', [patient.id], () => send(strict, token, `mutation($id: ID!) { updatePatient(id: $id, input: { phone: "+1 555 0190" }) { id } }`, { id: patient.id }));
      expect(r.status, r.text).toBe(503);
      expect(answerOf(r)).toEqual([['INTERNAL', 'request_timeout']]);
      expect(await stored()).toEqual(before);
      expect(await auditOf(r.requestId)).toEqual([]);
      expectNothingOfTheDriver(r, strict.logs);
    } finally {
      await strict.close();
    }
  });

  it('a write PostgreSQL ends to break a deadlock (40P01): rolled back whole, 503 with Retry-After (db_conflict), none of the server words', async () => {
    const [first, second] = [north()[2]!, north()[3]!];
    const stored = async () => (await gw.admin((c) => c.query('SELECT id, phone, updated_at FROM phigate.patients WHERE id = ANY($1) ORDER BY id', [[first.id, second.id]]))).rows;
    const token = await gw.tokenFor('reg-north');
    const before = await stored();
    const r = await gw.admin(async (c) => {
      await c.query('BEGIN');
      // The gateway waits first, so its own deadlock check (the server's deadlock_timeout) finds
      // the cycle and ends its transaction; this session's check would come far later.
      await c.query(`SET LOCAL deadlock_timeout = '1min'`);
      await c.query('SELECT 1 FROM phigate.patients WHERE id = $1 FOR UPDATE', [second.id]);
      try {
        const answer = send(gw, token, `mutation($a: ID!, $b: ID!) { a: updatePatient(id: $a, input: { phone: "+1 555 0191" }) { id } b: updatePatient(id: $b, input: { phone: "+1 555 0192" }) { id } }`, {
          a: first.id,
          b: second.id,
        });
        const waiting = `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()`;
        await until(async () => (await c.query(waiting)).rowCount === 1, 'the gateway to wait for the locked row');
        await c.query('UPDATE phigate.patients SET updated_at = updated_at WHERE id = $1', [first.id]);
        return await answer;
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(r.status, r.text).toBe(503);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(answerOf(r)).toEqual([['INTERNAL', 'db_conflict']]);
    expect(r.body.data ?? null).toBeNull();
    expect(r.text).not.toMatch(/deadlock|40P01|process \d+/i);
    expectNothingOfTheDriver(r, gw.logs);
    expect(await stored()).toEqual(before);
    expect(await auditOf(r.requestId)).toEqual([]);
  });

  it.each([
    ['ended by the administrator (57P01)', {}, 'SELECT pg_terminate_backend($1)'],
    // Long enough that the reads before and after, on a loaded machine, are never idle that long
    // between statements; the gated read is idle until the server ends it, whatever the value.
    ['ended by idle_in_transaction_session_timeout (25P03)', { idleInTransactionTimeoutMs: 3_000 }, 'SELECT $1::int AS left_to_the_server'],
  ])('a session %s under a running read: 503 with Retry-After (db_unavailable), no PHI, nothing audited', async (_what, transaction, end) => {
    const ending = await startTestGateway({ replicaOf: gw, gatewayOptions: { transaction } });
    try {
      const token = await gw.tokenFor('reg-north');
      // A cold key cache would want connections of its own mid-request.
      expect((await send(ending, token, READ_SSN, { id: north()[1]!.id })).status).toBe(200);
      const gate = gateDecrypts(ending.cipher);
      const answer = send(ending, token, HELD_READ_SSN, { id: north()[1]!.id });
      await until(() => gate.waiting === 1, 'the request to hold its transaction open');
      // The read's own session, not the audit writer's transaction begun ahead for it.
      const idle = `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'phigate' AND state LIKE 'idle in transaction%'`;
      let pids: number[] = [];
      await until(async () => (pids = (await gw.admin((c) => c.query(idle))).rows.map((r) => r.pid as number)).length === 1, 'its session to be idle in its transaction');
      await gw.admin((c) => c.query(end, [pids[0]]));
      await until(async () => (await sessionAlive(pids[0]!)) === false, 'the server to end the session');
      gate.open();
      const r = await answer;
      expect(r.status, r.text).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(answerOf(r)).toEqual([['INTERNAL', 'db_unavailable']]);
      expect(r.body.data ?? null).toBeNull();
      expectNoPhi(r);
      expectNothingOfTheDriver(r, ending.logs);
      expect(await auditOf(r.requestId)).toEqual([]);
      expect((await send(ending, token, READ_SSN, { id: north()[1]!.id })).status).toBe(200);
    } finally {
      await ending.close();
    }
  });
});

// ---- admission -----------------------------------------------------------------------------------

describe('saturation', () => {
  it('with every connection busy and the queue full, the next request gets 503 and Retry-After at once; the others complete', async () => {
    // 2 connections + 1 waiting = 3 executions at once.
    const busy = await startTestGateway({ replicaOf: gw, poolSize: 2, gatewayOptions: { queueLimit: 1 } });
    try {
      const token = await gw.tokenFor('reg-north');
      const [a, b, c, d] = north();
      // Warm the key cache: a cold one would want a connection of its own mid-request.
      expect((await send(busy, token, READ_SSN, { id: a!.id })).status).toBe(200);

      const gate = gateDecrypts(busy.cipher);
      const running = [send(busy, token, HELD_READ_SSN, { id: a!.id }), send(busy, token, HELD_READ_SSN, { id: b!.id })];
      await until(() => gate.waiting === 2, 'two requests holding both connections');
      running.push(send(busy, token, HELD_READ_SSN, { id: c!.id }));
      await until(() => busy.pool.waitingCount === 1, 'a third request queued for a connection');

      // Refused by admission, not after a wait: a queued request could only end when the gate opens
      // (200) or at the pool's timeout (db_unavailable), never as 'overloaded'.
      const refused = await send(busy, token, READ_SSN, { id: d!.id });
      expect(refused.status, refused.text).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['INTERNAL', 'overloaded']]);
      expectNoPhi(refused);
      expect(await auditOf(refused.requestId)).toEqual([]);

      gate.open();
      const done = await Promise.all(running);
      expect(done.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(done.map((r) => r.body.data!.patient.ssn)).toEqual([a!.ssn, b!.ssn, c!.ssn]);

      // Every slot came back: the refused and the finished alike.
      const again = await Promise.all([a, b, c].map((p) => send(busy, token, READ_SSN, { id: p!.id })));
      expect(again.map((r) => r.status)).toEqual([200, 200, 200]);
    } finally {
      await busy.close();
    }
  });

  it('a request that waits for a connection past the pool timeout gets 503 and Retry-After, not a 200 carrying INTERNAL; nothing is read or written', async () => {
    // What a loaded machine did to isolation.test.ts's storm (40 requests queued on 2 connections
    // waited past the 5 s timeout), made deterministic: one connection, held at a gate, and a short timeout.
    const tiny = createPool(gw.db.appUrl, { max: 1, connectionTimeoutMs: 300 });
    const busy = await startTestGateway({ replicaOf: gw, gatewayOptions: { pool: tiny } });
    try {
      const token = await gw.tokenFor('reg-north');
      const [a, b] = north();
      expect((await send(busy, token, READ_SSN, { id: a!.id })).status).toBe(200);
      const patients = async () => (await gw.admin((c) => c.query('SELECT count(*)::int AS n FROM phigate.patients'))).rows[0].n as number;
      const before = await patients();

      const gate = gateDecrypts(busy.cipher);
      const holder = send(busy, token, HELD_READ_SSN, { id: a!.id });
      await until(() => gate.waiting === 1, 'a request holding the only connection');
      const read = await send(busy, token, READ_SSN, { id: b!.id });
      const write = await send(busy, token, `mutation { createPatient(input: { clinicId: "c-north", mrn: "POOL-WAIT-1", givenName: "Waited" }) { id } }`);
      for (const r of [read, write]) {
        expect(r.status, r.text).toBe(503);
        expect(r.headers.get('retry-after')).toBe('1');
        expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['INTERNAL', 'db_unavailable']]);
        expect(r.body.data ?? null).toBeNull();
        expectNoPhi(r);
        expect(await auditOf(r.requestId)).toEqual([]);
      }

      gate.open();
      const held = await holder;
      expect(held.status, held.text).toBe(200);
      expect(held.body.data!.patient.ssn).toBe(a!.ssn);
      expect(await patients()).toBe(before);
      expect((await send(busy, token, READ_SSN, { id: b!.id })).body.data!.patient.ssn).toBe(b!.ssn);
    } finally {
      await busy.close();
      await tiny.end();
    }
  });
});

// ---- shutdown ------------------------------------------------------------------------------------

describe('graceful shutdown', () => {
  it('close() refuses new connections at once, lets an in-flight request finish with its audit rows committed, then resolves', async () => {
    const sd = await startTestGateway({ replicaOf: gw, gatewayOptions: { shutdownGraceMs: 5_000 } });
    try {
      const token = await gw.tokenFor('reg-north');
      const patient = north()[3]!;
      const port = Number(new URL(sd.url).port);
      const gate = gateDecrypts(sd.cipher);
      const inFlight = send(sd, token, READ_SSN, { id: patient.id });
      await until(() => gate.waiting === 1, 'the request to be mid-execution');

      let closed = false;
      const closing = sd.gateway.close().then(() => (closed = true));
      expect(await refusedConnection(port)).toBe('ECONNREFUSED');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(closed).toBe(false);

      gate.open();
      const r = await inFlight;
      expect(r.status, r.text).toBe(200);
      expect(r.body.data!.patient.ssn).toBe(patient.ssn);
      await closing;
      expect((await auditOf(r.requestId)).map((a) => [a.action, a.field])).toEqual([['read', 'ssn']]);
    } finally {
      await sd.close();
    }
  });

  it('a request still running when the grace period ends is abandoned: rolled back, no audit row, and close() resolves', async () => {
    const sd = await startTestGateway({ replicaOf: gw, gatewayOptions: { shutdownGraceMs: 300 } });
    try {
      const token = await gw.tokenFor('reg-north');
      const gate = gateDecrypts(sd.cipher);
      const inFlight = send(sd, token, READ_SSN, { id: north()[4]!.id }).then(
        (r) => r,
        (err: unknown) => err as Error,
      );
      await until(() => gate.waiting === 1, 'the request to be mid-execution');

      // The gate stays shut until close() has resolved: close() gave up on the request, not waited for it.
      await sd.gateway.close();
      const outcome = await inFlight;
      // Its connection was dropped: whatever the client got, it was no PHI.
      if (!(outcome instanceof Error)) {
        expect(outcome.status).toBe(503);
        expectNoPhi(outcome);
      }
      gate.open();
      await until(async () => (await openTransactions()) === 0, 'the abandoned transaction to roll back');
      expect(await gw.auditRows(`actor = 'reg-north' AND occurred_at > now() - interval '5 seconds' AND action = 'read' AND patient_id = $1`, [north()[4]!.id])).toEqual([]);
    } finally {
      await sd.close();
    }
  });
});
