/**
 * The C2SP tlog-checkpoint body: the log's origin, its size and its root, one per line, each line
 * ending in a newline; then phigate's one extension line, `time <RFC 3339 UTC, milliseconds>`:
 * when the checkpointer signed it, by the database's clock (the clock that stamps `occurred_at`),
 * or by the checkpointer's own when that is later (seal.ts).
 * It is what the signed note signs; a verifier needs only these bytes and the public key.
 *
 * The time is what a partial `audit verify --since T` chooses its range by, and where `audit
 * retain` may end (docs/audit-log.md): signed, so nobody without the signing key can move it,
 * unlike any column of the database.
 */
export interface Checkpoint {
  readonly origin: string;
  readonly size: number;
  readonly root: Buffer;
  /**
   * Milliseconds since the epoch, not earlier than the moment the signed head was read: every leaf
   * of the checkpoint was committed before it. Absent from checkpoints signed before the line existed.
   */
  readonly time?: number;
}

const ORIGIN = /^[\x21-\x7e][\x20-\x7e]*$/;
const TIME = /^time (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)$/;

export function formatCheckpoint(c: Checkpoint): string {
  if (!ORIGIN.test(c.origin)) throw new RangeError('a checkpoint origin is one line of printable ASCII');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new RangeError('a checkpoint size is a whole number');
  if (c.root.length !== 32) throw new RangeError('a checkpoint root is 32 bytes');
  if (c.time !== undefined && !(Number.isSafeInteger(c.time) && c.time >= 0 && c.time <= 253_402_300_799_999)) {
    throw new RangeError('a checkpoint time is whole milliseconds from 1970 to 9999');
  }
  const time = c.time === undefined ? '' : `time ${new Date(c.time).toISOString()}\n`;
  return `${c.origin}\n${c.size}\n${c.root.toString('base64')}\n${time}`;
}

/**
 * The time of the extension lines: only a single, exactly spelled `time` line counts. Anything
 * else leaves the checkpoint untimed, which a partial verify treats as covering nothing it may skip.
 */
function timeOf(extensions: readonly string[]): number | undefined {
  const lines = extensions.filter((l) => l.startsWith('time '));
  const m = lines.length === 1 ? TIME.exec(lines[0]!) : null;
  if (m === null) return undefined;
  const ms = Date.parse(m[1]!);
  return Number.isNaN(ms) || new Date(ms).toISOString() !== m[1] ? undefined : ms;
}

/** Reads a checkpoint body; null when it is not one (extension lines after the third are allowed: `time` is read, others ignored). */
export function parseCheckpoint(text: string): Checkpoint | null {
  if (!text.endsWith('\n')) return null;
  const [origin, size, root, ...extensions] = text.slice(0, -1).split('\n');
  if (origin === undefined || size === undefined || root === undefined || !ORIGIN.test(origin)) return null;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size) || !Number.isSafeInteger(Number(size))) return null;
  const bytes = Buffer.from(root, 'base64');
  if (bytes.length !== 32 || bytes.toString('base64') !== root) return null;
  const time = timeOf(extensions);
  return time === undefined ? { origin, size: Number(size), root: bytes } : { origin, size: Number(size), root: bytes, time };
}
