import type { Sink } from './sink.ts';

/**
 * The sink's lines on standard output, for a SIEM's shipper. Standard output cannot be read back,
 * so the position is the row `stdout` of phigate.audit_sink_cursors, which the deliverer writes in
 * its transaction after the lines were handed to the pipe (deliver.ts): at least once. Lines go
 * out in chunks of at most PIPE_BUF bytes where they can, so the gateway's own log lines, also on
 * standard output, never land inside one.
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
    async write(lines) {
      let chunk = '';
      for (const line of lines) {
        if (chunk !== '' && Buffer.byteLength(chunk) + Buffer.byteLength(line) > PIPE_BUF) {
          await write(chunk);
          chunk = '';
        }
        chunk += line;
      }
      if (chunk !== '') await write(chunk);
    },
  };
}
