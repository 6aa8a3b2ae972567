import type pg from 'pg';
import type { Verifier } from '../log/note.ts';
import { runningTimes } from './checkpoint-times.ts';
import { checkCheckpointRow, type CheckpointRow } from './signed-checkpoint.ts';

/**
 * Where a retention run may end (docs/audit-log.md, "Append-only and retention"): at the largest
 * checkpoint whose signature checks out with the log's public key, here, outside the database,
 * and whose signed time is before the cutoff. Every leaf under such a checkpoint was committed
 * before its time (checkpoint.ts), so before the cutoff; no column of the database (an event's
 * occurred_at, a checkpoint's signed_at) can move that.
 *
 * A checkpoint signed without a time line bounds nothing. A checkpoint's time counts as no earlier
 * than the time of any smaller one (runningTimes).
 */
export interface RetentionCheckpoint {
  readonly size: number;
  /** Its signed time (or a smaller checkpoint's, when that is later), milliseconds since the epoch. */
  readonly time: number;
  /** The whole signed note, as stored: the database function checks it is the stored one. */
  readonly note: string;
}

export interface RetentionBound {
  /** Null: no checkpoint qualifies, and the run removes nothing. */
  readonly checkpoint: RetentionCheckpoint | null;
  /** Checkpoints larger than the bound (all of them when there is none) whose note carries no time. */
  readonly untimed: number;
}

/** A stored checkpoint that does not check out: retention refuses to run at all (`audit verify` names it). */
export class CheckpointUnverifiedError extends Error {
  readonly code = 'CHECKPOINT_UNVERIFIED';
  constructor(readonly size: number, readonly kind: 'checkpoint_signature' | 'checkpoint_row', reason: string) {
    super(`checkpoint ${size}: ${reason}; run audit verify. Nothing was removed`);
  }
}

/** Chooses the bound from `rows` (every stored checkpoint); throws CheckpointUnverifiedError on the first that does not check out. */
export function chooseRetentionBound(rows: readonly CheckpointRow[], verifier: Verifier, before: Date): RetentionBound {
  const sorted = [...rows].sort((a, b) => Number(a.tree_size) - Number(b.tree_size));
  const timed: RetentionCheckpoint[] = [];
  const untimedSizes: number[] = [];
  for (const row of sorted) {
    const size = Number(row.tree_size);
    const checked = checkCheckpointRow(row, verifier);
    if (!checked.ok) throw new CheckpointUnverifiedError(size, checked.kind, checked.reason);
    const time = checked.body.time;
    if (time === undefined) untimedSizes.push(size);
    else timed.push({ size, time, note: row.note });
  }
  const bound = runningTimes(timed).findLast((c) => c.time < before.getTime()) ?? null;
  return { checkpoint: bound, untimed: untimedSizes.filter((size) => bound === null || size > bound.size).length };
}

export async function retentionBound(db: pg.ClientBase, verifier: Verifier, before: Date): Promise<RetentionBound> {
  const { rows } = await db.query<CheckpointRow>('SELECT tree_size, origin, root, note FROM phigate.audit_checkpoints ORDER BY tree_size');
  return chooseRetentionBound(rows, verifier, before);
}
