import type { Sink } from './sink.ts';

/**
 * The sink's lines on standard output, for a SIEM's shipper. Standard output cannot be read back,
 * so the position is the row `stdout` of phigate.audit_sink_cursors, written in the delivery's
 * transaction after the lines were handed to the pipe: at least once. Lines go out in chunks of at
 * most PIPE_BUF bytes where they can, so the gateway's own log lines, also on standard output,
 * never land inside one.
 */
const PIPE_BUF = 4096;

export function stdoutSink(out: NodeJS.WritableStream = process.stdout): Sink {
  const write = (chunk: string) => new Promise<void>((resolve, reject) => out.write(chunk, (err) => (err ? reject(err) : resolve())));
  return {
    name: 'stdout',
    async position(client) {
      const { rows } = await client.query<{ next_leaf: string; next_checkpoint: string }>(
        "SELECT next_leaf, next_checkpoint FROM phigate.audit_sink_cursors WHERE sink = 'stdout'",
      );
      const r = rows[0];
      return r === undefined ? { nextLeaf: 0, nextCheckpoint: 0 } : { nextLeaf: Number(r.next_leaf), nextCheckpoint: Number(r.next_checkpoint) };
    },
    async write(lines, next, client) {
      let chunk = '';
      for (const line of lines) {
        if (chunk !== '' && Buffer.byteLength(chunk) + Buffer.byteLength(line) > PIPE_BUF) {
          await write(chunk);
          chunk = '';
        }
        chunk += line;
      }
      if (chunk !== '') await write(chunk);
      await client.query(
        `INSERT INTO phigate.audit_sink_cursors AS c (sink, next_leaf, next_checkpoint) VALUES ('stdout', $1, $2)
         ON CONFLICT (sink) DO UPDATE SET next_leaf = excluded.next_leaf, next_checkpoint = excluded.next_checkpoint, updated_at = clock_timestamp()`,
        [String(next.nextLeaf), String(next.nextCheckpoint)],
      );
    },
  };
}
