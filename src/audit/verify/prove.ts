import type pg from 'pg';
import { decodeCanonical } from '../canonical-decode.ts';
import { canonicalBytes } from '../canonical.ts';
import { committedEvent, type EventRow } from '../log/rows.ts';
import { growingTree, leafHash, splitPoint } from '../log/tree.ts';
import { formatConsistencyProof, formatInclusionProof } from '../log/proof.ts';

/**
 * `phigate audit prove`: proofs built from the database for a verifier who has only the public
 * key (src/audit/log/proof.ts has the format). A proof's hashes are roots of subtrees that
 * partition the tree; they are computed in one pass over the leaf hashes in order, keeping
 * O(log n) in memory, so a proof over ten million leaves reads 320 MB of hashes once and holds
 * none of them.
 */
export class ProveError extends Error {}

type Range = readonly [from: number, to: number];

/** The subtrees whose roots make the audit path of leaf `index` in a tree of `size` (RFC 9162 2.1.3), leaf to root. */
export function inclusionRanges(size: number, index: number): Range[] {
  const out: Range[] = [];
  const walk = (from: number, to: number, m: number): void => {
    if (to - from <= 1) return;
    const k = splitPoint(to - from);
    if (m < k) {
      walk(from, from + k, m);
      out.push([from + k, to]);
    } else {
      walk(from + k, to, m - k);
      out.push([from, from + k]);
    }
  };
  walk(0, size, index);
  return out;
}

/** The subtrees whose roots make the consistency proof from `oldSize` to `newSize` (RFC 9162 2.1.4). */
export function consistencyRanges(newSize: number, oldSize: number): Range[] {
  const out: Range[] = [];
  const sub = (from: number, to: number, m: number, whole: boolean): void => {
    const size = to - from;
    if (m === size) {
      if (!whole) out.push([from, to]);
      return;
    }
    const k = splitPoint(size);
    if (m <= k) {
      sub(from, from + k, m, whole);
      out.push([from + k, to]);
    } else {
      sub(from + k, to, m - k, false);
      out.push([from, from + k]);
    }
  };
  if (oldSize < newSize) sub(0, newSize, oldSize, true);
  return out;
}

/** Roots of disjoint `ranges`, from the leaf hashes of [0, end) read in order by `leaves`. */
export async function rangeRoots(ranges: readonly Range[], leaves: (from: number, to: number) => AsyncIterable<Buffer>): Promise<Buffer[]> {
  const order = ranges.map((r, i) => ({ r, i })).sort((a, b) => a.r[0] - b.r[0]);
  const roots: Buffer[] = new Array(ranges.length);
  for (const { r, i } of order) {
    const tree = growingTree();
    for await (const h of leaves(r[0], r[1])) tree.append(h);
    if (tree.size !== r[1] - r[0]) throw new ProveError(`the log lacks leaves between ${r[0]} and ${r[1]}`);
    roots[i] = tree.root();
  }
  return roots;
}

function leafStream(db: pg.ClientBase, batch = 20_000) {
  return async function* (from: number, to: number): AsyncIterable<Buffer> {
    for (let at = from; at < to; ) {
      const { rows } = await db.query<{ leaf_index: string; leaf_hash: Buffer }>(
        'SELECT leaf_index, leaf_hash FROM phigate.audit_log WHERE leaf_index >= $1 AND leaf_index < $2 ORDER BY leaf_index LIMIT $3',
        [at, to, batch],
      );
      if (rows.length === 0) return;
      for (const r of rows) {
        if (Number(r.leaf_index) !== at) return;
        yield r.leaf_hash;
        at++;
      }
    }
  };
}

interface CheckpointRow {
  readonly tree_size: string;
  readonly note: string;
}

