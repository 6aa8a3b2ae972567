import type pg from 'pg';
import { decodeLeaf } from '../canonical-decode.ts';
import { EVENT_ORDINAL_BITS, recordV3Events, type RecordEvent } from '../canonical.ts';
import { leafBytes, RECORD_LEAF_SELECT, V1_LEAF_SELECT, V3_LEAF_SELECT, type LeafRow } from '../log/rows.ts';
import { parseCheckpoint } from '../log/checkpoint.ts';
import { consistencyRanges, verifyConsistency } from '../log/consistency.ts';
import { inclusionRanges, verifyInclusion, type Range } from '../log/inclusion.ts';
import { growingTree, leafHash, nodeHash } from '../log/tree.ts';
import { formatConsistencyProof, formatInclusionProof } from '../log/proof.ts';

/**
 * `phigate audit prove`: proofs built from the database for a verifier who has only the public
 * key (src/audit/log/proof.ts has the format). A proof's hashes are roots of subtrees of the
 * tree; each is computed from cached roots of tiles of 1,024 leaves and the leaves past them, so
 * a proof over ten million leaves reads about 10,000 tile roots, not 320 MB of leaf hashes.
 */
export class ProveError extends Error {}

/**
 * Where a proof's subtree roots come from: the leaf hashes in order and, when cached, the roots
 * of aligned tiles of 2^height leaves. Every subtree of a proof that spans a tile starts on a tile
 * boundary (RFC 9162 splits at powers of two), so its root is its whole tiles' roots, then the
 * leaves after them.
 */
export interface LeafSource {
  leaves(from: number, to: number): AsyncIterable<Buffer>;
  readonly tiles?: {
    readonly height: number;
    /** Roots of the whole tiles in [from, to), in order; fewer when not all are cached. */
    roots(from: number, to: number): Promise<Buffer[]>;
  };
}

/** The root of nodes given left to right, each the root of a perfect subtree of 2^height leaves, aligned as in a tree. */
function rootOfNodes(): { push(height: number, hash: Buffer): void; root(): Buffer } {
  const frontier: { height: number; hash: Buffer }[] = [];
  return {
    push(height, hash) {
      let node = { height, hash };
      while (frontier.length > 0 && frontier[frontier.length - 1]!.height === node.height) {
        node = { height: node.height + 1, hash: nodeHash(frontier.pop()!.hash, node.hash) };
      }
      frontier.push(node);
    },
    root() {
      let acc = frontier[frontier.length - 1]!.hash;
      for (let i = frontier.length - 2; i >= 0; i--) acc = nodeHash(frontier[i]!.hash, acc);
      return acc;
    },
  };
}

/** Roots of the disjoint `ranges` of a proof. */
export async function rangeRoots(ranges: readonly Range[], source: LeafSource): Promise<Buffer[]> {
  const roots: Buffer[] = [];
  for (const [from, to] of ranges) {
    const nodes = rootOfNodes();
    let at = from;
    const tile = source.tiles ? 2 ** source.tiles.height : Infinity;
    if (source.tiles && to - from >= tile) {
      for (const hash of await source.tiles.roots(from, from + Math.floor((to - from) / tile) * tile)) {
        nodes.push(source.tiles.height, hash);
        at += tile;
      }
    }
    for await (const h of source.leaves(at, to)) {
      nodes.push(0, h);
      at++;
    }
    if (at !== to) throw new ProveError(`the log lacks leaves between ${from} and ${to}`);
    roots.push(nodes.root());
  }
  return roots;
}

/** Tiles of 1,024 leaves: a proof over ten million leaves reads about 10,000 tile roots and fewer than 2,048 leaves per path hash. */
export const TILE_HEIGHT = 10;
const TILE = 2 ** TILE_HEIGHT;

function dbSource(db: pg.ClientBase, withTiles: boolean): LeafSource {
  const leaves = async function* (from: number, to: number): AsyncIterable<Buffer> {
    for (let at = from; at < to; ) {
      const { rows } = await db.query<{ leaf_index: string; leaf_hash: Buffer }>(
        'SELECT leaf_index, leaf_hash FROM phigate.audit_log WHERE leaf_index >= $1 AND leaf_index < $2 ORDER BY leaf_index LIMIT $3',
        [at, to, 20_000],
      );
      if (rows.length === 0) return;
      for (const r of rows) {
        if (Number(r.leaf_index) !== at) return;
        yield r.leaf_hash;
        at++;
      }
    }
  };
  if (!withTiles) return { leaves };
  return {
    leaves,
    tiles: {
      height: TILE_HEIGHT,
      async roots(from, to) {
        const { rows } = await db.query<{ start: string; root: Buffer }>(
          'SELECT start, root FROM phigate.audit_log_tiles WHERE start >= $1 AND start < $2 ORDER BY start',
          [from, to],
        );
        // Only an unbroken run from `from` counts; the rest is read as leaves.
        const out: Buffer[] = [];
        for (const r of rows) {
          if (Number(r.start) !== from + out.length * TILE) break;
          out.push(r.root);
        }
        return out;
      },
    },
  };
}

