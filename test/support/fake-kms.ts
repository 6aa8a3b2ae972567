/**
 * Stands in for AWS KMS, which cannot run on this machine. Everything on the client side is real:
 * the @aws-sdk/client-kms SDK signs and sends genuine HTTP requests, and this server answers them
 * in the KMS JSON 1.1 protocol (X-Amz-Target TrentService.*, base64 blobs in JSON bodies, errors
 * as `__type`). Like KMS it refuses a Decrypt whose EncryptionContext differs from the one given
 * at GenerateDataKey. Wrapped blobs are opaque handles into memory, not encryptions: what is under
 * test is the client, not this stand-in.
 *
 * Asymmetric signing keys too, as the audit log's checkpoints use them: CreateKey (KeySpec
 * ECC_NIST_EDWARDS25519, KeyUsage SIGN_VERIFY), GetPublicKey (DER SubjectPublicKeyInfo) and Sign
 * (SigningAlgorithm ED25519_SHA_512 with MessageType RAW only, as KMS requires), real Ed25519.
 * CreateKey also makes ECC_NIST_P256 SIGN_VERIFY keys (GetPublicKey only), so that a test can
 * hand the gateway a signing key of the wrong kind.
 */
import { generateKeyPairSync, randomBytes, randomUUID, sign as ed25519Sign, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** 'http500': answer every request with an internal error; 'refuse': stop listening; 'hang': accept and never answer. */
export type FakeKmsFailure = 'http500' | 'refuse' | 'hang' | null;

export interface FakeKms {
  readonly endpoint: string;
  /** Requests received, by operation, failed ones included. */
  readonly calls: { GenerateDataKey: number; Decrypt: number; Encrypt: number; CreateKey: number; GetPublicKey: number; Sign: number };
  fail(mode: FakeKmsFailure): Promise<void>;
  close(): Promise<void>;
}

interface Issued {
  readonly keyArn: string;
  readonly plaintext: Buffer;
  readonly context: Record<string, string>;
}

const JSON_11 = 'application/x-amz-json-1.1';

const arnOf = (keyId: string): string => (keyId.startsWith('arn:') ? keyId : `arn:aws:kms:us-east-1:000000000000:key/${keyId}`);

function sameContext(a: Record<string, string>, b: Record<string, string>): boolean {
  const ak = Object.keys(a).sort();
  const bk = Object.keys(b).sort();
  return ak.length === bk.length && ak.every((k, i) => k === bk[i] && a[k] === b[k]);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': JSON_11 });
  res.end(JSON.stringify(body));
}

const kmsError = (res: ServerResponse, type: string, message: string): void => send(res, 400, { __type: type, message });

const algorithmsOf = (spec: string): string[] => (spec === 'ECC_NIST_P256' ? ['ECDSA_SHA_256'] : ['ED25519_SHA_512', 'ED25519_PH_SHA_512']);

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
}

