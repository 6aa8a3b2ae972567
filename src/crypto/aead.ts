import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * AES-256-GCM in one call per value. node:crypto has no one-shot AEAD: every value builds a
 * Decipheriv and crosses into C++ four or five times, more than half of a field's open (5.8 us
 * for a 10-60 byte value; 2.7 us through the addon). The optional addon (native/aead.c, `npm run
 * build:native`) makes the same OpenSSL calls, through the OpenSSL the node binary exports, in one.
 * Both produce the same bytes; node:crypto is used whenever the addon was not built or does not load.
 */
export type AeadImplementation = 'native' | 'node:crypto';
/** PHIGATE_AEAD: `auto` takes the addon when it loads, `native` requires it, `node` never uses it. */
export type AeadMode = 'auto' | 'native' | 'node';

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

interface Gcm {
  readonly name: AeadImplementation;
  /** Writes the plaintext to the start of `out`: its length, or -1 when the tag does not verify. */
  open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array, out: Uint8Array): number;
  /** Writes the ciphertext and then the 16-byte tag to the start of `out`: their length. */
  seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): number;
  /** See openText below; the arguments are checked by the implementation. */
  openText(key: Uint8Array, envelope: Uint8Array, nonceAt: number, aad: Uint8Array, aadLength: number): string | null;
}

// ignoreBOM keeps a leading U+FEFF that was part of the value; fatal refuses bytes that were not
// UTF-8 text. Not streaming, so one decoder serves every call.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const isZero = (key: Uint8Array): boolean => key.every((b) => b === 0);
// Bounded like the envelope's scratch: one forged value of a gigabyte must not keep a gigabyte for
// the life of the process; longer values get a buffer of their own, wiped the same way.
const NODE_SCRATCH_MAX = 256 * 1024;
let nodeScratch = Buffer.alloc(256);

const nodeGcm: Gcm = {
  name: 'node:crypto',
  open(key, iv, aad, ciphertext, tag, out) {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    const plain = decipher.update(ciphertext);
    try {
      // GCM's final() yields no bytes; it checks the tag and throws when it does not verify.
      decipher.final();
      out.set(plain);
      return plain.length;
    } catch {
      return -1;
    } finally {
      plain.fill(0);
    }
  },
  seal(key, iv, aad, plaintext, out) {
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    const body = cipher.update(plaintext);
    cipher.final();
    out.set(body);
    out.set(cipher.getAuthTag(), body.length);
    return body.length + TAG_BYTES;
  },
  openText(key, envelope, nonceAt, aad, aadLength) {
    checkEnvelope(key, envelope, nonceAt, aad, aadLength);
    if (isZero(key)) return null;
    const length = envelope.length - nonceAt - IV_BYTES - TAG_BYTES;
    if (nodeScratch.length < length && length <= NODE_SCRATCH_MAX) nodeScratch = Buffer.alloc(length);
    const out = length <= nodeScratch.length ? nodeScratch : Buffer.alloc(length);
    const iv = envelope.subarray(nonceAt, nonceAt + IV_BYTES);
    const tag = envelope.subarray(envelope.length - TAG_BYTES);
    if (nodeGcm.open(key, iv, aad.subarray(0, aadLength), envelope.subarray(nonceAt + IV_BYTES, envelope.length - TAG_BYTES), tag, out) !== length) return null;
    try {
      return UTF8.decode(out.subarray(0, length));
    } catch {
      return null;
    } finally {
      out.fill(0, 0, length);
    }
  },
};

function checkEnvelope(key: Uint8Array, envelope: Uint8Array, nonceAt: number, aad: Uint8Array, aadLength: number): void {
  if (key.length !== KEY_BYTES) throw new RangeError('aead: the key must be 32 bytes');
  if (!Number.isInteger(nonceAt) || nonceAt < 0 || nonceAt > envelope.length - IV_BYTES - TAG_BYTES) throw new RangeError('aead: the envelope is too short');
  if (!Number.isInteger(aadLength) || aadLength < 0 || aadLength > aad.length) throw new RangeError('aead: the AAD length is out of range');
}

// The addon sits beside the sources: src/crypto/ and, compiled, dist/crypto/ are both two levels down.
const ADDON = new URL('../../native/build/Release/aead.node', import.meta.url);

