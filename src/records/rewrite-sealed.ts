import type pg from 'pg';

/** One column of a row as re-encryption rewrites it: what it held when read, and what it gets. */
export interface Change {
  readonly column: string;
  readonly old: Buffer | string | null;
  /** null for a legacy plaintext column, which is cleared, never written: plaintext only ever loses values. */
  readonly sealed: Buffer | null;
}

/** One batch of a re-encryption pass: rows seen (0: the pass is over), the last id, rows written, values written, rows unreadable. */
export interface ReencryptBatch {
  readonly seen: number;
  readonly last: string;
  readonly done: number;
  readonly values: number;
  readonly unreadable: number;
}

/**
 * Whether a sealed value needs moving onto clinic key version `target`: sealed directly under a
 * clinic key (header 1, before per-patient keys) or under a patient key wrapped by an older clinic
 * version (header 2, its clinic version first); SQL's phigate.sealed_stale says the same.
 */
export const staleSealed =
  (target: number) =>
  (b: unknown): b is Buffer =>
    Buffer.isBuffer(b) && b.length >= 5 && (b[0] === 1 || (b[0] === 2 && b.readUInt32BE(1) < target));

/** Writes the new values only where every column still holds what was read; false when something changed. */
export async function compareAndSwap(c: pg.PoolClient, table: string, id: string, changes: readonly Change[]): Promise<boolean> {
  const params: unknown[] = [id];
  const set: string[] = [];
  const where: string[] = [];
  for (const ch of changes) {
    set.push(ch.sealed === null ? `${ch.column} = NULL` : `${ch.column} = $${params.push(ch.sealed)}`);
    where.push(`${ch.column} IS NOT DISTINCT FROM $${params.push(ch.old)}`);
  }
  const r = await c.query(`UPDATE ${table} SET ${set.join(', ')} WHERE id = $1 AND ${where.join(' AND ')}`, params);
  return r.rowCount === 1;
}