export async function startFakeKms(): Promise<FakeKms> {
  const issued = new Map<string, Issued>();
  const calls = { GenerateDataKey: 0, Decrypt: 0, Encrypt: 0, CreateKey: 0, GetPublicKey: 0, Sign: 0 };
  const signingKeys = new Map<string, { readonly keyId: string; readonly spec: string; readonly privateKey: KeyObject; readonly publicKey: KeyObject }>();
  const signingKey = (keyId: unknown) => (typeof keyId === 'string' ? signingKeys.get(arnOf(keyId)) : undefined);
  let failure: FakeKmsFailure = null;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.headers['x-amz-target'];
    const op = typeof target === 'string' && target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : '';
    if (op === 'GenerateDataKey' || op === 'Decrypt' || op === 'Encrypt' || op === 'CreateKey' || op === 'GetPublicKey' || op === 'Sign') calls[op]++;
    if (failure === 'hang') return;
    if (failure === 'http500') return send(res, 500, { __type: 'KMSInternalException', message: 'injected failure' });

    if (req.method !== 'POST' || req.headers['content-type'] !== JSON_11) {
      return kmsError(res, 'SerializationException', 'expected a JSON 1.1 POST');
    }
    if (!String(req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256 Credential=')) {
      return kmsError(res, 'MissingAuthenticationTokenException', 'request is not signed');
    }
    const body = await readJson(req);
    const context = (body.EncryptionContext ?? {}) as Record<string, string>;

    if (op === 'GenerateDataKey') {
      if (typeof body.KeyId !== 'string' || body.KeySpec !== 'AES_256') {
        return kmsError(res, 'ValidationException', 'KeyId and KeySpec AES_256 are required');
      }
      const handle = randomBytes(32);
      const entry: Issued = { keyArn: arnOf(body.KeyId), plaintext: randomBytes(32), context };
      issued.set(handle.toString('base64'), entry);
      return send(res, 200, { CiphertextBlob: handle.toString('base64'), Plaintext: entry.plaintext.toString('base64'), KeyId: entry.keyArn });
    }
    if (op === 'Encrypt') {
      if (typeof body.KeyId !== 'string' || typeof body.Plaintext !== 'string') return kmsError(res, 'ValidationException', 'KeyId and Plaintext are required');
      const handle = randomBytes(32);
      issued.set(handle.toString('base64'), { keyArn: arnOf(body.KeyId), plaintext: Buffer.from(body.Plaintext, 'base64'), context });
      return send(res, 200, { CiphertextBlob: handle.toString('base64'), KeyId: arnOf(body.KeyId), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' });
    }
    if (op === 'Decrypt') {
      const entry = typeof body.CiphertextBlob === 'string' ? issued.get(body.CiphertextBlob) : undefined;
      // KMS gives the same answer for an unknown blob and a wrong context, and so do we.
      if (!entry || !sameContext(entry.context, context)) return kmsError(res, 'InvalidCiphertextException', '');
      if (typeof body.KeyId === 'string' && arnOf(body.KeyId) !== entry.keyArn) {
        return kmsError(res, 'IncorrectKeyException', 'the ciphertext was not encrypted under this key');
      }
      return send(res, 200, { KeyId: entry.keyArn, Plaintext: entry.plaintext.toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' });
    }
    if (op === 'CreateKey') {
      const spec = body.KeySpec;
      if ((spec !== 'ECC_NIST_EDWARDS25519' && spec !== 'ECC_NIST_P256') || body.KeyUsage !== 'SIGN_VERIFY') {
        return kmsError(res, 'UnsupportedOperationException', 'the fake creates ECC_NIST_EDWARDS25519 and ECC_NIST_P256 SIGN_VERIFY keys only');
      }
      const keyId = randomUUID();
      const pair = spec === 'ECC_NIST_P256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
      signingKeys.set(arnOf(keyId), { keyId, spec, ...pair });
      const KeyMetadata = { KeyId: keyId, Arn: arnOf(keyId), KeySpec: spec, KeyUsage: 'SIGN_VERIFY', KeyState: 'Enabled', Enabled: true,
        SigningAlgorithms: algorithmsOf(spec), CreationDate: Math.floor(Date.now() / 1000) };
      return send(res, 200, { KeyMetadata });
    }
    if (op === 'GetPublicKey') {
      const key = signingKey(body.KeyId);
      if (!key) return kmsError(res, 'NotFoundException', 'no such key');
      return send(res, 200, { KeyId: arnOf(key.keyId), KeySpec: key.spec, KeyUsage: 'SIGN_VERIFY', SigningAlgorithms: algorithmsOf(key.spec),
        PublicKey: key.publicKey.export({ format: 'der', type: 'spki' }).toString('base64') });
    }
    if (op === 'Sign') {
      const key = signingKey(body.KeyId);
      if (!key) return kmsError(res, 'NotFoundException', 'no such key');
      if (key.spec !== 'ECC_NIST_EDWARDS25519' || body.SigningAlgorithm !== 'ED25519_SHA_512' || body.MessageType !== 'RAW' || typeof body.Message !== 'string') {
        return kmsError(res, 'ValidationException', 'ED25519_SHA_512 signs a RAW message');
      }
      const signature = ed25519Sign(null, Buffer.from(body.Message, 'base64'), key.privateKey);
      return send(res, 200, { KeyId: arnOf(key.keyId), Signature: signature.toString('base64'), SigningAlgorithm: 'ED25519_SHA_512' });
    }
    return kmsError(res, 'UnknownOperationException', 'operation not supported by the fake');
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => send(res, 500, { __type: 'KMSInternalException', message: 'fake failed' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });

  return {
    endpoint: `http://127.0.0.1:${port}`,
    calls,
    async fail(mode) {
      const previous = failure;
      failure = mode;
      if (mode === 'refuse') return stop();
      // Requests left hanging are dropped so that no client waits on them forever.
      if (previous === 'hang') server.closeAllConnections();
      if (!server.listening) await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    },
    close: stop,
  };
}
