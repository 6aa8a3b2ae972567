import type pg from 'pg';
import type { Verifier } from '../log/note.ts';
import { leafBytes, RECORD_LEAF_SELECT, V1_LEAF_SELECT, V3_LEAF_SELECT, type LeafRow } from '../log/rows.ts';
import { growingTree, leafHash } from '../log/tree.ts';
import { checkPatientListings, type ListingProblemKind } from './listing.ts';
import { openSink, type SinkReader } from './sink-reader.ts';
import { retentionDetail } from './retain.ts';
import { runningTimes } from './checkpoint-times.ts';
import { checkCheckpointRow, type CheckpointRow } from './signed-checkpoint.ts';

/**
 * `phigate audit verify` (docs/audit-log.md, "Verifying the log"): trusts nothing the database
 * says about itself. Every checkpoint's signature is checked with the public key; every leaf is
 * recomputed from its event's canonical bytes, in leaf order, into one tree whose root must be
 * each checkpoint's (and each head's) at its size, so successive checkpoints are consistent by
 * construction; leaves removed by retention count by their kept hashes; the file sink, when
 * given, must hold the same bytes. A leaf is one v1 event (before migration 028) or one audit
 * record with all its events (canonical v2, or v3 for several patients), named by its key: the id
 * of its (first) event. Last, the v3 records' patient listing (listing.ts), which the leaves do not
 * cover, must be exactly their slots. The first problem stops it, named by an event id and codes,
 * never by an event's values.
 *
 * A partial verify (`since`) recomputes a range of leaves chosen by the signed checkpoints alone:
 * from the size of the largest checkpoint whose signed time (no earlier than a smaller one's) is at or before `since`, to the end.
 * Never by a column of the rows: a tamperer who rewrites a record can rewrite its time too.
 */
export type ProblemKind =
  | 'checkpoint_signature'
  | 'checkpoint_row'
  | 'leaf_missing'
  | 'event_missing'
  | 'event_altered'
  | 'event_out_of_order'
  | 'root_mismatch'
  | 'head_mismatch'
  | 'leaves_missing'
  | 'event_unlogged'
  | 'retention'
  | 'sink_differs'
  | 'sink_ahead'
  | 'sink_checkpoint'
  | ListingProblemKind;

export interface VerifyProblem {
  readonly kind: ProblemKind;
  /** The first bad event, when there is one to name. */
  readonly eventId: string | null;
  readonly message: string;
}

/** What was recomputed: with `since`, a range chosen by signed checkpoints only. */
export interface VerifyRange {
  /** Every leaf from this one to the end was recomputed from its row (unless retired); 0 for a whole verify. */
  readonly fromLeaf: number;
  /** The checkpoint fromLeaf is the size of: the largest whose time (runningTimes: no earlier than a smaller one's) is at or before `since`. Null when none is. */
  readonly checkpoint: { readonly size: number; readonly time: number } | null;
  /** The first record id whose patient listing was checked: the lowest of the range's records and the unsealed ones. Null: every record. */
  readonly listingFrom: string | null;
}

export interface VerifyReport {
  readonly problem: VerifyProblem | null;
  readonly range: VerifyRange;
  readonly leaves: number;
  /** Leaves recomputed from their event's or record's bytes (the others: retired, or before range.fromLeaf). */
  readonly rehashed: number;
  readonly retired: number;
  readonly checkpoints: number;
  /** Leaves after the last checkpoint: verified against the database's heads only, not yet signed. */
  readonly unsigned: number;
  /** Committed leaves (records, or v1 events) after the last leaf, waiting for the sealer. */
  readonly unsealed: number;
  /** Leaves compared with the sink's copy. */
  readonly sinkCompared: number;
  /** Records of several patients (v3) whose patient listing matched their slots. */
  readonly listed: number;
}

export interface VerifyOptions {
  /** A connection that may read the audit tables (the migrator, or a member of phigate_auditor). */
  readonly client: pg.ClientBase;
  readonly verifier: Verifier;
  /**
   * Leaves under the largest checkpoint signed at or before this time count by their stored hashes
   * (still bound by the signed roots); every later leaf is recomputed. So is every leaf whose
   * true time is at or after `since`, whatever its row says now.
   */
  readonly since?: Date | null;
  readonly sinkDir?: string | null;
  readonly batch?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Progress of the patient listing's check, in v3 records, after the leaves'. */
  readonly onListingProgress?: (done: number, total: number) => void;
}