/**
 * Caches the roots of the whole tiles below `size` that are not cached yet (the first time, one
 * pass over the leaves; then only the new ones). A cached root is derived data, not evidence:
 * prove checks every proof against the signed root before printing it, and a wrong tile only
 * sends it back to the leaves.
 */
async function fillTiles(db: pg.ClientBase, size: number): Promise<void> {
  const { rows } = await db.query<{ next: string }>('SELECT coalesce(max(start) + $1, 0) AS next FROM phigate.audit_log_tiles', [TILE]);
  const source = dbSource(db, false);
  for (let start = Number(rows[0]!.next); start + TILE <= size; ) {
    const upTo = Math.min(size - ((size - start) % TILE), start + 64 * TILE);
    const starts: number[] = [];
    const roots: Buffer[] = [];
    let tree = growingTree();
    for await (const h of source.leaves(start, upTo)) {
      tree.append(h);
      if (tree.size === TILE) {
        starts.push(start + starts.length * TILE);
        roots.push(tree.root());
        tree = growingTree();
      }
    }
    if (starts.length === 0) return;
    await db.query('INSERT INTO phigate.audit_log_tiles (start, root) SELECT * FROM unnest($1::bigint[], $2::bytea[]) ON CONFLICT DO NOTHING', [
      starts.map(String),
      roots,
    ]);
    start += starts.length * TILE;
  }
}

/** The checkpoint body's root (the note's signature is the verifier's business, not prove's). */
function rootOfNote(note: string): Buffer {
  const body = parseCheckpoint(note.slice(0, note.indexOf('\n\n') + 1));
  if (body === null) throw new ProveError('a stored checkpoint is not a checkpoint (run phigate audit verify)');
  return body.root;
}

