import type pg from 'pg';

/**
 * The one path by which audit events leave (017_audit_append_only.sql): the events of the leaves
 * after the last run, up to the first event younger than `before` (or the last signed leaf), in
 * one transaction with the run's record and its own audit event. Leaf hashes, heads and
 * checkpoints stay, so `audit verify` still checks every signed root.
 */
export interface RetentionRun {
  readonly runId: string;
  readonly fromLeaf: number;
  readonly toLeaf: number;
  readonly events: number;
  /** The run's own audit event ('retention'). */
  readonly eventId: string;
}

export async function retainAuditEvents(db: pg.ClientBase, before: Date, requestId: string): Promise<RetentionRun> {
  const { rows } = await db.query<{ run_id: string; from_leaf: string; to_leaf: string; events: string; event_id: string }>(
    'SELECT run_id, from_leaf, to_leaf, events, event_id FROM phigate.retain_audit_events($1, $2)',
    [before, requestId],
  );
  const r = rows[0]!;
  return { runId: r.run_id, fromLeaf: Number(r.from_leaf), toLeaf: Number(r.to_leaf), events: Number(r.events), eventId: r.event_id };
}
