import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';

/**
 * C2SP signed-note with Ed25519: the note text, a blank line, then one line per signature,
 * `— <key name> <base64(key hash || signature)>`. The key hash is the first four bytes of
 * SHA-256(name || "\n" || 0x01 || public key), and a verifier key is written
 * `<name>+<hex key hash>+<base64(0x01 || public key)>`, as the Go sumdb/note package does.
 */
const ED25519 = 0x01;
const SIG_PREFIX = '\u2014 ';
const NAME = /^[^\s+]+$/;

export interface NoteSigner {
  readonly name: string;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;
  sign(message: Buffer): Promise<Buffer>;
}

export function keyHash(name: string, publicKey: Buffer): Buffer {
  return createHash('sha256').update(`${name}\n`).update(Buffer.from([ED25519])).update(publicKey).digest().subarray(0, 4);
}

export function verifierKey(name: string, publicKey: Buffer): string {
  if (!NAME.test(name)) throw new RangeError('a key name has no spaces and no +');
  return `${name}+${keyHash(name, publicKey).toString('hex')}+${Buffer.concat([Buffer.from([ED25519]), publicKey]).toString('base64')}`;
}

export interface Verifier {
  readonly name: string;
  readonly hash: Buffer;
  readonly key: KeyObject;
}

/** Parses `<name>+<hash>+<key>`; null unless it is a well-formed Ed25519 verifier key whose hash matches. */
export function parseVerifierKey(text: string): Verifier | null {
  // Split at the first two '+' only: the base64 key may contain '+' itself.
  const t = text.trim();
  const first = t.indexOf('+');
  const second = t.indexOf('+', first + 1);
  if (first < 0 || second < 0) return null;
  const [name, hashHex, keyB64] = [t.slice(0, first), t.slice(first + 1, second), t.slice(second + 1)];
  const raw = Buffer.from(keyB64, 'base64');
  if (!NAME.test(name) || !/^[0-9a-f]{8}$/.test(hashHex) || raw.length !== 33 || raw[0] !== ED25519) return null;
  const publicKey = raw.subarray(1);
  if (!keyHash(name, publicKey).equals(Buffer.from(hashHex, 'hex'))) return null;
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey.toString('base64url') }, format: 'jwk' });
  return { name, hash: Buffer.from(hashHex, 'hex'), key };
}

export async function signNote(text: string, signer: NoteSigner): Promise<string> {
  if (!text.endsWith('\n')) throw new RangeError('a note text ends with a newline');
  if (!NAME.test(signer.name)) throw new RangeError('a key name has no spaces and no +');
  const signature = await signer.sign(Buffer.from(text, 'utf8'));
  if (signature.length !== 64) throw new RangeError('an Ed25519 signature is 64 bytes');
  const line = `${SIG_PREFIX}${signer.name} ${Buffer.concat([keyHash(signer.name, signer.publicKey), signature]).toString('base64')}\n`;
  return `${text}\n${line}`;
}

/**
 * The note's text when a signature by `verifier` checks out, else null. Signatures by other keys
 * are ignored, as the format intends; a note without a valid one by this key is refused.
 */
export function openNote(note: string, verifier: Verifier): string | null {
  const split = note.lastIndexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) return null;
  const text = note.slice(0, split + 1);
  for (const line of note.slice(split + 2, -1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) return null;
    const [name, b64, extra] = line.slice(SIG_PREFIX.length).split(' ');
    if (name === undefined || b64 === undefined || extra !== undefined) return null;
    const sig = Buffer.from(b64, 'base64');
    // One encoding per signature: Node's decoder ignores the unused low bits of the last character.
    if (sig.toString('base64') !== b64) return null;
    if (name !== verifier.name || sig.length !== 68 || !sig.subarray(0, 4).equals(verifier.hash)) continue;
    if (verifySignature(null, Buffer.from(text, 'utf8'), verifier.key, sig.subarray(4))) return text;
  }
  return null;
}
