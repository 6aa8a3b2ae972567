import type pg from 'pg';
import type { Pool } from '../../db/pool.ts';
import { formatCheckpoint } from './checkpoint.ts';
import { underXactLock } from './lock.ts';
import { signNote, type NoteSigner } from './note.ts';
import { LEAF_COLUMNS, leafBytes, type LeafRow } from './rows.ts';
import { EMPTY_ROOT, growingTree, leafHash } from './tree.ts';

/**
 * Sealing and checkpointing (docs/audit-log.md). Sealing gives each committed audit record (and
 * each v1 event of before migration 028) a leaf index, in (tx, key) order, only for transactions
 * that have ended, the key being the id of its first event; checkpointing signs the
 * latest head. Both run under one transaction-level advisory lock, so one process at a time in
 * the whole cluster does either, and no session state is left behind (PgBouncer transaction mode).
 * A process that does not get the lock does nothing: the holder's work serves everyone.
 */
const LOCK = 'phigate.audit_log';
const underLock = <T>(pool: Pool, fn: (client: pg.PoolClient) => Promise<T>) => underXactLock(pool, LOCK, true, fn);

export interface LogHead {
  readonly size: number;
  readonly root: Buffer;
  readonly frontier: readonly Buffer[];
  readonly lastTx: string;
  /** The key of leaf size - 1: the id of its event, or of its record's first event. */
  readonly lastEventId: string;
}

export const EMPTY_HEAD: LogHead = Object.freeze({ size: 0, root: EMPTY_ROOT, frontier: [], lastTx: '0', lastEventId: '0' });

export type SealOutcome = { readonly busy: true } | { readonly busy: false; readonly sealed: number; readonly head: LogHead };

interface HeadRow {
  readonly tree_size: string;
  readonly root: Buffer;
  readonly frontier: Buffer[];
  readonly last_tx: string;
  readonly last_event_id: string;
}

export async function latestHead(db: Pool | pg.PoolClient): Promise<LogHead> {
  const { rows } = await db.query<HeadRow>(
    'SELECT tree_size, root, frontier, last_tx::text AS last_tx, last_event_id FROM phigate.audit_log_heads ORDER BY tree_size DESC LIMIT 1',
  );
  const r = rows[0];
  if (r === undefined) return EMPTY_HEAD;
  return { size: Number(r.tree_size), root: r.root, frontier: r.frontier, lastTx: r.last_tx, lastEventId: r.last_event_id };
}

/** One round: at most `batch` leaves sealed, in one transaction. */
export async function sealRound(pool: Pool, batch: number): Promise<SealOutcome> {
  const outcome = await underLock(pool, async (client) => {
    const head = await latestHead(client);
    const { rows } = await client.query<LeafRow & { tx: string }>(
      `SELECT tx::text AS tx, ${LEAF_COLUMNS} FROM phigate.audit_leaves_to_seal($1::xid8, $2, $3)`,
      [head.lastTx, head.lastEventId, batch],
    );
    if (rows.length === 0) return { busy: false as const, sealed: 0, head };
    const tree = growingTree(head);
    const hashes = rows.map((r) => leafHash(leafBytes(r)));
    for (const h of hashes) tree.append(h);
    const last = rows[rows.length - 1]!;
    const next: LogHead = { size: tree.size, root: tree.root(), frontier: tree.frontier(), lastTx: last.tx, lastEventId: last.key };
    await client.query(
      'INSERT INTO phigate.audit_log (leaf_index, event_id, leaf_hash) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])',
      [rows.map((_, i) => String(head.size + i)), rows.map((r) => r.key), hashes],
    );
    await client.query(
      'INSERT INTO phigate.audit_log_heads (tree_size, root, frontier, last_tx, last_event_id) VALUES ($1, $2, $3::bytea[], $4::xid8, $5)',
      [String(next.size), next.root, next.frontier, next.lastTx, next.lastEventId],
    );
    return { busy: false as const, sealed: rows.length, head: next };
  });
  return outcome ?? { busy: true };
}

/** Seals everything sealable now, round after round; the number of leaves sealed. */
export async function sealAll(pool: Pool, batch: number): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await sealRound(pool, batch);
    if (r.busy) return total;
    total += r.sealed;
    if (r.sealed < batch) return total;
  }
}

export interface CheckpointPolicy {
  /** Sign when the tree grew and the last checkpoint is at least this old. */
  readonly seconds: number;
  /** Sign when at least this many leaves were sealed since the last checkpoint. */
  readonly events: number;
  /** Sign whenever the tree grew (shutdown, `audit seal`). */
  readonly force: boolean;
}

export type CheckpointOutcome = { readonly signed: false } | { readonly signed: true; readonly size: number; readonly note: string };

/** Signs the latest head when the policy says it is due; the checkpoint's body names `signer.name` as the origin. */
export async function checkpoint(pool: Pool, signer: NoteSigner, policy: CheckpointPolicy): Promise<CheckpointOutcome> {
  const outcome = await underLock(pool, async (client): Promise<CheckpointOutcome> => {
    const head = await latestHead(client);
    const { rows } = await client.query<{ tree_size: string; age: number }>(
      'SELECT tree_size, extract(epoch FROM clock_timestamp() - signed_at)::float8 AS age FROM phigate.audit_checkpoints ORDER BY tree_size DESC LIMIT 1',
    );
    const last = rows[0];
    const lastSize = last === undefined ? -1 : Number(last.tree_size);
    if (head.size === 0 || head.size <= lastSize) return { signed: false };
    const due = policy.force || last === undefined || head.size - lastSize >= policy.events || last.age >= policy.seconds;
    if (!due) return { signed: false };
    // The database's clock, read after the head (rounded up): every leaf under it was committed,
    // so stamped occurred_at, before this time. A partial verify and retention rely on exactly
    // that, so the time is never earlier than this process's clock either: a database whose clock
    // was set back, or whose search_path puts another clock_timestamp first, cannot date a
    // signature early (a late time only keeps more events, and recomputes more leaves).
    const { rows: clock } = await client.query<{ ms: string }>('SELECT ceil(extract(epoch FROM pg_catalog.clock_timestamp()) * 1000)::bigint::text AS ms');
    const time = Math.max(Number(clock[0]!.ms), Date.now());
    const note = await signNote(formatCheckpoint({ origin: signer.name, size: head.size, root: head.root, time }), signer);
    await client.query('INSERT INTO phigate.audit_checkpoints (tree_size, origin, root, note) VALUES ($1, $2, $3, $4)', [
      String(head.size),
      signer.name,
      head.root,
      note,
    ]);
    return { signed: true, size: head.size, note };
  });
  return outcome ?? { signed: false };
}
