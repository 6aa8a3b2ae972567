import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as signWith, type KeyObject } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { NoteSigner } from './note.ts';

/**
 * Who signs the audit log's checkpoints: a key the database never holds. In development an
 * Ed25519 key in a 0600 file; in production a KMS asymmetric key (ECC_NIST_EDWARDS25519), whose
 * private half never leaves the KMS.
 */
const rawPublicKey = (key: KeyObject): Buffer => Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url');

export class SigningKeyFileError extends Error {
  constructor(readonly file: string, readonly mode: number | null) {
    super(
      mode === null
        ? `${file} does not exist: the gateway creates it on its first start; a command that only reads the log does not make a new one`
        : `${file} may be read by others than its owner (mode 0${mode.toString(8)}); it must be 0600 (chmod 600)`,
    );
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
export async function fileSigner(file: string, name: string, opts: { readonly create?: boolean } = {}): Promise<NoteSigner> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // A verifier on another machine must not sign with a key of its own making and then call the log forged.
    if (opts.create === false) throw new SigningKeyFileError(file, null);
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

/** The KMS signing key cannot serve; `reason` names what is wrong, never key material. */
export class KmsSigningKeyError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'KmsSigningKeyError';
  }
}

export interface KmsSignerOptions {
  readonly keyId: string;
  readonly region: string;
  readonly endpoint: string | null;
  readonly name: string;
  /** Static credentials (tests); otherwise the SDK's default chain. */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/**
 * Signs through AWS KMS `Sign` (ED25519_SHA_512, message RAW). The one `GetPublicKey` call here
 * proves, before anything is signed, that the key exists, that this identity may use it, and that
 * it is an Ed25519 signing key; any doubt is a KmsSigningKeyError.
 */
export async function kmsSigner(opts: KmsSignerOptions): Promise<NoteSigner> {
  // Loaded only when KMS signs: the file signer's gateway never holds the AWS SDK (src/crypto/keys/from-config.ts).
  const { GetPublicKeyCommand, KMSClient, SignCommand } = await import('@aws-sdk/client-kms');
  const client = new KMSClient({ region: opts.region, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}), ...(opts.credentials ? { credentials: opts.credentials } : {}) });
  const got = await client.send(new GetPublicKeyCommand({ KeyId: opts.keyId })).catch((err: unknown) => {
    // The SDK's name (NotFoundException, AccessDeniedException, a network error) and nothing of its message.
    throw new KmsSigningKeyError(`GetPublicKey failed (${(err as Error).name ?? 'Error'})`);
  });
  if (got.KeySpec !== 'ECC_NIST_EDWARDS25519' || got.KeyUsage !== 'SIGN_VERIFY' || !got.SigningAlgorithms?.includes('ED25519_SHA_512') || !got.PublicKey) {
    throw new KmsSigningKeyError(`the key is not an Ed25519 signing key (key spec ${got.KeySpec ?? 'none'}, key usage ${got.KeyUsage ?? 'none'}); it must be ECC_NIST_EDWARDS25519 with SIGN_VERIFY`);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(got.PublicKey), format: 'der', type: 'spki' });
  } catch {
    throw new KmsSigningKeyError('GetPublicKey returned a public key that is not DER SubjectPublicKeyInfo');
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new KmsSigningKeyError('GetPublicKey returned a public key that is not Ed25519');
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
