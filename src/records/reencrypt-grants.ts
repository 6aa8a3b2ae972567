import type pg from 'pg';
import { SHREDDED_VALUE } from '../crypto/envelope.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { PhigateError } from '../errors.ts';
import { grantTextAad, GRANT_TEXTS, type GrantTextField } from './grant-text.ts';
import type { KeyEvent } from './key-admin.ts';
import { compareAndSwap, staleSealed, type Change, type ReencryptBatch } from './rewrite-sealed.ts';

const TEXTS = Object.entries(GRANT_TEXTS) as [GrantTextField, (typeof GRANT_TEXTS)[GrantTextField]][];

/**
 * A clinic's grants ($1) whose texts need the key role: legacy plaintext to seal (066), or a
 * sealed text under a clinic key version older than $2.
 */
export const STALE_GRANTS = `g.clinic_id = $1 AND (${TEXTS.map(({ 1: t }) => `g.${t.column} IS NOT NULL OR phigate.sealed_stale(g.${t.sealed}, $2)`).join(' OR ')})`;

export async function pendingGrantTexts(c: pg.ClientBase, clinicId: string, target: number): Promise<number> {
  const { rows } = await c.query<{ n: string }>(`SELECT count(*) AS n FROM phigate.break_glass_grants g WHERE ${STALE_GRANTS}`, [clinicId, target]);
  return Number(rows[0]!.n);
}

type GrantTexts = { id: string; patient_id: string } & Record<string, Buffer | string | null>;

const isKeyUnavailable = (e: unknown, reason?: string): e is PhigateError =>
  e instanceof PhigateError && e.code === 'KEY_UNAVAILABLE' && (reason === undefined || e.reason === reason);

/**
 * One batch of a clinic's grants, in the caller's key transaction (src/records/reencrypt.ts): a
 * legacy plaintext text is sealed under the patient's key and its plaintext column emptied in the
 * same update; a sealed one under an older clinic key version is opened and sealed again. A
 * shredded patient's legacy text gets the shredded marker (its plaintext must not outlive the
 * key). Each update compares what it read, so a text changed meanwhile (a review) is never
 * overwritten; the grant is taken on the next run. One `key` event per text written.
 */
export async function reencryptGrantBatch(
  c: pg.PoolClient,
  record: (e: KeyEvent) => void,
  keyring: Keyring,
  cipher: FieldCipher,
  clinicId: string,
  target: number,
  cursor: string,
  batchSize: number,
): Promise<ReencryptBatch> {
  const columns = TEXTS.flatMap(({ 1: t }) => [`g.${t.column}`, `g.${t.sealed}`]).join(', ');
  const rows = (
    await c.query<GrantTexts>(
      `SELECT g.id, g.patient_id, ${columns} FROM phigate.break_glass_grants g
       WHERE ${STALE_GRANTS} AND g.id > $3 ORDER BY g.id LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED`,
      [clinicId, target, cursor, batchSize],
    )
  ).rows;
  if (rows.length === 0) return { seen: 0, last: cursor, done: 0, values: 0, unreadable: 0 };
  await keyring.preparePatientWriteKeys(clinicId, [...new Set(rows.map((r) => r.patient_id))]);
  const stale = staleSealed(target);
  let grants = 0;
  let values = 0;
  let unreadable = 0;
  for (const g of rows) {
    const changes: Change[] = [];
    const events: KeyEvent[] = [];
    let skipped = false;
    for (const [field, t] of TEXTS) {
      const legacy = g[t.column] as string | null;
      const old = g[t.sealed] ?? null;
      const aad = grantTextAad(g.id, g.patient_id, t.column);
      let sealed: Buffer;
      let detail: string;
      try {
        if (legacy !== null) {
          detail = 'sealed';
          sealed = await cipher.encrypt(clinicId, aad, legacy).catch((e: unknown) => {
            if (!isKeyUnavailable(e, 'shredded')) throw e;
            detail = 'shredded';
            return SHREDDED_VALUE;
          });
        } else if (stale(old)) {
          detail = 'reencrypted';
          sealed = await cipher.encrypt(clinicId, aad, await cipher.decrypt(clinicId, aad, old));
        } else continue;
      } catch (e) {
        if (!isKeyUnavailable(e)) throw e;
        skipped = true;
        break;
      }
      // The plaintext column only ever loses its value; both are compared with what was read.
      changes.push({ column: t.column, old: legacy, sealed: null }, { column: t.sealed, old, sealed });
      events.push({ typeName: 'BreakGlassGrant', field, patientId: g.patient_id, recordId: g.id, detail });
    }
    if (skipped) {
      unreadable++;
      continue;
    }
    if (changes.length === 0 || !(await compareAndSwap(c, 'phigate.break_glass_grants', g.id, changes))) continue;
    events.forEach(record);
    values += events.length;
    grants++;
  }
  return { seen: rows.length, last: rows.at(-1)!.id, done: grants, values, unreadable };
}