// A known answer, checked against node:crypto both ways before the addon is trusted with a value,
// and a forged tag refused with the output wiped.
function selfTest(gcm: Gcm): boolean {
  const key = Buffer.alloc(KEY_BYTES, 0x42);
  const iv = Buffer.alloc(IV_BYTES, 0x24);
  const aad = Buffer.from('phigate/aead/self-test');
  const plain = Buffer.from('a value of about thirty bytes.');
  const sealed = Buffer.alloc(plain.length + TAG_BYTES);
  const expected = Buffer.alloc(sealed.length);
  if (gcm.seal(key, iv, aad, plain, sealed) !== sealed.length || nodeGcm.seal(key, iv, aad, plain, expected) !== sealed.length || !sealed.equals(expected)) return false;
  const body = sealed.subarray(0, plain.length);
  const tag = sealed.subarray(plain.length);
  const opened = Buffer.alloc(plain.length);
  if (gcm.open(key, iv, aad, body, tag, opened) !== plain.length || !opened.equals(plain)) return false;
  // The same value as an envelope (a 3-byte header, the IV, the ciphertext, the tag) and the AAD
  // at the start of a longer buffer, opened to its text; refused under a zero key.
  const envelope = Buffer.concat([Buffer.from('hdr'), iv, sealed]);
  const longAad = Buffer.concat([aad, Buffer.from('not part of the AAD')]);
  if (gcm.openText(key, envelope, 3, longAad, aad.length) !== plain.toString('utf8')) return false;
  if (gcm.openText(key, envelope, 3, longAad, aad.length + 1) !== null || gcm.openText(Buffer.alloc(KEY_BYTES), envelope, 3, longAad, aad.length) !== null) return false;
  tag[0]! ^= 1;
  // A tag that fails must also take back what the call wrote: the output holds no plaintext after.
  return gcm.open(key, iv, aad, body, tag, opened) === -1 && opened.every((b) => b === 0);
}

function loadNative(): Gcm | string {
  try {
    const addon = createRequire(import.meta.url)(fileURLToPath(ADDON)) as Partial<Pick<Gcm, 'open' | 'seal' | 'openText'>>;
    if (!addon.open || !addon.seal || !addon.openText) return 'the addon is out of date (npm run build:native)';
    const gcm: Gcm = { name: 'native', open: addon.open, seal: addon.seal, openText: addon.openText };
    return selfTest(gcm) ? gcm : 'the addon failed its self-test';
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === 'MODULE_NOT_FOUND' ? 'the addon is not built (npm run build:native)' : `the addon did not load (${code ?? (e as Error).name})`;
  }
}

const native = loadNative();
let active: Gcm = typeof native === 'string' ? nodeGcm : native;

/** Why the addon is not available, or null when it is. */
export function nativeUnavailable(): string | null {
  return typeof native === 'string' ? native : null;
}

/**
 * Chooses the implementation for the whole process (it holds no state of its own: a choice, like
 * an OpenSSL engine, not a setting passed around). `native` throws when the addon is unavailable.
 */
export function useAead(mode: AeadMode): AeadImplementation {
  if (mode === 'node') active = nodeGcm;
  else if (typeof native !== 'string') active = native;
  else if (mode === 'native') throw new Error(`native was required, but ${native}`);
  else active = nodeGcm;
  return active.name;
}

export function aeadImplementation(): AeadImplementation {
  return active.name;
}

function checkLengths(key: Uint8Array, iv: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new RangeError('aead: the key must be 32 bytes');
  if (iv.length !== IV_BYTES) throw new RangeError('aead: the IV must be 12 bytes');
}

/**
 * AES-256-GCM decryption into `out` (at least as long as `ciphertext`): true when the tag verifies
 * and the plaintext is in `out`'s first `ciphertext.length` bytes; false leaves none of it there.
 * For callers that decode the bytes at once and wipe them: no Buffer per value.
 */
export function openGcmInto(out: Uint8Array, key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): boolean {
  checkLengths(key, iv);
  if (tag.length !== TAG_BYTES) throw new RangeError('aead: the tag must be 16 bytes');
  if (out.length < ciphertext.length) throw new RangeError('aead: the output is shorter than the ciphertext');
  return active.open(key, iv, aad, ciphertext, tag, out) === ciphertext.length;
}

/**
 * Opens `envelope`, which holds any header, then the 12-byte IV at `nonceAt`, the ciphertext and
 * the 16-byte tag, with the AAD `aad[0, aadLength)`: the plaintext as text, or null when the tag
 * does not verify, the plaintext is not well-formed UTF-8, or the key is all zeros (wiped). With
 * the addon this is one call and no Buffer per value, and the plaintext's bytes live only in
 * memory wiped before it returns.
 */
export function openText(key: Uint8Array, envelope: Uint8Array, nonceAt: number, aad: Uint8Array, aadLength: number): string | null {
  return active.openText(key, envelope, nonceAt, aad, aadLength);
}

/** AES-256-GCM decryption: the plaintext, or null when the tag does not verify. */
export function openGcm(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): Buffer | null {
  const out = Buffer.alloc(ciphertext.length);
  return openGcmInto(out, key, iv, aad, ciphertext, tag) ? out : null;
}

/** AES-256-GCM encryption: the ciphertext followed by the 16-byte tag. `iv` must never repeat under one key. */
export function sealGcm(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer {
  checkLengths(key, iv);
  const out = Buffer.alloc(plaintext.length + TAG_BYTES);
  if (active.seal(key, iv, aad, plaintext, out) !== out.length) throw new Error('aead: encryption failed');
  return out;
}
