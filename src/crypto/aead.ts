import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * AES-256-GCM in one call per value. node:crypto has no one-shot AEAD: every value builds a
 * Cipheriv object and crosses into C++ four or five times, about 3 us of a 4.8 us open on a
 * 30-byte field. The optional addon (native/aead.c, `npm run build:native`) does the same
 * OpenSSL calls, through the OpenSSL the node binary exports, in one. Both produce the same bytes;
 * node:crypto is used whenever the addon was not built or does not load.
 */
export type AeadImplementation = 'native' | 'node:crypto';
/** PHIGATE_AEAD: `auto` takes the addon when it loads, `native` requires it, `node` never uses it. */
export type AeadMode = 'auto' | 'native' | 'node';
export const AEAD_MODES: readonly AeadMode[] = ['auto', 'native', 'node'];

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

interface Gcm {
  readonly name: AeadImplementation;
  /** The plaintext, or null when the tag does not verify. */
  open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): Buffer | null;
  /** The ciphertext followed by the 16-byte tag. */
  seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer;
}

const nodeGcm: Gcm = {
  name: 'node:crypto',
  open(key, iv, aad, ciphertext, tag) {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    const plain = decipher.update(ciphertext);
    try {
      // GCM's final() yields no bytes; it checks the tag and throws when it does not verify.
      decipher.final();
    } catch {
      plain.fill(0);
      return null;
    }
    return plain;
  },
  seal(key, iv, aad, plaintext) {
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    const body = cipher.update(plaintext);
    cipher.final();
    return Buffer.concat([body, cipher.getAuthTag()]);
  },
};

// The addon sits beside the sources: src/crypto/ and, compiled, dist/crypto/ are both two levels down.
const ADDON = new URL('../../native/build/Release/aead.node', import.meta.url);

// A known answer, checked against node:crypto both ways before the addon is trusted with a value.
function selfTest(gcm: Gcm): boolean {
  const key = Buffer.alloc(KEY_BYTES, 0x42);
  const iv = Buffer.alloc(IV_BYTES, 0x24);
  const aad = Buffer.from('phigate/aead/self-test');
  const plain = Buffer.from('a value of about thirty bytes.');
  const sealed = gcm.seal(key, iv, aad, plain);
  if (!sealed.equals(nodeGcm.seal(key, iv, aad, plain))) return false;
  const body = sealed.subarray(0, plain.length);
  const tag = sealed.subarray(plain.length);
  const tampered = Buffer.from(tag);
  tampered[0]! ^= 1;
  return gcm.open(key, iv, aad, body, tag)?.equals(plain) === true && gcm.open(key, iv, aad, body, tampered) === null;
}

function loadNative(): Gcm | string {
  try {
    const addon = createRequire(import.meta.url)(fileURLToPath(ADDON)) as Pick<Gcm, 'open' | 'seal'>;
    const gcm: Gcm = { name: 'native', open: addon.open, seal: addon.seal };
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
  else if (mode === 'native') throw new Error(`PHIGATE_AEAD=native: ${native}`);
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

/** AES-256-GCM decryption; null when the tag does not verify (no bytes of an unauthenticated value are returned). */
export function openGcm(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): Buffer | null {
  checkLengths(key, iv);
  if (tag.length !== TAG_BYTES) throw new RangeError('aead: the tag must be 16 bytes');
  return active.open(key, iv, aad, ciphertext, tag);
}

/** AES-256-GCM encryption: the ciphertext followed by the 16-byte tag. `iv` must never repeat under one key. */
export function sealGcm(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer {
  checkLengths(key, iv);
  return active.seal(key, iv, aad, plaintext);
}