async function checkpointAt(db: pg.ClientBase, size: number | null): Promise<CheckpointRow> {
  const { rows } =
    size === null
      ? await db.query<CheckpointRow>('SELECT tree_size, note FROM phigate.audit_checkpoints ORDER BY tree_size DESC LIMIT 1')
      : await db.query<CheckpointRow>('SELECT tree_size, note FROM phigate.audit_checkpoints WHERE tree_size = $1', [size]);
  if (rows[0] === undefined) throw new ProveError(size === null ? 'the log has no signed checkpoint yet' : `there is no checkpoint of size ${size}`);
  return rows[0];
}

/**
 * An inclusion proof of event `eventId` against the checkpoint of size `size` (null: the latest,
 * or one a verifier already holds). The event's bytes are recomputed from its row and must hash to
 * its stored leaf: a proof is never made for an event the database no longer holds as it was logged.
 */
export async function proveEvent(db: pg.ClientBase, eventId: string, size: number | null = null): Promise<string> {
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const { rows } = await db.query<EventRow & { leaf_index: string | null; leaf_hash: Buffer }>(
      `SELECT l.leaf_index, l.leaf_hash, e.id, (extract(epoch FROM e.occurred_at) * 1000000)::bigint AS occurred_at_us, e.request_id,
              e.actor, e.actor_kind, e.role, e.purpose, e.break_glass, e.client_addr, e.action, e.type_name, e.field, e.patient_id,
              e.record_id, e.detail, e.grant_id, e.credential_id, e.batch_id
       FROM phigate.audit_events e LEFT JOIN phigate.audit_log l ON l.event_id = e.id
       WHERE e.id = $1`,
      [eventId],
    );
    const row = rows[0];
    if (row === undefined) throw new ProveError(`there is no event ${eventId} (never written, or removed by retention)`);
    if (row.leaf_index === null) throw new ProveError(`event ${eventId} is not sealed into the log yet`);
    const leaf = canonicalBytes(committedEvent(row));
    if (!leafHash(leaf).equals(row.leaf_hash)) throw new ProveError(`event ${eventId} differs from the event that was logged (run phigate audit verify)`);
    const index = Number(row.leaf_index);
    const cp = await checkpointAt(db, size);
    const treeSize = Number(cp.tree_size);
    if (index >= treeSize) {
      throw new ProveError(`event ${eventId} is sealed but not under ${size === null ? 'a signed checkpoint yet' : 'that checkpoint'} (it covers ${treeSize} events)`);
    }
    const path = await rangeRoots(inclusionRanges(treeSize, index), leafStream(db));
    return formatInclusionProof({ leaf, index, path, checkpoint: cp.note });
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

/** A consistency proof between the checkpoints of sizes `from` and `to` (`to` null: the latest). */
export async function proveConsistency(db: pg.ClientBase, from: number, to: number | null): Promise<string> {
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const older = await checkpointAt(db, from);
    const newer = await checkpointAt(db, to);
    const oldSize = Number(older.tree_size);
    const newSize = Number(newer.tree_size);
    if (oldSize < 1 || oldSize > newSize) throw new ProveError(`--from must be a checkpoint size from 1 up to --to (${newSize})`);
    const path = await rangeRoots(consistencyRanges(newSize, oldSize), leafStream(db));
    return formatConsistencyProof({ oldSize, newSize, path, oldCheckpoint: older.note, newCheckpoint: newer.note });
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

/** One line about the event a checked proof is about: ids and codes, never a value. */
export function describeEvent(leaf: Buffer): string {
  const e = decodeCanonical(leaf);
  if (e === null) return 'an entry that is not a phigate audit event (canonical v1)';
  const at = new Date(Number(e.occurredAtMicros / 1000n)).toISOString();
  const what = [e.action, e.field === null ? e.typeName : `${e.typeName}.${e.field}`, e.patientId === null ? null : `patient ${e.patientId}`]
    .filter((x) => x !== null)
    .join(' ');
  return `event ${e.id}: ${what} by ${e.actorKind} ${e.actor}${e.role ? ` (${e.role})` : ''}, purpose ${e.purpose}${e.breakGlass ? ', break-glass' : ''}, at ${at}, request ${e.requestId}`;
}
