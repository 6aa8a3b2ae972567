import type pg from 'pg';
import { createFieldCipher, type FieldCipher, type PatientFieldAad } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { ENCOUNTER_COLUMNS, PATIENT_COLUMNS } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { inKeyTransaction, type KeyAdmin, type KeyEvent } from './key-admin.ts';
import { pendingGrantTexts, reencryptGrantBatch } from './reencrypt-grants.ts';
import { compareAndSwap, staleSealed, type Change, type ReencryptBatch } from './rewrite-sealed.ts';

export interface ReencryptOptions {
  readonly admin: KeyAdmin;
  readonly keyring: Keyring;
  readonly clinicId: string;
  /** Patients (with their encounters) per transaction. */
  readonly batchSize?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Stops after the batch in flight commits (Ctrl-C); a later run resumes from what is left. */
  readonly signal?: AbortSignal;
}

export interface ReencryptResult {
  /** The clinic key version every value now is (or, with `remaining`, should be) under. */
  readonly target: number;
  /** Patients whose values were rewritten. */
  readonly patients: number;
  /** Values rewritten. */
  readonly values: number;
  /** Patients still holding an older value (locked by a writer on every pass, stopped, or unreadable). */
  readonly remaining: number;
  /** Break-glass grants whose reason or review comment was sealed (legacy plaintext) or re-encrypted. */
  readonly grants: number;
  /** Grants still holding plaintext or an older value. */
  readonly remainingGrants: number;
  /** Rows (and grants) left as they were because a value in them did not open (KEY_UNAVAILABLE). */
  readonly unreadable: number;
}

// GraphQL field name of each sealed column, for the audit events.
const PATIENT_FIELDS = Object.entries(PATIENT_COLUMNS).map(([field, column]) => ({ field, column }));
const ENCOUNTER_FIELDS = Object.entries(ENCOUNTER_COLUMNS).map(([field, column]) => ({ field, column }));

const STALE_PATIENT = PATIENT_FIELDS.map(({ column }) => `phigate.sealed_stale(p.${column}, $2)`).join(' OR ');
const STALE_ENCOUNTER = `e.kind_legacy IS NOT NULL OR ${ENCOUNTER_FIELDS.map(({ column }) => `phigate.sealed_stale(e.${column}, $2)`).join(' OR ')}`;
const STALE = `p.clinic_id = $1 AND (${STALE_PATIENT} OR EXISTS (SELECT 1 FROM phigate.encounters e WHERE e.patient_id = p.id AND (${STALE_ENCOUNTER})))`;

const MAX_PASSES = 5;

type Row = Record<string, Buffer | string | null> & { id: string };

/**
 * Online re-encryption of one clinic: every value sealed under an older clinic key version (or
 * directly under a clinic key, before per-patient keys) is opened and sealed again under the
 * patient's key wrapped by the current version. Small batches, each its own short transaction:
 * rows are taken with FOR UPDATE SKIP LOCKED (a writer holding one is not waited for; the row is
 * taken on a later pass), and each UPDATE compares every column with what was read, so a value
 * changed meanwhile is never overwritten. Old and new values are both readable throughout: no row
 * is ever unreadable. Killed or stopped, a run leaves only committed batches, and the next run
 * finds just what is still old. Each rewritten value is a `key` audit event in its batch.
 */
/**
 * The clinic's current data key version, how many of its patients still hold a value under an
 * older one, and how many of its break-glass grants a text in plaintext (066) or under an older one.
 */
export async function pendingReencryption(admin: KeyAdmin, clinicId: string): Promise<{ target: number; patients: number; grants: number }> {
  return inKeyTransaction(admin, async (c) => {
    const r = await c.query<{ v: number | null }>(`SELECT max(version) AS v FROM phigate.keyring WHERE purpose = 'data' AND scope = $1`, [clinicId]);
    const target = r.rows[0]?.v ?? null;
    if (target === null) throw new PhigateError('BAD_USER_INPUT', `clinic ${clinicId} has no data key`);
    const n = await c.query<{ n: string }>(`SELECT count(*) AS n FROM phigate.patients p WHERE ${STALE}`, [clinicId, target]);
    return { target, patients: Number(n.rows[0]!.n), grants: await pendingGrantTexts(c, clinicId, target) };
  });
}

export async function reencryptClinic(opts: ReencryptOptions): Promise<ReencryptResult> {
  const { admin, keyring, clinicId } = opts;
  const cipher = createFieldCipher(keyring);
  const batchSize = opts.batchSize ?? 100;
  const pending = await pendingReencryption(admin, clinicId);
  const { target } = pending;
  // Progress counts patients, then grants.
  const total = pending.patients + pending.grants;
  let values = 0;
  let unreadable = 0;
  opts.onProgress?.(0, total);
  // Passes over the rows in id order, batch after batch, until a pass writes nothing (what is
  // left is locked by a writer or unreadable) or the run is stopped. `counted` is the progress
  // before this kind of row; the result is how many rows were written.
  async function inPasses(run: (cursor: string) => Promise<ReencryptBatch>, counted: number): Promise<number> {
    let done = 0;
    for (let pass = 0; pass < MAX_PASSES && !opts.signal?.aborted; pass++) {
      let cursor = '00000000-0000-0000-0000-000000000000';
      let doneThisPass = 0;
      for (;;) {
        if (opts.signal?.aborted) break;
        const batch = await run(cursor);
        if (batch.seen === 0) break;
        cursor = batch.last;
        values += batch.values;
        unreadable += batch.unreadable;
        doneThisPass += batch.done;
        done += batch.done;
        opts.onProgress?.(Math.min(counted + done, total), total);
      }
      if (doneThisPass === 0) break;
    }
    return done;
  }
  const patients = await inPasses(
    (cursor) => inKeyTransaction(admin, (c, record) => reencryptBatch(c, record, keyring, cipher, clinicId, target, cursor, batchSize)),
    0,
  );
  const grants = await inPasses(
    (cursor) => inKeyTransaction(admin, (c, record) => reencryptGrantBatch(c, record, keyring, cipher, clinicId, target, cursor, batchSize)),
    Math.min(patients, pending.patients),
  );
  const left = await pendingReencryption(admin, clinicId);
  opts.onProgress?.(total - Math.min(left.patients + left.grants, total), total);
  return { target, patients, values, remaining: left.patients, grants, remainingGrants: left.grants, unreadable };
}

