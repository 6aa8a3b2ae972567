import path from 'node:path';
import type pg from 'pg';
import { fileSinkName, fileSinkNameOf, readFileSinkPosition } from '../sink/file.ts';

/**
 * Where each outside sink stands, for retention to stay behind it (docs/audit-log.md, "Append-only
 * and retention"): every row of audit_sink_cursors, which the deliverer writes for every sink it
 * delivers to, so that a sink bounds retention even where the job's environment does not configure
 * it; and each configured sink's live position, the file sink's read back from its files
 * (changing nothing in them), stdout's its row (no row: it has delivered nothing). A file sink
 * that is configured and has a row stands at the lower of the two.
 * A position that cannot be read refuses the whole reading: retention must not guess where a
 * sink is.
 */
export interface SinkAt {
  /** As the deliverer names it (src/audit/sink): `file:<real directory>` or `stdout`. */
  readonly sink: string;
  /** The first leaf the sink has not delivered. */
  readonly nextLeaf: number;
}

export interface ConfiguredSinks {
  readonly sinkDir: string | null;
  readonly sinkStdout: boolean;
}

export class SinkUnreadableError extends Error {
  /** `sink` null: the sinks' rows in the database could not be read. */
  constructor(readonly sink: string | null, readonly reason: string) {
    super(
      sink === null
        ? `the audit sinks' positions in the database cannot be read (${reason}), so retention cannot tell what they have delivered; nothing was removed`
        : `the audit sink ${sink} cannot be read (${reason}), so retention cannot tell what it has delivered; nothing was removed`,
    );
  }
}

// A code (ENOENT, EACCES, a SQLSTATE), never a message: a database's may quote SQL.
const reasonOf = (e: unknown): string => {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code) ? code : 'unreadable';
};

export async function sinkPositions(sinks: ConfiguredSinks, db: pg.ClientBase): Promise<SinkAt[]> {
  const at = new Map<string, number>();
  const lower = (sink: string, nextLeaf: number) => at.set(sink, Math.min(nextLeaf, at.get(sink) ?? nextLeaf));
  try {
    const { rows } = await db.query<{ sink: string; next_leaf: string }>('SELECT sink, next_leaf FROM phigate.audit_sink_cursors ORDER BY sink');
    for (const r of rows) lower(r.sink, Number(r.next_leaf));
  } catch (e) {
    throw new SinkUnreadableError(null, reasonOf(e));
  }
  if (sinks.sinkDir !== null) {
    // A directory that does not resolve is named as it was spelled.
    let sink = fileSinkNameOf(path.resolve(sinks.sinkDir));
    try {
      sink = await fileSinkName(sinks.sinkDir);
      lower(sink, (await readFileSinkPosition(sinks.sinkDir)).nextLeaf);
    } catch (e) {
      throw new SinkUnreadableError(sink, reasonOf(e));
    }
  }
  if (sinks.sinkStdout && !at.has('stdout')) at.set('stdout', 0);
  return [...at].map(([sink, nextLeaf]) => ({ sink, nextLeaf }));
}