interface WalkRow extends Omit<LeafRow, 'key' | 'version'> {
  readonly leaf_index: string;
  readonly event_id: string;
  readonly leaf_hash: Buffer;
  /** Null when neither a v1 event nor a record stands behind the leaf. */
  readonly key: string | null;
  readonly version: number | null;
  readonly tx: string | null;
}

/**
 * Each leaf with what it was made from: the v1 event of that id, or the record whose first event
 * it is. Read straight from the tables, not through the definer functions the gateway uses.
 */
const LEAVES = `
  SELECT l.leaf_index, l.event_id, l.leaf_hash, x.*
  FROM (SELECT a.leaf_index, a.event_id, a.leaf_hash FROM phigate.audit_log a WHERE a.leaf_index >= $1 ORDER BY a.leaf_index LIMIT $2) l
  LEFT JOIN LATERAL (
    SELECT ${V1_LEAF_SELECT} FROM phigate.audit_events_v1 e WHERE e.id = l.event_id
    UNION ALL
    SELECT ${RECORD_LEAF_SELECT} FROM phigate.audit_records r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    UNION ALL
    SELECT ${V3_LEAF_SELECT} FROM phigate.audit_records_v3 r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    LIMIT 1
  ) x ON true
  ORDER BY l.leaf_index`;

/** Every leaf's key with its (tx, key) order, over both kinds: what the sealer seals from; `record` is the record's id. */
const ENTRIES = `
  SELECT e.tx, e.id AS key, NULL::bigint AS record FROM phigate.audit_events_v1 e
  UNION ALL
  SELECT r.tx, r.id << 16, r.id FROM phigate.audit_records r
  UNION ALL
  SELECT r.tx, r.id << 16, r.id FROM phigate.audit_records_v3 r`;

/** The bytes of a leaf's row; null when the row cannot be a record (arrays of different lengths, none at all). */
function bytesOf(r: LeafRow): Buffer | null {
  try {
    return leafBytes(r);
  } catch {
    return null;
  }
}

class Found extends Error {
  constructor(readonly problem: VerifyProblem) {
    super(problem.message);
  }
}
const fail = (kind: ProblemKind, eventId: string | null, message: string): never => {
  throw new Found({ kind, eventId, message });
};

/**
 * A root that does not match says only that something in its range is wrong. The walk goes one
 * leaf further before reporting it: a leaf check there can name the event itself (an event moved
 * to the end of a range is out of order only next to the leaf after it).
 */
interface Pending {
  readonly problem: VerifyProblem;
  /** The first leaf after the range. */
  readonly end: number;
}

