import type pg from 'pg';
import { readFileSinkPosition } from '../sink/file.ts';

/**
 * Where each configured outside sink stands, for retention to stay behind it (docs/audit-log.md,
 * "Append-only and retention"): the file sink's position read back from its files, changing
 * nothing in them; stdout's from its row of audit_sink_cursors (no row: it has delivered nothing),
 * which bounds retention even where stdout is not configured.
 * A configured sink whose position cannot be read refuses the whole reading: retention must not
 * guess where a sink is.
 */
export interface SinkAt {
  /** As the deliverer names it (src/audit/sink): `file:<dir>` or `stdout`. */
  readonly sink: string;
  /** The first leaf the sink has not delivered. */
  readonly nextLeaf: number;
}

export interface ConfiguredSinks {
  readonly sinkDir: string | null;
  readonly sinkStdout: boolean;
}

export class SinkUnreadableError extends Error {
  constructor(readonly sink: string, readonly reason: string) {
    super(`the audit sink ${sink} cannot be read (${reason}), so retention cannot tell what it has delivered; nothing was removed`);
  }
}

// A code (ENOENT, EACCES, a SQLSTATE), never a message: a database's may quote SQL.
const reasonOf = (e: unknown): string => {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code) ? code : 'unreadable';
};

export async function sinkPositions(sinks: ConfiguredSinks, db: pg.ClientBase): Promise<SinkAt[]> {
  const at: SinkAt[] = [];
  if (sinks.sinkDir !== null) {
    const sink = `file:${sinks.sinkDir}`;
    try {
      at.push({ sink, nextLeaf: (await readFileSinkPosition(sinks.sinkDir)).nextLeaf });
    } catch (e) {
      throw new SinkUnreadableError(sink, reasonOf(e));
    }
  }
  // stdout's cursor counts even where this environment leaves stdout off: its row says some
  // gateway delivers there, and a job run without the gateways' settings must not outrun it.
  let stdout: { next_leaf: string } | undefined;
  try {
    stdout = (await db.query<{ next_leaf: string }>("SELECT next_leaf FROM phigate.audit_sink_cursors WHERE sink = 'stdout'")).rows[0];
  } catch (e) {
    throw new SinkUnreadableError('stdout', reasonOf(e));
  }
  if (sinks.sinkStdout || stdout !== undefined) at.push({ sink: 'stdout', nextLeaf: stdout === undefined ? 0 : Number(stdout.next_leaf) });
  return at;
}
