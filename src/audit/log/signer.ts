import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as signWith, type KeyObject } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { GetPublicKeyCommand, KMSClient, SignCommand } from '@aws-sdk/client-kms';
import type { NoteSigner } from './note.ts';

/**
 * Who signs the audit log's checkpoints: a key the database never holds. In development an
 * Ed25519 key in a 0600 file; in production a KMS asymmetric key (ECC_NIST_EDWARDS25519), whose
 * private half never leaves the KMS.
 */
const rawPublicKey = (key: KeyObject): Buffer => Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url');

export class SigningKeyFileError extends Error {
  constructor(readonly file: string, readonly mode: number) {
    super(`${file} may be read by others than its owner (mode 0${mode.toString(8)}); it must be 0600 (chmod 600)`);
    this.name = 'SigningKeyFileError';
  }
}

/**
 * Puts `pem` at `file` unless a file is there, and returns what is there. Replicas starting
 * together on one data directory race to create the key: written in place, the loser could read
 * the winner's file before its bytes were in it. A hard link of a complete file appears whole.
 */
async function createOnce(file: string, pem: string): Promise<string> {
  const draft = `${file}.${randomBytes(8).toString('hex')}.tmp`;
  await writeFile(draft, pem, { mode: 0o600, flag: 'wx' });
  try {
    await link(draft, file);
    return pem;
  } catch (e) {
    // Another process created it first: use theirs.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return readFile(file, 'utf8');
  } finally {
    await unlink(draft).catch(() => undefined);
  }
}

/** Reads the key at `file`, creating it (0600, its folder 0700) when there is none. */
export async function fileSigner(file: string, name: string): Promise<NoteSigner> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    pem = await createOnce(file, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  }
  // A key others could read is no longer a key only the gateway holds: refuse it, never repair it.
  const mode = (await stat(file)).mode & 0o777;
  if ((mode & 0o077) !== 0) throw new SigningKeyFileError(file, mode);
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${file} is not an Ed25519 private key`);
  return { name, publicKey: rawPublicKey(createPublicKey(privateKey)), sign: async (message) => signWith(null, message, privateKey) };
}

export interface KmsSignerOptions {
  readonly keyId: string;
  readonly region: string;
  readonly endpoint: string | null;
  readonly name: string;
  /** Static credentials (tests); otherwise the SDK's default chain. */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/** Signs through AWS KMS `Sign` (ED25519_SHA_512, message RAW); the public key comes from `GetPublicKey`. */
export async function kmsSigner(opts: KmsSignerOptions): Promise<NoteSigner> {
  const client = new KMSClient({ region: opts.region, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}), ...(opts.credentials ? { credentials: opts.credentials } : {}) });
  const got = await client.send(new GetPublicKeyCommand({ KeyId: opts.keyId }));
  if (got.KeySpec !== 'ECC_NIST_EDWARDS25519' || !got.PublicKey) throw new Error('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: the key is not an Ed25519 signing key');
  const publicKey = createPublicKey({ key: Buffer.from(got.PublicKey), format: 'der', type: 'spki' });
  return {
    name: opts.name,
    publicKey: rawPublicKey(publicKey),
    async sign(message) {
      const out = await client.send(new SignCommand({ KeyId: opts.keyId, Message: message, MessageType: 'RAW', SigningAlgorithm: 'ED25519_SHA_512' }));
      if (!out.Signature) throw new Error('KMS returned no signature');
      return Buffer.from(out.Signature);
    },
  };
}
