import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { AuditRequest } from '../audit/event.ts';
import { blindIndex, normaliseMrn, normaliseSsn } from '../crypto/blind-index.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { isPhigateError, PhigateError } from '../errors.ts';
import { inTransaction, keyJobRequest, writeKeyEvents } from './key-admin.ts';

/**
 * Blind-index key rotation of one clinic (issue 14, item 4), in three steps an operator runs:
 *
 *   start     a new index key version; from then on every write computes the digests of both
 *   backfill  the rows written before get the new digest, in small batches
 *   finish    the new digests replace the old ones; refused while a row lacks its new digest
 *
 * Lookups work throughout: they try the newest version and the one before in one query
 * (identifiers.ts), and the columns are laid out in schema/migrations/019_blind_index_rotation.sql.
 * Every step runs on the migrator's connection, in transactions that declare themselves the job
 * (row security lets the owner see the rows only then).
 */
export interface IndexRotationDeps {
  /** A connection of the migrator (PHIGATE_MIGRATE_URL), not in a transaction. */
  readonly db: pg.ClientBase;
  readonly keyring: Keyring;
  /** Decrypts the identifiers the new digests are computed from; nothing else is decrypted. */
  readonly cipher: FieldCipher;
  /** Who runs the job, as the audit rows name it (e.g. `cli:<user>`). */
  readonly actor: string;
}

export interface IndexRotationState {
  readonly clinicId: string;
  readonly version: number;
  readonly next: number | null;
  /** Rows still without a digest under `next` (0 outside a rotation). */
  readonly lacking: number;
}

/**
 * Lookups learn the newest index key version through the keyring's cache of it (60 s by default):
 * finishing sooner after the start could leave a replica still asking only for the old version's
 * digests when none remains. Twice the cache age leaves room for requests in flight.
 */
export const FINISH_NOT_BEFORE_MS = 120_000;

const DEFAULT_BATCH = 200;
const JOB_CONTEXT = "SELECT set_config('phigate.job', 'blind_index_rotation', true)";
const LOCK = 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))';
const lockName = (clinicId: string) => `phigate.blind_index:${clinicId}`;
// A row lacks its new digests when its MRN's is missing, or it has an SSN whose is.
const LACKING = '(p.mrn_bidx_next IS NULL OR (p.ssn_bidx IS NOT NULL AND p.ssn_bidx_next IS NULL))';
const HAS_NEXT = `(NOT ${LACKING})`;
const HAS_ANY_NEXT = '(p.mrn_bidx_next IS NOT NULL OR p.ssn_bidx_next IS NOT NULL)';

function refused(message: string, reason: string): PhigateError {
  return new PhigateError('BAD_USER_INPUT', message, { reason });
}

const inJob = <T>(db: pg.ClientBase, fn: () => Promise<T>): Promise<T> => inTransaction(db, JOB_CONTEXT, fn);

/** Key events of the job, one per patient (or one for the clinic: `null`), in the job's transaction. */
const recordKeyEvents = (deps: IndexRotationDeps, request: AuditRequest, detail: string, patientIds: readonly (string | null)[]): Promise<void> =>
  writeKeyEvents(deps.db, request, patientIds.map((patientId) => ({ typeName: 'Patient', field: null, patientId, recordId: null, detail })));

const jobRequest = (actor: string): AuditRequest => keyJobRequest('cli', actor);

