import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { PhigateError } from '../../errors.ts';
import { lengthPrefixed } from '../length-prefixed.ts';
import type { EncryptionContext, KeyProvider } from './provider.ts';

const KEY_BYTES = 32;
const WRAP_FORMAT_V1 = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

function unavailable(message: string, reason: string, cause?: unknown): PhigateError {
  return new PhigateError('KEY_UNAVAILABLE', message, { reason, cause });
}

// Sorted so that the same context always authenticates, whatever order its keys were written in.
function contextAad(header: Buffer, context: EncryptionContext): Buffer {
  const pairs = Object.keys(context)
    .sort()
    .flatMap((k) => [k, context[k] ?? '']);
  return lengthPrefixed(['phigate/local-kms/v1', header, ...pairs]);
}

/**
 * A key provider for development and single-host installs: data keys are wrapped with
 * AES-256-GCM under a master key held by this process.
 */
export function createLocalKeyProvider(masterKey: Buffer): KeyProvider {
  if (masterKey.length !== KEY_BYTES) throw unavailable('local master key must be 32 bytes', 'invalid_master_key');
  // Our own copy: a caller zeroing or reusing its buffer must not change the key under us.
  const master = Buffer.from(masterKey);
  const keyRef = 'local:' + createHash('sha256').update(master).digest().subarray(0, 8).toString('hex');
  const header = Buffer.from([WRAP_FORMAT_V1]);

  const wrap = (plaintext: Buffer, context: EncryptionContext): Buffer => {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', master, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(contextAad(header, context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([header, nonce, body, cipher.getAuthTag()]);
  };

  return {
    name: 'local',
    keyRef,
    async generateDataKey(context) {
      try {
        const plaintext = randomBytes(KEY_BYTES);
        return { plaintext, wrapped: wrap(plaintext, context) };
      } catch (e) {
        throw unavailable('could not generate a data key', 'kms_error', e);
      }
    },
    async wrapDataKey(plaintext, context) {
      if (plaintext.length !== KEY_BYTES) throw unavailable('a data key must be 32 bytes', 'invalid_key');
      try {
        return wrap(plaintext, context);
      } catch (e) {
        throw unavailable('could not wrap a data key', 'kms_error', e);
      }
    },
    async decryptDataKey(wrapped, context) {
      if (wrapped.length !== WRAPPED_BYTES || wrapped[0] !== WRAP_FORMAT_V1) {
        throw unavailable('wrapped data key is malformed', 'unwrap_failed');
      }
      try {
        const nonce = wrapped.subarray(1, 1 + NONCE_BYTES);
        const body = wrapped.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + KEY_BYTES);
        const decipher = createDecipheriv('aes-256-gcm', master, nonce, { authTagLength: TAG_BYTES });
        decipher.setAAD(contextAad(header, context));
        decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
        return Buffer.concat([decipher.update(body), decipher.final()]);
      } catch (e) {
        throw unavailable('wrapped data key could not be unwrapped', 'unwrap_failed', e);
      }
    },
  };
}

/** The key in `file`, or null when there is no such file. */
async function readMasterKeyFile(file: string): Promise<Buffer | null> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw unavailable(`cannot read local master key file ${file}`, 'master_key_unreadable', e);
  }
  try {
    // Checked on the open handle, so the file cannot be swapped between the check and the read.
    const info = await handle.stat();
    if (!info.isFile()) throw unavailable(`local master key ${file} is not a regular file`, 'master_key_insecure');
    if ((info.mode & 0o077) !== 0) {
      throw unavailable(`local master key file ${file} is accessible by group or others; chmod 600 it`, 'master_key_insecure');
    }
    const key = await handle.readFile();
    if (key.length !== KEY_BYTES) {
      throw unavailable(`local master key file ${file} must hold exactly 32 bytes`, 'invalid_master_key');
    }
    return key;
  } finally {
    await handle.close();
  }
}

async function fsyncPath(target: string): Promise<void> {
  const handle = await open(target, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates the key file so that it only ever appears complete: the key is written and synced to a
 * private temporary file (exclusive create, 0600), then hard-linked into place. link() fails if
 * the name exists, so when processes race exactly one key wins and every loser reads that one;
 * a plain 'wx' create of the final name would let a loser read it before it is fully written.
 */
async function publishNewMasterKey(dir: string, file: string): Promise<void> {
  const temp = path.join(dir, `.master.key.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o600);
  try {
    try {
      await handle.writeFile(randomBytes(KEY_BYTES));
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await link(temp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw e;
    }
    // Every wrapped data key depends on this file: make its directory entry durable too.
    await fsyncPath(dir);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * The local master key: from `fromEnvBase64` when given (exactly 32 bytes, canonical base64),
 * otherwise `<dataDir>/master.key`, created on first start. A file readable by group or others,
 * or of the wrong length, is refused rather than repaired.
 */
export async function loadOrCreateLocalMasterKey(dataDir: string, fromEnvBase64: string | null): Promise<Buffer> {
  if (fromEnvBase64 !== null) {
    const text = fromEnvBase64.trim();
    const key = Buffer.from(text, 'base64');
    // Buffer.from skips characters that are not base64, so compare with the re-encoding.
    if (key.length !== KEY_BYTES || key.toString('base64') !== text) {
      throw unavailable('PHIGATE_LOCAL_MASTER_KEY must be 32 bytes, base64-encoded', 'invalid_master_key');
    }
    return key;
  }

  const file = path.join(dataDir, 'master.key');
  const existing = await readMasterKeyFile(file);
  if (existing) return existing;
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await publishNewMasterKey(dataDir, file);
  } catch (e) {
    throw unavailable(`cannot create local master key file ${file}`, 'master_key_unwritable', e);
  }
  // Read back whichever key won the race, through the same checks as an existing file.
  const created = await readMasterKeyFile(file);
  if (!created) throw unavailable(`local master key file ${file} disappeared after creation`, 'master_key_unreadable');
  return created;
}
