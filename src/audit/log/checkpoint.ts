/**
 * The C2SP tlog-checkpoint body: the log's origin, its size and its root, one per line, each line
 * ending in a newline. It is what the signed note signs; a verifier needs only these bytes and
 * the public key.
 */
export interface Checkpoint {
  readonly origin: string;
  readonly size: number;
  readonly root: Buffer;
}

const ORIGIN = /^[\x21-\x7e][\x20-\x7e]*$/;

export function formatCheckpoint(c: Checkpoint): string {
  if (!ORIGIN.test(c.origin)) throw new RangeError('a checkpoint origin is one line of printable ASCII');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new RangeError('a checkpoint size is a whole number');
  if (c.root.length !== 32) throw new RangeError('a checkpoint root is 32 bytes');
  return `${c.origin}\n${c.size}\n${c.root.toString('base64')}\n`;
}

/** Reads a checkpoint body; null when it is not one (extension lines after the third are allowed and ignored). */
export function parseCheckpoint(text: string): Checkpoint | null {
  if (!text.endsWith('\n')) return null;
  const [origin, size, root] = text.slice(0, -1).split('\n');
  if (origin === undefined || size === undefined || root === undefined || !ORIGIN.test(origin)) return null;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size) || !Number.isSafeInteger(Number(size))) return null;
  const bytes = Buffer.from(root, 'base64');
  if (bytes.length !== 32 || bytes.toString('base64') !== root) return null;
  return { origin, size: Number(size), root: bytes };
}
