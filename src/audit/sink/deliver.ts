import type pg from 'pg';
import type { Pool } from '../../db/pool.ts';
import { underXactLock } from '../log/lock.ts';
import { LEAF_COLUMNS, type LeafRow } from '../log/rows.ts';
import { checkpointLine, leafLine } from './lines.ts';
import type { Sink, SinkPosition } from './sink.ts';

/**
 * The outbox: sealed leaves and signed checkpoints go from the database to a sink by leaf index,
 * in leaf order, each checkpoint right after the line of its last leaf. One deliverer per sink in
 * the cluster (a transaction-level advisory lock named for the sink); the position moves only
 * after the sink made the lines durable, so a crash anywhere delivers a line again, never loses one.
 *
 * Each batch then records the sink's new position in its row of phigate.audit_sink_cursors, in
 * the delivery's transaction: stdout's cursor, and for every other sink the report retention
 * stays behind whatever its job's environment configures (docs/audit-log.md). The row never runs
 * ahead of the sink: it is written after the lines are durable and commits with the delivery or
 * not at all. A failing write fails the delivery (the transaction is aborted anyway) and the next
 * round retries: the file sink resumes from its files, so nothing is written twice, and the row
 * catches up with its next batch.
 *
 * The row moves only through phigate.advance_audit_sink_cursor (migration 041): forward, never
 * past the log's end, the gateway role holding no other write on the table. A file sink whose
 * files are behind its row (restored, or a new volume at the same path) therefore fails each round
 * after one batch, loudly, until its files pass the row again.
 */
export async function deliver(pool: Pool, sink: Sink, batch: number): Promise<number | null> {
  return underXactLock(pool, `phigate.audit_sink:${sink.name}`, false, async (client) => {
    let delivered = 0;
    let position = await sink.position(client);
    for (;;) {
      const { lines, next, events } = await nextLines(client, position, batch);
      if (lines.length === 0) break;
      await sink.write(lines, next);
      await client.query('SELECT phigate.advance_audit_sink_cursor($1, $2, $3)', [sink.name, String(next.nextLeaf), String(next.nextCheckpoint)]);
      delivered += events;
      position = next;
      if (events < batch) break;
    }
    return delivered;
  });
}

async function nextLines(client: pg.PoolClient, from: SinkPosition, batch: number): Promise<{ lines: string[]; next: SinkPosition; events: number }> {
  // Leaves whose events retention removed (017, 030) have nothing left to deliver: a sink that was
  // behind a retention run (a sink added later) goes on after the run's range.
  const retired = Number((await client.query<{ end: string }>('SELECT coalesce(max(to_leaf), 0) AS end FROM phigate.audit_retention_runs')).rows[0]!.end);
  const first = Math.max(from.nextLeaf, retired);
  const events = (await client.query<LeafRow & { leaf_index: string }>(
    `SELECT leaf_index, ${LEAF_COLUMNS} FROM phigate.audit_log_leaves($1, $2)`,
    [String(first), batch],
  )).rows;
  const end = first + events.length;
  const checkpoints = (await client.query<{ tree_size: string; note: string }>(
    'SELECT tree_size, note FROM phigate.audit_checkpoints WHERE tree_size >= $1 AND tree_size <= $2 ORDER BY tree_size',
    [String(from.nextCheckpoint), String(end)],
  )).rows.map((c) => ({ size: Number(c.tree_size), note: c.note }));
  const lines: string[] = [];
  let c = 0;
  // Checkpoints over leaves already delivered come first.
  while (c < checkpoints.length && checkpoints[c]!.size <= first) lines.push(checkpointLine(checkpoints[c]!.size, checkpoints[c++]!.note));
  events.forEach((e, i) => {
    const leaf = first + i;
    if (Number(e.leaf_index) !== leaf) throw new Error(`the audit log has no leaf ${leaf}`);
    lines.push(leafLine(leaf, e));
    while (c < checkpoints.length && checkpoints[c]!.size === leaf + 1) lines.push(checkpointLine(checkpoints[c]!.size, checkpoints[c++]!.note));
  });
  const lastCheckpoint = checkpoints.at(-1)?.size;
  return { lines, next: { nextLeaf: end, nextCheckpoint: lastCheckpoint === undefined ? from.nextCheckpoint : lastCheckpoint + 1 }, events: events.length };
}
