import type pg from 'pg';
import type { Verifier } from '../log/note.ts';
import { retentionBound, type RetentionCheckpoint } from './retention-bound.ts';
import type { SinkAt } from './sink-positions.ts';

/**
 * The one path by which audit events leave (017_audit_append_only.sql, 036, 073): the events of
 * the leaves after the last run, up to the largest checkpoint whose signature this process checked
 * with the log's public key and whose signed time is before `before` (retention-bound.ts), and
 * sooner: at the first event whose own time is not before `before`, or the first leaf a configured
 * sink has not delivered; in one transaction with the run's record and its own audit event. Leaf
 * hashes, heads and checkpoints stay, so `audit verify` still checks every signed root.
 */
export interface RetentionRun {
  readonly runId: string;
  readonly fromLeaf: number;
  readonly toLeaf: number;
  readonly events: number;
  /** The run's own audit event ('retention'). */
  readonly eventId: string;
  /** The sink furthest behind, whose position bounded the run; null when no sink is configured. */
  readonly bound: SinkAt | null;
  /** Leaves past retention that the bound kept, because that sink has not delivered them yet. */
  readonly heldBack: number;
  /** The signed checkpoint the run could go no further than; null when none qualified (nothing removed). */
  readonly checkpoint: RetentionCheckpoint | null;
  /** Checkpoints past that one signed without a time line, which bound nothing. */
  readonly untimed: number;
}

/** The retention event's detail, as 036's function writes it; verify expects exactly this. */
export const retentionDetail = (fromLeaf: number | string, toLeaf: number | string, sinkBound: number | string | null): string =>
  `leaves:${fromLeaf}-${toLeaf}${sinkBound === null ? '' : `:sink:${sinkBound}`}`;

/** The sink furthest behind of `sinks`; null for none. */
function furthestBehind(sinks: readonly SinkAt[]): SinkAt | null {
  let low: SinkAt | null = null;
  for (const s of sinks) if (low === null || s.nextLeaf < low.nextLeaf) low = s;
  return low;
}

/**
 * `sinks` are the positions of every configured sink (sink-positions.ts), none left out: an empty
 * list says there is no sink, and only then may events go that no sink holds. `verifier` is the
 * log's public key, from outside the database. Throws CheckpointUnverifiedError, removing nothing,
 * when a stored checkpoint does not check out with it.
 */
export async function retainAuditEvents(db: pg.ClientBase, before: Date, requestId: string, sinks: readonly SinkAt[], verifier: Verifier): Promise<RetentionRun> {
  const bound = furthestBehind(sinks);
  const { checkpoint, untimed } = await retentionBound(db, verifier, before);
  const { rows } = await db.query<{ run_id: string; from_leaf: string; to_leaf: string; events: string; event_id: string; held_back: string }>(
    'SELECT run_id, from_leaf, to_leaf, events, event_id, held_back FROM phigate.retain_audit_events($1, $2, $3, $4, $5)',
    [before, requestId, bound === null ? null : String(bound.nextLeaf), checkpoint === null ? null : String(checkpoint.size), checkpoint?.note ?? null],
  );
  const r = rows[0]!;
  return {
    runId: r.run_id,
    fromLeaf: Number(r.from_leaf),
    toLeaf: Number(r.to_leaf),
    events: Number(r.events),
    eventId: r.event_id,
    bound,
    heldBack: Number(r.held_back),
    checkpoint,
    untimed,
  };
}