/** (tx, id) compared as the sealer orders leaves. */
const after = (a: readonly [bigint, bigint], b: readonly [bigint, bigint]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

interface Mark {
  readonly size: number;
  readonly root: Buffer;
  readonly kind: 'checkpoint' | 'head';
}

/**
 * The range a partial verify recomputes: from the size of the largest checkpoint whose time is at
 * or before `since`, its time counting as no earlier than any smaller checkpoint's (runningTimes).
 * Every leaf under it was committed before that time (checkpoint.ts), so every leaf truly written
 * at or after `since` is at or past it. None signed by then (or none carrying a time: signed before
 * the time line existed): the whole log.
 */
export function rangeSince(timed: readonly { readonly size: number; readonly time: number }[], since: Date): Pick<VerifyRange, 'fromLeaf' | 'checkpoint'> {
  const found = runningTimes(timed).findLast((c) => c.time <= since.getTime());
  const best = found === undefined ? null : { size: found.size, time: found.time };
  return { fromLeaf: best?.size ?? 0, checkpoint: best };
}

const lowest = (a: bigint | null, b: bigint): bigint => (a === null || b < a ? b : a);

/** Past every record: a range without records checks only listing rows that name ids no record has yet. */
async function nextRecordId(db: pg.ClientBase): Promise<bigint> {
  const { rows } = await db.query<{ id: string }>(
    'SELECT greatest((SELECT max(id) FROM phigate.audit_records), (SELECT max(id) FROM phigate.audit_records_v3), 0) + 1 AS id',
  );
  return BigInt(rows[0]!.id);
}

export async function verifyLog(opts: VerifyOptions): Promise<VerifyReport> {
  const db = opts.client;
  const batch = opts.batch ?? 5000;
  const counts = { leaves: 0, rehashed: 0, retired: 0, checkpoints: 0, unsigned: 0, unsealed: 0, sinkCompared: 0, listed: 0 };
  let range: VerifyRange = { fromLeaf: 0, checkpoint: null, listingFrom: null };
  // The sink's extent before the snapshot: lines the replicas deliver while the walk runs are
  // newer than the snapshot and would otherwise look like leaves the database lacks.
  const sink: SinkReader | null = opts.sinkDir ? await openSink(opts.sinkDir) : null;
  // One snapshot for the whole walk: a sealer or writer running meanwhile changes nothing we see.
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const eventAtLeaf = async (leaf: number): Promise<string | null> =>
      (await db.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log WHERE leaf_index = $1', [leaf])).rows[0]?.event_id ?? null;

    // Checkpoints: each note signed by the key, its body the row's size and root, of this log.
    const cps = (
      await db.query<CheckpointRow>(
        'SELECT tree_size, origin, root, note FROM phigate.audit_checkpoints ORDER BY tree_size',
      )
    ).rows;
    const checkpointNotes = new Map<number, string>();
    const timed: { size: number; time: number }[] = [];
    for (const c of cps) {
      const size = Number(c.tree_size);
      const last = size > 0 ? await eventAtLeaf(size - 1) : null;
      const covers = last === null ? '' : ` (the checkpoint over events up to ${last})`;
      const checked = checkCheckpointRow(c, opts.verifier);
      if (!checked.ok) return fail(checked.kind, last, `checkpoint ${size}: ${checked.reason}${covers}`);
      checkpointNotes.set(size, c.note);
      if (checked.body.time !== undefined) timed.push({ size, time: checked.body.time });
    }
    if (opts.since != null) range = { ...range, ...rangeSince(timed, opts.since) };
    const start = range.fromLeaf;
    counts.checkpoints = cps.length;
    const heads = (await db.query<{ tree_size: string; root: Buffer }>('SELECT tree_size, root FROM phigate.audit_log_heads ORDER BY tree_size')).rows;
    const marks: Mark[] = [
      ...cps.map((c) => ({ size: Number(c.tree_size), root: c.root, kind: 'checkpoint' as const })),
      ...heads.map((h) => ({ size: Number(h.tree_size), root: h.root, kind: 'head' as const })),
    ].sort((a, b) => a.size - b.size || (a.kind === 'checkpoint' ? -1 : 1));

    // Retention: consecutive ranges from leaf 0, each with its own audit event.
    const runs = (
      await db.query<{ id: string; from_leaf: string; to_leaf: string; event_id: string; sink_bound: string | null }>(
        'SELECT id, from_leaf, to_leaf, event_id, sink_bound FROM phigate.audit_retention_runs ORDER BY id',
      )
    ).rows;
    let retired = 0;
    for (const r of runs) {
      if (Number(r.from_leaf) !== retired) fail('retention', null, `retention run ${r.id} starts at leaf ${r.from_leaf}, the previous run ended at ${retired}`);
      if (r.sink_bound !== null && Number(r.to_leaf) > Math.max(Number(r.from_leaf), Number(r.sink_bound))) {
        fail('retention', r.event_id, `retention run ${r.id} removed leaves up to ${r.to_leaf}, past its sinks' bound ${r.sink_bound}`);
      }
      retired = Number(r.to_leaf);
    }
    const retentionEvents = new Map(runs.map((r) => [r.event_id, r]));

    const total = Number((await db.query<{ n: string }>('SELECT coalesce(max(leaf_index) + 1, 0) AS n FROM phigate.audit_log')).rows[0]!.n);
    const tree = growingTree();
    let m = 0;
    let prevKey: [bigint, bigint] | null = null;
    let prevEvent: string | null = null;
    // The first event after the last root that matched: where a mismatch can be narrowed to.
    let sinceGood: string | null = null;
    let sinceGoodLeaf = 0;
    let pending: Pending | null = null;
    /** A problem with the event at `leaf`: it names the event unless a range before it already failed. */
    const leafFail = (leaf: number, kind: ProblemKind, eventId: string | null, message: string): never => {
      if (pending !== null && leaf >= pending.end) throw new Found(pending.problem);
      return fail(kind, eventId, message);
    };
    // The lowest record id among the range's leaves: where its patient listing's check starts.
    let lowestRecord: bigint | null = null;
    // Whether the sink has held a leaf before the current one.
    let sinkHeld = false;
    opts.onProgress?.(0, total);

    for (let i = 0; ; ) {
      const { rows } = await db.query<WalkRow>(LEAVES, [i, batch]);
      if (rows.length === 0) break;
      for (const r of rows) {
        if (pending !== null && i > pending.end) throw new Found(pending.problem);
        const index = Number(r.leaf_index);
        if (index !== i) {
          leafFail(i, 'leaf_missing', r.event_id, `leaf ${i} is missing: after ${prevEvent === null ? 'the start' : `event ${prevEvent}`} the log goes on at leaf ${index}, event ${r.event_id}`);
        }
        if (sinceGood === null) {
          sinceGood = r.event_id;
          sinceGoodLeaf = i;
        }
        let hash = r.leaf_hash;
        if (r.key === null) {
          if (i >= retired) leafFail(i, 'event_missing', r.event_id, `event ${r.event_id} (leaf ${i}) is missing from the audit tables`);
          counts.retired++;
        } else {
          const key: [bigint, bigint] = [BigInt(r.tx!), BigInt(r.key)];
          if (i >= retired && prevKey !== null && !after(key, prevKey)) {
            leafFail(i - 1, 'event_out_of_order', prevEvent, `event ${prevEvent} (leaf ${i - 1}) is out of order: event ${r.key} of leaf ${i} sorts before it`);
          }
          prevKey = key;
          if (i >= start) {
            if (r.version !== 1) lowestRecord = lowest(lowestRecord, BigInt(r.key) >> 16n);
            const bytes = bytesOf({ ...r, key: r.key, version: r.version! });
            if (bytes === null) leafFail(i, 'event_altered', r.key, `event ${r.key} (leaf ${i}) differs from what was logged: its event arrays are not a record's`);
            hash = leafHash(bytes!);
            counts.rehashed++;
            if (!hash.equals(r.leaf_hash)) leafFail(i, 'event_altered', r.key, `event ${r.key} (leaf ${i}) differs from what was logged: its bytes do not hash to its leaf`);
          }
          const run = retentionEvents.get(r.key);
          if (run !== undefined && (r.actions.length !== 1 || r.actions[0] !== 'retention' || r.details[0] !== retentionDetail(run.from_leaf, run.to_leaf, run.sink_bound))) {
            leafFail(i, 'retention', r.key, `retention run ${run.id} names event ${r.key}, which is not its retention event`);
          }
          retentionEvents.delete(r.key);
        }
        if (sink !== null) {
          const copy = await sink.eventAt(i);
          // The deliverer goes on past a retired range (deliver.ts), so a run that outran the sink
          // (one run with other sink settings, or none) leaves a hole after what the sink held: the
          // events of that hole are kept nowhere. Before the sink's first leaf is rotation's doing.
          if (copy === null && r.key === null && sinkHeld) {
            leafFail(i, 'retention', r.event_id, `event ${r.event_id} (leaf ${i}) was removed by retention before the sink delivered it: it is kept nowhere`);
          }
          if (copy !== null) {
            sinkHeld = true;
            counts.sinkCompared++;
            if (copy.id !== r.event_id || !leafHash(copy.canonical).equals(hash)) {
              leafFail(i, 'sink_differs', r.event_id, `event ${r.event_id} (leaf ${i}) differs from the sink's copy`);
            }
          }
        }
        tree.append(hash);
        prevEvent = r.event_id;
        i++;
        while (m < marks.length && marks[m]!.size === tree.size) {
          const mark = marks[m++]!;
          if (pending === null && !tree.root().equals(mark.root)) {
            const what = mark.kind === 'checkpoint' ? `the signed root of checkpoint ${mark.size}` : `the root of sealing head ${mark.size}`;
            pending = {
              end: i,
              problem: {
                kind: mark.kind === 'checkpoint' ? 'root_mismatch' : 'head_mismatch',
                eventId: sinceGood,
                message: `leaves ${sinceGoodLeaf} to ${i - 1} (events ${sinceGood} to ${prevEvent}) do not hash to ${what}: one of them was altered, inserted, removed or moved; the first is event ${sinceGood}`,
              },
            };
          }
          sinceGood = null;
        }
        if (i % 1000 === 0) opts.onProgress?.(i, total);
      }
    }
    if (pending !== null) throw new Found(pending.problem);
    counts.leaves = tree.size;
    opts.onProgress?.(tree.size, Math.max(total, tree.size));
    if (m < marks.length) {
      const mark = marks[m]!;
      fail('leaves_missing', prevEvent, `${mark.kind === 'checkpoint' ? 'checkpoint' : 'sealing head'} ${mark.size} covers ${mark.size} leaves, the log holds ${tree.size}: the leaves after event ${prevEvent} are gone`);
    }

    // Retention runs whose event was neither in the log nor retired since.
    for (const [eventId, run] of retentionEvents) {
      const leaf = (await db.query<{ leaf_index: string }>('SELECT leaf_index FROM phigate.audit_log WHERE event_id = $1', [eventId])).rows[0];
      if (leaf !== undefined && Number(leaf.leaf_index) < retired) continue;
      const { rowCount } = await db.query(
        "SELECT 1 FROM phigate.audit_events WHERE id = $1 AND action = 'retention' AND detail = $2",
        [eventId, retentionDetail(run.from_leaf, run.to_leaf, run.sink_bound)],
      );
      if (rowCount === 0) fail('retention', eventId, `retention run ${run.id} (leaves ${run.from_leaf} to ${run.to_leaf}) has no retention event ${eventId}: its events were removed some other way`);
    }

    // An event or record that sorts before the last leaf but is not in the log was slipped in behind the sealer.
    if (prevKey !== null) {
      const { rows } = await db.query<{ key: string }>(
        `SELECT x.key FROM (${ENTRIES}) x
         WHERE (x.tx, x.key) < ($1::xid8, $2::bigint) AND NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = x.key)
         ORDER BY x.tx, x.key LIMIT 1`,
        [String(prevKey[0]), String(prevKey[1])],
      );
      if (rows[0]) fail('event_unlogged', rows[0].key, `event ${rows[0].key} is not in the log, yet sorts before its last leaf: it was inserted after the log was sealed`);
      const unsealed = (
        await db.query<{ n: string; record: string | null }>(
          `SELECT count(*) AS n, min(x.record) AS record FROM (${ENTRIES}) x WHERE (x.tx, x.key) > ($1::xid8, $2::bigint)`,
          [String(prevKey[0]), String(prevKey[1])],
        )
      ).rows[0]!;
      counts.unsealed = Number(unsealed.n);
      if (unsealed.record !== null) lowestRecord = lowest(lowestRecord, BigInt(unsealed.record));
    } else {
      const unsealed = (
        await db.query<{ n: string; record: string | null }>(
          `SELECT count(*) AS n, min(x.record) AS record FROM (${ENTRIES}) x WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = x.key)`,
        )
      ).rows[0]!;
      counts.unsealed = Number(unsealed.n);
      if (unsealed.record !== null) lowestRecord = lowest(lowestRecord, BigInt(unsealed.record));
    }
    counts.unsigned = tree.size - (cps.length ? Number(cps[cps.length - 1]!.tree_size) : 0);

    if (sink !== null) {
      await sink.drain((e) => {
        fail('sink_ahead', e.id, `event ${e.id} (leaf ${e.leaf}) is in the sink but not in the database's log`);
      });
      for (const [size, c] of sink.checkpoints) {
        const ours = checkpointNotes.get(size);
        if (ours !== c.note) {
          const last = size > 0 ? await eventAtLeaf(size - 1) : null;
          fail('sink_checkpoint', last, `checkpoint ${size} of the sink is ${ours === undefined ? 'missing from' : 'not the one in'} the database`);
        }
      }
    }

    // A whole verify checks every listing row; a partial one those of the range's records and later
    // ids (unsealed records, and rows naming ids no record has), the same records it rehashed.
    if (start > 0) range = { ...range, listingFrom: String(lowestRecord ?? (await nextRecordId(db))) };
    const listing = await checkPatientListings(db, {
      fromRecord: range.listingFrom === null ? null : BigInt(range.listingFrom),
      onProgress: opts.onListingProgress,
    });
    counts.listed = listing.records;
    if (listing.problem !== null) fail(listing.problem.kind, listing.problem.eventId, listing.problem.message);
    return { problem: null, range, ...counts };
  } catch (e) {
    if (e instanceof Found) return { problem: e.problem, range, ...counts };
    throw e;
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
  }
}
