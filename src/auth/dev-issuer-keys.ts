import { randomUUID } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';
import type { CryptoKey, JWK, JWK_EC_Private, KeyObject } from 'jose';
import { PhigateError } from '../errors.ts';

export interface DevIssuerKeys {
  readonly privateKey: CryptoKey | KeyObject;
  /** Public members only: safe to publish in the JWKS. */
  readonly publicJwk: JWK;
  /** RFC 7638 thumbprint of the key, so it changes exactly when the key does. */
  readonly kid: string;
}

const FILE_NAME = 'dev-issuer.jwk.json';

/**
 * The development issuer's signing key, kept in `<dataDir>/dev-issuer.jwk.json` so that tokens
 * minted before a restart still verify after it.
 */
export async function loadOrCreateDevIssuerKeys(dataDir: string): Promise<DevIssuerKeys> {
  const file = path.join(dataDir, FILE_NAME);
  const stored = (await readIfExists(file)) ?? (await create(dataDir, file));
  return fromPrivateJwk(stored);
}

async function readIfExists(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Writes a new key to a private temporary file and then links it into place. link() fails rather
 * than overwrite, so when two processes start at once one key wins and both use it; and nobody
 * can read a half-written file, as they could after a plain `wx` open.
 */
async function create(dataDir: string, file: string): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const content = JSON.stringify({ ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'ES256', use: 'sig' });

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const temporary = `${file}.${randomUUID()}.tmp`;
  await writeFile(temporary, content, { flag: 'wx', mode: 0o600 });
  try {
    await link(temporary, file);
    return content;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return readFile(file, 'utf8');
  } finally {
    await unlink(temporary);
  }
}

async function fromPrivateJwk(content: string): Promise<DevIssuerKeys> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(content) as JWK;
  } catch (cause) {
    throw invalidKeyFile(cause);
  }
  const { kty, crv, x, y, d, kid } = jwk;
  if (kty !== 'EC' || crv !== 'P-256' || typeof x !== 'string' || typeof y !== 'string' || typeof d !== 'string') {
    throw invalidKeyFile();
  }
  const thumbprint = await calculateJwkThumbprint({ kty, crv, x, y });
  if (kid !== thumbprint) throw invalidKeyFile();
  let privateKey: CryptoKey;
  try {
    privateKey = await importJWK({ kty: 'EC', crv, x, y, d } satisfies JWK_EC_Private, 'ES256');
  } catch (cause) {
    throw invalidKeyFile(cause);
  }
  // Built member by member, never by copying the stored JWK, so `d` cannot leak into the JWKS.
  const publicJwk: JWK = Object.freeze({ kty, crv, x, y, kid: thumbprint, alg: 'ES256', use: 'sig' });
  return Object.freeze({ privateKey, publicJwk, kid: thumbprint });
}

function invalidKeyFile(cause?: unknown): PhigateError {
  return new PhigateError('INTERNAL', `The development issuer key file (${FILE_NAME}) is not valid; delete it to create a new key.`, {
    reason: 'dev_issuer_key_invalid',
    cause,
  });
}
