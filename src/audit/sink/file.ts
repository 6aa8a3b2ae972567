import { open, readdir, readFile, realpath, stat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { checkSinkDir, ConfigError } from '../../config.ts';
import { parseSinkLine, type LeafLine } from './lines.ts';
import type { Sink, SinkPosition } from './sink.ts';

/**
 * JSON lines files in one directory, `audit-<first leaf, 20 digits>.jsonl`, a new file once the
 * current one passes `maxBytes`. Every write is appended and fsync'd (and the directory, when a
 * file is created) before it returns. The files are their own cursor: the position is read back
 * from the last complete lines on disk, a torn last line (a crash mid-write) is cut off first, so
 * the position can never run ahead of what was made durable. The deliverer also reports each
 * position in the sink's row of phigate.audit_sink_cursors, for retention; delivery never reads it.
 */
const FILE = /^audit-(\d{20})\.jsonl$/;
const fileName = (firstLeaf: number) => `audit-${String(firstLeaf).padStart(20, '0')}.jsonl`;

/**
 * The position `files` (sorted names) hold: after the last leaf line and the last checkpoint line,
 * read from the newest file back. `linesOf` gives a file's complete lines.
 */
async function positionOf(files: readonly string[], linesOf: (file: string) => Promise<string[]>): Promise<SinkPosition> {
  let nextLeaf: number | null = null;
  let nextCheckpoint: number | null = null;
  for (let i = files.length - 1; i >= 0 && (nextLeaf === null || nextCheckpoint === null); i--) {
    const lines = await linesOf(files[i]!);
    for (let j = lines.length - 1; j >= 0 && (nextLeaf === null || nextCheckpoint === null); j--) {
      const line = parseSinkLine(lines[j]!);
      if (line !== null && line.audit !== 'checkpoint') nextLeaf ??= line.leaf + 1;
      if (line?.audit === 'checkpoint') nextCheckpoint ??= line.size + 1;
    }
    // A file starts at its first leaf: without a leaf's line in it, that is where to resume.
    nextLeaf ??= Number(FILE.exec(files[i]!)![1]);
  }
  return { nextLeaf: nextLeaf ?? 0, nextCheckpoint: nextCheckpoint ?? 0 };
}

/**
 * The position of the file sink in `dir` as another process sees it, changing nothing: a torn last
 * line (a crash, or a deliverer appending right now) is left out rather than cut off, and a
 * missing directory is not created. What it counts is made durable first (the deliverer may not
 * have reached its fsync yet), so a crash cannot take back lines it counted. Throws what the file
 * system throws when `dir` cannot be read.
 */
export async function readFileSinkPosition(dir: string): Promise<SinkPosition> {
  const files = (await readdir(dir)).filter((f) => FILE.test(f)).sort();
  await syncPath(dir);
  return positionOf(files, async (file) => {
    const h = await open(path.join(dir, file), 'r');
    try {
      const text = await h.readFile('utf8');
      // After the read: the sync then covers every line read.
      await h.sync();
      return text.slice(0, text.lastIndexOf('\n') + 1).split('\n').slice(0, -1);
    } finally {
      await h.close();
    }
  });
}

async function syncPath(p: string): Promise<void> {
  const h = await open(p, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * The sink's name (sink.ts): one directory, however it was spelled, through whichever links, is
 * one sink, so replicas given different paths to it share one lock and one cursor row. Throws what
 * the file system throws when `dir` does not resolve.
 */
export const fileSinkName = async (dir: string): Promise<string> => fileSinkNameOf(await realpath(dir));

/** The name of the sink in `dir` as given: the one spelling of a file sink's name. */
export const fileSinkNameOf = (dir: string): string => `file:${dir}`;

/**
 * The sink in `dir`, created when missing. `dir` is resolved once, here, and the sink reads and
 * writes the directory it resolved to: the name it delivers under stays the directory it writes.
 * A directory that cannot be made or resolved stops start-up, naming the setting.
 */
export async function fileSink(configured: string, maxBytes: number): Promise<Sink> {
  let dir: string;
  try {
    await mkdir(configured, { recursive: true, mode: 0o700 });
    dir = await realpath(configured);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new ConfigError('PHIGATE_AUDIT_SINK_DIR', `cannot be made or resolved as a directory${typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code) ? ` (${code})` : ''}`);
  }
  checkSinkDir(dir, true);
  // Known a directory only now: realpath resolves a file as readily.
  if (!(await stat(dir)).isDirectory()) throw new ConfigError('PHIGATE_AUDIT_SINK_DIR', 'is not a directory');
  // What this process last wrote; re-read from disk whenever the newest file is not as it left it.
  let known: { file: string; size: number; position: SinkPosition } | null = null;

  async function files(): Promise<string[]> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return (await readdir(dir)).filter((f) => FILE.test(f)).sort();
  }

  /** Cuts a torn last line off `file`; its complete lines. */
  async function completeLines(file: string): Promise<string[]> {
    const full = path.join(dir, file);
    const text = await readFile(full, 'utf8');
    const end = text.lastIndexOf('\n') + 1;
    if (end < Buffer.byteLength(text)) {
      const h = await open(full, 'r+');
      try {
        await h.truncate(Buffer.byteLength(text.slice(0, end)));
        await h.sync();
      } finally {
        await h.close();
      }
    }
    return text.slice(0, end).split('\n').slice(0, -1);
  }

  return {
    name: fileSinkNameOf(dir),
    async position() {
      const all = await files();
      const newest = all.at(-1);
      if (newest === undefined) return { nextLeaf: 0, nextCheckpoint: 0 };
      if (known !== null && known.file === newest && (await stat(path.join(dir, newest))).size === known.size) return known.position;
      const position = await positionOf(all, completeLines);
      known = { file: newest, size: (await stat(path.join(dir, newest))).size, position };
      return position;
    },
    async write(lines, next) {
      if (lines.length === 0) return;
      const all = await files();
      let file = all.at(-1);
      let size = file === undefined ? 0 : (await stat(path.join(dir, file))).size;
      let created = false;
      if (file === undefined || size >= maxBytes) {
        const first = lines.map(parseSinkLine).find((l): l is LeafLine => l !== null && l.audit !== 'checkpoint');
        file = fileName(first === undefined ? next.nextLeaf : first.leaf);
        // The same first leaf again (only checkpoint lines since): keep appending to it.
        created = !all.includes(file);
        if (created) size = 0;
      }
      const data = Buffer.from(lines.join(''), 'utf8');
      const h = await open(path.join(dir, file), 'a', 0o600);
      try {
        await h.write(data);
        await h.sync();
      } finally {
        await h.close();
      }
      if (created) await syncPath(dir);
      known = { file, size: size + data.length, position: next };
    },
  };
}