/** The path from cached tiles when it checks out against the signed root, else from the leaves alone. */
async function pathChecked(db: pg.ClientBase, ranges: readonly Range[], check: (path: Buffer[]) => boolean, what: string): Promise<Buffer[]> {
  const fast = await rangeRoots(ranges, dbSource(db, true));
  if (check(fast)) return fast;
  const slow = await rangeRoots(ranges, dbSource(db, false));
  if (check(slow)) return slow;
  throw new ProveError(`${what} does not match its signed checkpoint: the log was altered (run phigate audit verify)`);
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
 * The leaf holding event `eventId`: the v1 event of that id, else the record `eventId >> 16` (of
 * either table) when it has an event of that ordinal. Read from the tables as verify reads them.
 */
const HOLDER = `
  SELECT l.leaf_index, l.leaf_hash, x.* FROM (
    SELECT ${V1_LEAF_SELECT} FROM phigate.audit_events_v1 e WHERE e.id = $1
    UNION ALL
    SELECT ${RECORD_LEAF_SELECT} FROM phigate.audit_records r
    WHERE r.id = $1::bigint >> 16 AND ($1::bigint & 65535) < cardinality(r.actions)
    UNION ALL
    SELECT ${V3_LEAF_SELECT} FROM phigate.audit_records_v3 r
    WHERE r.id = $1::bigint >> 16 AND ($1::bigint & 65535) < cardinality(r.record_ids)
    ORDER BY version
    LIMIT 1
  ) x LEFT JOIN phigate.audit_log l ON l.event_id = x.key`;

/**
 * An inclusion proof of the leaf holding event `eventId` (a v1 event, or the record one of whose
 * events it is) against the checkpoint of size `size` (null: the latest, or one a verifier already
 * holds). The leaf's bytes, which the proof carries, are recomputed from its row and must hash to
 * its stored leaf: a proof is never made for an event the database no longer holds as it was logged.
 */
export async function proveEvent(db: pg.ClientBase, eventId: string, size: number | null = null): Promise<string> {
  await fillTiles(db, Number((await checkpointAt(db, size)).tree_size));
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const { rows } = await db.query<LeafRow & { leaf_index: string | null; leaf_hash: Buffer | null }>(HOLDER, [eventId]);
    const row = rows[0];
    if (row === undefined) throw new ProveError(`there is no event ${eventId} (never written, or removed by retention)`);
    if (row.leaf_index === null || row.leaf_hash === null) throw new ProveError(`event ${eventId} is not sealed into the log yet`);
    const leaf = leafBytes(row);
    if (!leafHash(leaf).equals(row.leaf_hash)) throw new ProveError(`event ${eventId} differs from the event that was logged (run phigate audit verify)`);
    const index = Number(row.leaf_index);
    const cp = await checkpointAt(db, size);
    const treeSize = Number(cp.tree_size);
    if (index >= treeSize) {
      throw new ProveError(`event ${eventId} is sealed but not under ${size === null ? 'a signed checkpoint yet' : 'that checkpoint'} (it covers ${treeSize} entries)`);
    }
    const root = rootOfNote(cp.note);
    const path = await pathChecked(db, inclusionRanges(treeSize, index), (p) => verifyInclusion(leafHash(leaf), index, treeSize, p, root), `event ${eventId}'s path`);
    return formatInclusionProof({ leaf, index, path, checkpoint: cp.note });
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

/** A consistency proof between the checkpoints of sizes `from` and `to` (`to` null: the latest). */
export async function proveConsistency(db: pg.ClientBase, from: number, to: number | null): Promise<string> {
  await fillTiles(db, Number((await checkpointAt(db, to)).tree_size));
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const older = await checkpointAt(db, from);
    const newer = await checkpointAt(db, to);
    const oldSize = Number(older.tree_size);
    const newSize = Number(newer.tree_size);
    if (oldSize < 1 || oldSize > newSize) throw new ProveError(`--from must be a checkpoint size from 1 up to --to (${newSize})`);
    const [oldRoot, newRoot] = [rootOfNote(older.note), rootOfNote(newer.note)];
    const path = await pathChecked(
      db,
      consistencyRanges(newSize, oldSize),
      (p) => verifyConsistency(oldSize, newSize, p, oldRoot, newRoot),
      `the tree of ${newSize} events`,
    );
    return formatConsistencyProof({ oldSize, newSize, path, oldCheckpoint: older.note, newCheckpoint: newer.note });
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}

const iso = (us: bigint): string => new Date(Number(us / 1000n)).toISOString();
const fact = (e: RecordEvent, patientId: string | null): string =>
  [e.action, e.field === null ? e.typeName : `${e.typeName}.${e.field}`, patientId === null ? null : `patient ${patientId}`].filter((x) => x !== null).join(' ');

export type LeafDescription = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly problem: string };

/**
 * One line about the entry a checked proof is about: ids and codes, never a value. With `eventId`,
 * that event must be inside the entry (the v1 event itself, or an event of the record), and the
 * line is about it; without, about the whole entry.
 */
export function describeLeaf(leaf: Buffer, eventId: bigint | null = null): LeafDescription {
  const d = decodeLeaf(leaf);
  if (d === null) return { ok: false, problem: 'the entry is not a phigate audit event (canonical v1) nor record (canonical v2 or v3)' };
  if (d.version === 1) {
    const e = d.event;
    if (eventId !== null && eventId !== e.id) return { ok: false, problem: `event ${eventId} is not the entry the proof is about (event ${e.id})` };
    const what = fact(e, e.patientId);
    return {
      ok: true,
      text: `event ${e.id}: ${what} by ${e.actorKind} ${e.actor}${e.role ? ` (${e.role})` : ''}, purpose ${e.purpose}${e.breakGlass ? ', break-glass' : ''}, at ${iso(e.occurredAtMicros)}, request ${e.requestId}`,
    };
  }
  const r = d.record;
  // A v2 record is about one patient (or none); a v3 record's event i is about patient i / L.
  const events = d.version === 2 ? d.record.events.map((e) => ({ ...e, patientId: d.record.patientId })) : recordV3Events(d.record);
  const first = r.id << EVENT_ORDINAL_BITS;
  const last = first + BigInt(events.length - 1);
  const by = `by ${r.actorKind} ${r.actor}${r.role ? ` (${r.role})` : ''}, purpose ${r.purpose}${r.breakGlass ? ', break-glass' : ''}, at ${iso(r.occurredAtMicros)}, request ${r.requestId}`;
  if (eventId === null) {
    const patient = d.version === 3 ? ` about ${d.record.patientIds.length} patients` : d.record.patientId === null ? '' : ` about patient ${d.record.patientId}`;
    return { ok: true, text: `record ${r.id} (events ${first} to ${last}): ${events.length} event${events.length === 1 ? '' : 's'}${patient} ${by}` };
  }
  if (eventId < first || eventId > last) return { ok: false, problem: `event ${eventId} is not in the entry the proof is about (record ${r.id}, events ${first} to ${last})` };
  const e = events[Number(eventId - first)]!;
  return { ok: true, text: `event ${eventId}: ${fact(e, e.patientId)} ${by}, in record ${r.id} (events ${first} to ${last})` };
}