async function reencryptBatch(
  c: pg.PoolClient,
  record: (e: KeyEvent) => void,
  keyring: Keyring,
  cipher: FieldCipher,
  clinicId: string,
  target: number,
  cursor: string,
  batchSize: number,
): Promise<ReencryptBatch> {
  const rows = (
    await c.query<Row>(
      `SELECT p.id, ${PATIENT_FIELDS.map(({ column }) => `p.${column}`).join(', ')} FROM phigate.patients p
       WHERE ${STALE} AND p.id > $3 ORDER BY p.id LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED`,
      [clinicId, target, cursor, batchSize],
    )
  ).rows;
  if (rows.length === 0) return { seen: 0, last: cursor, done: 0, values: 0, unreadable: 0 };
  const encounters = (
    await c.query<Row & { patient_id: string; kind_legacy: string | null }>(
      `SELECT e.id, e.patient_id, e.kind_legacy, ${ENCOUNTER_FIELDS.map(({ column }) => `e.${column}`).join(', ')} FROM phigate.encounters e
       WHERE e.patient_id = ANY($1::uuid[]) ORDER BY e.id FOR NO KEY UPDATE`,
      [rows.map((r) => r.id)],
    )
  ).rows;
  let values = 0;
  let patients = 0;
  let unreadable = 0;
  const stale = staleSealed(target);

  // Round trips, not cryptography, are the cost: the batch's new patient keys are made in one
  // insert, and every old value is opened at once, so the old patient keys it misses come in one query.
  await keyring.preparePatientWriteKeys(clinicId, rows.map((r) => r.id));
  const opened = new Map<Buffer, Promise<string>>();
  const open = (aad: PatientFieldAad, old: Buffer) => {
    const plain = new Promise<string>((resolve) => resolve(cipher.decrypt(clinicId, aad, old)));
    // Awaited (and its failure handled) when its row is rewritten.
    plain.catch(() => undefined);
    opened.set(old, plain);
  };
  for (const p of rows) {
    for (const { column } of PATIENT_FIELDS) if (stale(p[column])) open({ table: 'patients', column, rowId: p.id, patientId: p.id }, p[column]);
  }
  for (const e of encounters) {
    for (const { column } of ENCOUNTER_FIELDS) if (stale(e[column])) open({ table: 'encounters', column, rowId: e.id, patientId: e.patient_id }, e[column]);
  }
  const reseal = async (aad: PatientFieldAad, old: Buffer) => cipher.encrypt(clinicId, aad, await opened.get(old)!);

  // One row's changes, written by compare-and-swap; its events are recorded only when the row was written.
  async function rewrite(table: string, id: string, plan: () => Promise<{ changes: Change[]; events: KeyEvent[] }>): Promise<boolean> {
    let planned: { changes: Change[]; events: KeyEvent[] };
    try {
      planned = await plan();
    } catch (e) {
      // A value that does not open is left as it is (and keeps its version from being retired).
      if (e instanceof PhigateError && e.code === 'KEY_UNAVAILABLE') {
        unreadable++;
        return false;
      }
      throw e;
    }
    if (planned.changes.length === 0 || !(await compareAndSwap(c, table, id, planned.changes))) return false;
    planned.events.forEach(record);
    values += planned.events.length;
    return true;
  }

  for (const p of rows) {
    const written = await rewrite('phigate.patients', p.id, async () => {
      const changes: Change[] = [];
      const events: KeyEvent[] = [];
      for (const { field, column } of PATIENT_FIELDS) {
        const old = p[column];
        if (!stale(old)) continue;
        changes.push({ column, old, sealed: await reseal({ table: 'patients', column, rowId: p.id, patientId: p.id }, old) });
        events.push({ typeName: 'Patient', field, patientId: p.id, recordId: null, detail: 'reencrypted' });
      }
      return { changes, events };
    });
    if (written || !PATIENT_FIELDS.some(({ column }) => stale(p[column]))) patients++;
  }
  for (const e of encounters) {
    await rewrite('phigate.encounters', e.id, async () => {
      const changes: Change[] = [];
      const events: KeyEvent[] = [];
      for (const { field, column } of ENCOUNTER_FIELDS) {
        const old = e[column];
        const aad = { table: 'encounters', column, rowId: e.id, patientId: e.patient_id };
        if (column === 'kind' && old === null && e.kind_legacy !== null) {
          // Written before kinds were encrypted (schema/migrations/010_disclosures.sql): sealed now.
          changes.push({ column: 'kind_legacy', old: e.kind_legacy, sealed: null });
          changes.push({ column, old: null, sealed: await cipher.encrypt(clinicId, aad, e.kind_legacy) });
        } else if (stale(old)) {
          changes.push({ column, old, sealed: await reseal(aad, old) });
        } else continue;
        events.push({ typeName: 'Encounter', field, patientId: e.patient_id, recordId: e.id, detail: 'reencrypted' });
      }
      return { changes, events };
    });
  }
  return { seen: rows.length, last: rows.at(-1)!.id, done: patients, values, unreadable };
}
