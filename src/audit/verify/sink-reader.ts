import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseSinkLine } from '../sink/lines.ts';

/**
 * Reads the file sink (docs/audit-log.md, "Outside sink") back in leaf order: its files are named
 * by their first leaf, so sorting the names sorts the lines. A torn last line (a crash while
 * appending) is left out.
 */
export interface SinkEvent {
  readonly leaf: number;
  readonly id: string;
  readonly canonical: Buffer;
}

export interface SinkCheckpoint {
  readonly size: number;
  readonly note: string;
}

export class SinkFormatError extends Error {
  constructor(readonly file: string, readonly line: number, reason: string) {
    super(`sink ${path.basename(file)} line ${line}: ${reason}`);
  }
}

const FILE = /^audit-\d{20}\.jsonl$/;

/** The sink's files and how many bytes each holds now: the reader reads no further. */
async function sinkExtent(dir: string): Promise<{ file: string; bytes: number }[]> {
  const files = (await readdir(dir)).filter((f) => FILE.test(f)).sort().map((f) => path.join(dir, f));
  return Promise.all(files.map(async (file) => ({ file, bytes: (await stat(file)).size })));
}

export interface SinkReader {
  /** The sink's copy of leaf `leaf`, or null when the sink has not got that far (or holds no such leaf). */
  eventAt(leaf: number): Promise<SinkEvent | null>;
  /** Every checkpoint line read so far, by size (all of them once eventAt has gone past the end). */
  readonly checkpoints: ReadonlyMap<number, SinkCheckpoint>;
  /** Reads the rest: every later event (each passed to onEvent) and checkpoint. */
  drain(onEvent: (e: SinkEvent) => void): Promise<void>;
}

/**
 * Fixes the sink's extent now; what the replicas append later is not read. Every line in the sink
 * was delivered from committed rows, so a database snapshot taken after this holds each of them.
 */
export async function openSink(dir: string): Promise<SinkReader> {
  const extent = await sinkExtent(dir);
  const files = extent.map((e) => e.file);
  const checkpoints = new Map<number, SinkCheckpoint>();
  let last: SinkEvent | null = null;

  async function* lines(): AsyncGenerator<SinkEvent> {
    for (const { file, bytes } of extent) {
      if (bytes === 0) continue;
      // A line being appended at the moment of the extent is cut here: a torn last line, left out.
      const input = createReadStream(file, { encoding: 'utf8', end: bytes - 1 });
      const rl = createInterface({ input, crlfDelay: Infinity });
      let n = 0;
      let torn = false;
      for await (const line of rl) {
        n++;
        if (torn) throw new SinkFormatError(file, n - 1, 'is not a sink line');
        const o = parseSinkLine(line);
        if (o === null) {
          // Only the very last line of the newest file may be torn (a crash while appending).
          if (file !== files[files.length - 1]) throw new SinkFormatError(file, n, 'is not a sink line');
          torn = true;
          continue;
        }
        if (o.audit === 'checkpoint') {
          const seen = checkpoints.get(o.size);
          if (seen !== undefined && seen.note !== o.note) throw new SinkFormatError(file, n, `repeats checkpoint ${o.size} with another note`);
          checkpoints.set(o.size, { size: o.size, note: o.note });
        } else {
          if (typeof o.canonical !== 'string') throw new SinkFormatError(file, n, 'is an event line without its canonical bytes');
          const e: SinkEvent = { leaf: o.leaf, id: o.id, canonical: Buffer.from(o.canonical, 'base64') };
          // A redelivery (a deliverer that resumed from an older position): the first copy stands.
          // The copy right after its original must match it; older repeats are only skipped.
          if (last !== null && e.leaf <= last.leaf) {
            if (e.leaf === last.leaf && !(e.id === last.id && e.canonical.equals(last.canonical))) {
              throw new SinkFormatError(file, n, `repeats leaf ${e.leaf} with other content`);
            }
            continue;
          }
          last = e;
          yield e;
        }
      }
    }
  }

  const it = lines();
  let ahead: SinkEvent | null = null;
  let done = false;
  const next = async (): Promise<SinkEvent | null> => {
    if (ahead !== null) {
      const a = ahead;
      ahead = null;
      return a;
    }
    if (done) return null;
    const r = await it.next();
    if (r.done) {
      done = true;
      return null;
    }
    return r.value;
  };

  return {
    checkpoints,
    async eventAt(leaf) {
      for (;;) {
        const e = await next();
        if (e === null) return null;
        if (e.leaf < leaf) continue;
        if (e.leaf > leaf) {
          ahead = e;
          return null;
        }
        return e;
      }
    },
    async drain(onEvent) {
      for (let e = await next(); e !== null; e = await next()) onEvent(e);
    },
  };
}