async function lacking(db: pg.ClientBase, clinicId: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM phigate.patients p WHERE p.clinic_id = $1 AND ${LACKING}`, [clinicId]);
  return rows[0]!.n;
}

async function stateRow(db: pg.ClientBase, clinicId: string, lock: boolean): Promise<{ version: number; next: number | null; ageMs: number | null }> {
  const { rows } = await db.query<{ version: number; next_version: number | null; age_ms: number | null }>(
    `SELECT version, next_version, (extract(epoch FROM now() - rotation_started_at) * 1000)::float8 AS age_ms
     FROM phigate.blind_index_versions WHERE clinic_id = $1${lock ? ' FOR UPDATE' : ''}`,
    [clinicId],
  );
  const row = rows[0];
  return row ? { version: row.version, next: row.next_version, ageMs: row.age_ms } : { version: 1, next: null, ageMs: null };
}

/** The clinics, and where each one's rotation stands. */
export async function indexRotationStates(db: pg.ClientBase, clinicIds?: readonly string[]): Promise<IndexRotationState[]> {
  return inJob(db, async () => {
    const { rows } = await db.query<{ id: string; version: number | null; next_version: number | null }>(
      `SELECT c.id, v.version, v.next_version FROM phigate.clinics c LEFT JOIN phigate.blind_index_versions v ON v.clinic_id = c.id
       WHERE $1::text[] IS NULL OR c.id = ANY ($1::text[]) ORDER BY c.id`,
      [clinicIds ?? null],
    );
    const found = new Set(rows.map((r) => r.id));
    const unknown = clinicIds?.find((c) => !found.has(c));
    if (unknown !== undefined) throw refused('no such clinic', 'unknown_clinic');
    const states: IndexRotationState[] = [];
    for (const r of rows) {
      states.push({ clinicId: r.id, version: r.version ?? 1, next: r.next_version, lacking: r.next_version === null ? 0 : await lacking(db, r.id) });
    }
    return states;
  });
}

/**
 * Starts a rotation: creates the clinic's next index key and makes it the version every write from
 * now on computes too. The exclusive lock waits for writers that read the versions before; writers
 * after it read the new ones. A rotation already under way is left as it is (`resumed`).
 */
export async function startIndexRotation(deps: IndexRotationDeps, clinicId: string): Promise<{ from: number; to: number; resumed: boolean }> {
  const { db } = deps;
  if ((await inJob(db, () => stateRow(db, clinicId, false))).next === null) await clearNext(db, clinicId, DEFAULT_BATCH);
  return inJob(db, async () => {
    await db.query(LOCK, [lockName(clinicId)]);
    if (!(await db.query('SELECT 1 FROM phigate.clinics WHERE id = $1', [clinicId])).rowCount) throw refused('no such clinic', 'unknown_clinic');
    const state = await stateRow(db, clinicId, true);
    if (state.next !== null) return { from: state.version, to: state.next, resumed: true };
    // Left by a finish killed in its last step, and not cleared above because it ran meanwhile.
    if ((await db.query(`SELECT 1 FROM phigate.patients p WHERE p.clinic_id = $1 AND ${HAS_ANY_NEXT} LIMIT 1`, [clinicId])).rowCount) {
      throw refused('the previous rotation was not cleaned up; run this again', 'finish_incomplete');
    }
    const to = state.version + 1;
    // Stored (autocommitted through the key store) before any row may carry a digest under it.
    await deps.keyring.ensureIndexKey(clinicId, to);
    await db.query(
      `INSERT INTO phigate.blind_index_versions AS v (clinic_id, version, next_version, rotation_started_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (clinic_id) DO UPDATE SET next_version = EXCLUDED.next_version, rotation_started_at = EXCLUDED.rotation_started_at`,
      [clinicId, state.version, to],
    );
    await recordKeyEvents(deps, jobRequest(deps.actor), `index_rotation_start:v${to}`, [null]);
    return { from: state.version, to, resumed: false };
  });
}

export interface BackfillOptions {
  readonly batchSize?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Awaited after each committed batch with its row count (tests interleave or stop the job here). */
  readonly afterBatch?: (rows: number) => void | Promise<void>;
}

interface LackingRow {
  id: string;
  mrn: Buffer;
  ssn: Buffer | null;
  ssn_indexed: boolean;
}

// A shredded patient's identifiers can no longer be read, and must stay unfindable: its new
// digests are random, matching nothing, so the rotation still completes around it.
const isShredded = (e: unknown): boolean => isPhigateError(e) && e.code === 'KEY_UNAVAILABLE' && e.reason === 'shredded';

const FIRST_ID = '00000000-0000-0000-0000-000000000000';

/**
 * Gives every row that lacks them its digests under the new version. Each batch is one short
 * transaction that locks its rows (a concurrent writer of one of them waits for it, and then
 * writes both digests itself), decrypts only mrn and ssn, writes the digests and one `key` audit
 * event per patient. Resumable: a row done is never selected again, so a run killed half-way and
 * started again goes on where it stopped. A pass over the clinic in id order, then passes again
 * until none lacks (rows written behind the pass by a writer that did not compute both).
 */
export async function backfillIndex(deps: IndexRotationDeps, clinicId: string, opts: BackfillOptions = {}): Promise<{ rows: number; batches: number }> {
  const { db, keyring, cipher } = deps;
  const batchSize = opts.batchSize ?? DEFAULT_BATCH;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw refused('batch size must be 1 to 10000', 'invalid_batch_size');
  const { next: to } = await inJob(db, () => stateRow(db, clinicId, false));
  if (to === null) throw refused('no blind-index rotation is under way for this clinic', 'no_rotation');
  const mrnKey = await keyring.blindIndexKeyAt('patients.mrn', clinicId, to);
  const ssnKey = await keyring.blindIndexKeyAt('patients.ssn', clinicId, to);
  const request = jobRequest(deps.actor);
  const detail = `index_backfill:v${to}`;

  let total = await inJob(db, () => lacking(db, clinicId));
  let done = 0;
  let batches = 0;
  opts.onProgress?.(done, total);
  for (let pass = 0; ; pass++) {
    let after = FIRST_ID;
    for (;;) {
      const rows = await inJob(db, async () => {
        // Finished or restarted by someone else meanwhile: these digests would be of the wrong version.
        if ((await stateRow(db, clinicId, false)).next !== to) throw refused('the rotation changed while the backfill ran', 'rotation_changed');
        const { rows } = await db.query<LackingRow>(
          `SELECT p.id, p.mrn, p.ssn, p.ssn_bidx IS NOT NULL AS ssn_indexed FROM phigate.patients p WHERE p.clinic_id = $1 AND p.id > $2 AND ${LACKING}
           ORDER BY p.id LIMIT $3 FOR NO KEY UPDATE`,
          [clinicId, after, batchSize],
        );
        if (rows.length === 0) return rows;
        // Every row's identifiers opened at once: the keyring fetches the patient keys a batch misses in
        // one round trip, where awaiting row by row would make one per patient while the rows stay locked.
        const digests = await Promise.all(
          rows.map(async (r): Promise<[Buffer, Buffer | null]> => {
            const read = (column: 'mrn' | 'ssn', ciphertext: Buffer) => cipher.decrypt(clinicId, { table: 'patients', column, rowId: r.id, patientId: r.id }, ciphertext);
            try {
              const [mrn, ssn] = await Promise.all([read('mrn', r.mrn), r.ssn === null ? null : read('ssn', r.ssn)]);
              return [blindIndex(mrnKey, normaliseMrn(mrn)), ssn === null ? null : blindIndex(ssnKey, normaliseSsn(ssn))];
            } catch (e) {
              if (!isShredded(e)) throw e;
              return [randomBytes(32), r.ssn_indexed ? randomBytes(32) : null];
            }
          }),
        );
        const mrnNext = digests.map((d) => d[0]);
        const ssnNext = digests.map((d) => d[1]);
        await db.query(
          `UPDATE phigate.patients p SET mrn_bidx_next = u.mrn, ssn_bidx_next = u.ssn
           FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS u(id, mrn, ssn) WHERE p.id = u.id`,
          [rows.map((r) => r.id), mrnNext, ssnNext],
        );
        await recordKeyEvents(deps, request, detail, rows.map((r) => r.id));
        return rows;
      });
      if (rows.length === 0) break;
      after = rows[rows.length - 1]!.id;
      done += rows.length;
      batches++;
      total = Math.max(total, done);
      opts.onProgress?.(done, total);
      await opts.afterBatch?.(rows.length);
    }
    const left = await inJob(db, () => lacking(db, clinicId));
    if (left === 0) break;
    if (pass >= 2) throw refused(`${left} rows still lack the new index; run the backfill again`, 'backfill_incomplete');
    total = done + left;
  }
  opts.onProgress?.(done, Math.max(total, done));
  return { rows: done, batches };
}

export interface FinishOptions {
  /** Default FINISH_NOT_BEFORE_MS; tests whose replicas cache the version briefly pass less. */
  readonly notBeforeMs?: number;
  readonly batchSize?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Awaited after each committed batch that moved digests (tests write in between). */
  readonly afterBatch?: (rows: number) => void | Promise<void>;
}


/** Runs `step` on successive batches of a clinic's rows in id order, each in its own job transaction. */
async function inBatches(
  db: pg.ClientBase,
  clinicId: string,
  batchSize: number,
  step: (ids: string[]) => Promise<number>,
  after?: (rows: number) => void | Promise<void>,
): Promise<number> {
  let last = FIRST_ID;
  let total = 0;
  for (;;) {
    const ids = await inJob(db, async () => {
      const { rows } = await db.query<{ id: string }>(
        'SELECT p.id FROM phigate.patients p WHERE p.clinic_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3 FOR NO KEY UPDATE',
        [clinicId, last, batchSize],
      );
      const ids = rows.map((r) => r.id);
      if (ids.length > 0) total += await step(ids);
      return ids;
    });
    if (ids.length === 0) return total;
    last = ids[ids.length - 1]!;
    await after?.(ids.length);
  }
}

/**
 * Empties the *_next columns of a clinic that is not rotating (what a finish leaves, or a finish
 * killed before it was done); writers outside a rotation never fill them.
 */
async function clearNext(db: pg.ClientBase, clinicId: string, batchSize: number): Promise<void> {
  const any = await inJob(db, () => db.query(`SELECT 1 FROM phigate.patients p WHERE p.clinic_id = $1 AND ${HAS_ANY_NEXT} LIMIT 1`, [clinicId]));
  if (!any.rowCount) return;
  await inBatches(db, clinicId, batchSize, async (ids) => {
    const res = await db.query(
      `UPDATE phigate.patients p SET mrn_bidx_next = NULL, ssn_bidx_next = NULL WHERE p.id = ANY ($1::uuid[]) AND ${HAS_ANY_NEXT}`,
      [ids],
    );
    return res.rowCount ?? 0;
  });
}

/**
 * Ends the rotation, with no long pause for the clinic's writers:
 *
 * 1. in batches, each row's new digests are copied into mrn_bidx / ssn_bidx (lookups try both
 *    versions there). The *_next columns keep theirs, so their unique indexes, complete since the
 *    backfill, still refuse a second patient with the identifier whatever version a row's
 *    mrn_bidx holds; a writer meanwhile writes the old version there again, which step 2 redoes;
 * 2. one short transaction under the exclusive lock copies what writers changed meanwhile and makes
 *    the new version the clinic's: from then on writers compute it alone. No digest of the old
 *    version is left in the table;
 * 3. in batches again, the *_next columns are emptied (a rotation started later does it first
 *    when this step was killed).
 *
 * Refused, before anything moves, while a row lacks its new digest, and sooner than `notBeforeMs`
 * after the start (FINISH_NOT_BEFORE_MS).
 */
export async function finishIndexRotation(deps: IndexRotationDeps, clinicId: string, opts: FinishOptions = {}): Promise<{ version: number; rows: number }> {
  const { db } = deps;
  const notBeforeMs = opts.notBeforeMs ?? FINISH_NOT_BEFORE_MS;
  const batchSize = opts.batchSize ?? DEFAULT_BATCH;
  const state = await inJob(db, async () => {
    const state = await stateRow(db, clinicId, false);
    if (state.next === null) throw refused('no blind-index rotation is under way for this clinic', 'no_rotation');
    const waitMs = notBeforeMs - (state.ageMs ?? 0);
    if (waitMs > 0) {
      throw refused(`the rotation started too recently: replicas may still look up by the old version only; finish in ${Math.ceil(waitMs / 1000)} s`, 'too_early');
    }
    const left = await lacking(db, clinicId);
    if (left > 0) throw refused(`${left} rows lack the new index; run the backfill first`, 'not_backfilled');
    return { version: state.version, next: state.next };
  });
  const to = state.next;
  const total = await inJob(db, async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM phigate.patients WHERE clinic_id = $1', [clinicId])).rows[0]!.n);
  let done = 0;
  opts.onProgress?.(0, total);
  const copied = await inBatches(
    db,
    clinicId,
    batchSize,
    async (ids) => {
      if ((await stateRow(db, clinicId, false)).next !== to) throw refused('the rotation changed while finishing', 'rotation_changed');
      const res = await db.query(
        `UPDATE phigate.patients p SET mrn_bidx = p.mrn_bidx_next, ssn_bidx = p.ssn_bidx_next WHERE p.id = ANY ($1::uuid[]) AND ${HAS_NEXT}`,
        [ids],
      );
      return res.rowCount ?? 0;
    },
    async (rows) => {
      done = Math.min(total, done + rows);
      opts.onProgress?.(done, total);
      await opts.afterBatch?.(rows);
    },
  );
  const switched = await inJob(db, async () => {
    await db.query(LOCK, [lockName(clinicId)]);
    const now = await stateRow(db, clinicId, true);
    if (now.next !== to) throw refused('the rotation changed while finishing', 'rotation_changed');
    const left = await lacking(db, clinicId);
    if (left > 0) throw refused(`${left} rows lack the new index; run the backfill first`, 'not_backfilled');
    const res = await db.query(
      `UPDATE phigate.patients p SET mrn_bidx = p.mrn_bidx_next, ssn_bidx = p.ssn_bidx_next
       WHERE p.clinic_id = $1 AND (p.mrn_bidx IS DISTINCT FROM p.mrn_bidx_next OR p.ssn_bidx IS DISTINCT FROM p.ssn_bidx_next)`,
      [clinicId],
    );
    await db.query('UPDATE phigate.blind_index_versions SET version = next_version, next_version = NULL, rotation_started_at = NULL WHERE clinic_id = $1', [clinicId]);
    await recordKeyEvents(deps, jobRequest(deps.actor), `index_rotation_finish:v${to}`, [null]);
    return res.rowCount ?? 0;
  });
  opts.onProgress?.(total, total);
  await clearNext(db, clinicId, batchSize);
  return { version: to, rows: copied + switched };
}
