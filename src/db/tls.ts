import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { ConfigError } from '../config.ts';
import type { Pool } from './pool.ts';

export interface PgConnection {
  /** The URL without its TLS parameters, so node-postgres cannot override `ssl` below. */
  readonly connectionString: string;
  readonly ssl: false | ConnectionOptions;
}

const TLS_PARAMS = ['ssl', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'sslpassword', 'uselibpqcompat'];

function readCa(variable: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(variable, `the CA file ${file} cannot be read`);
  }
}

/**
 * Turns a libpq-style URL into node-postgres options, because node-postgres' own parsing is not
 * safe to rely on: an `sslmode` in the URL replaces any `ssl` object passed beside it (losing the
 * CA and minimum version), and its modes mean something else than libpq's. Here TLS, whenever the
 * URL asks for it, verifies the server's chain (PHIGATE_DATABASE_CA_FILE, else the URL's
 * `sslrootcert`, else Node's trust store) and, except for `verify-ca`, its host name; modes that
 * would connect without verifying are refused rather than quietly weakened.
 */
export function pgConnection(url: string, caFile: string | null = null): PgConnection {
  const parsed = new URL(url);
  const param = (name: string) => parsed.searchParams.get(name);
  const mode = param('sslmode') ?? (param('ssl') === 'true' || param('ssl') === '1' ? 'verify-full' : 'disable');
  if (param('sslcert') !== null || param('sslkey') !== null) {
    throw new ConfigError('DATABASE_URL', 'client certificates (sslcert, sslkey) are not supported; the database authenticates the gateway with SCRAM');
  }
  const rootCert = param('sslrootcert');
  for (const p of TLS_PARAMS) parsed.searchParams.delete(p);
  const connectionString = parsed.toString();

  if (mode === 'disable') return { connectionString, ssl: false };
  if (mode !== 'require' && mode !== 'verify-ca' && mode !== 'verify-full') {
    throw new ConfigError('DATABASE_URL', 'sslmode must be disable, require, verify-ca or verify-full (TLS here always verifies the server)');
  }
  const ca = caFile !== null ? readCa('PHIGATE_DATABASE_CA_FILE', caFile) : rootCert !== null ? readCa('DATABASE_URL', rootCert) : undefined;
  if (mode === 'verify-ca' && ca === undefined) {
    // A public CA signs certificates for anyone's host: the chain alone proves nothing without our own CA.
    throw new ConfigError('PHIGATE_DATABASE_CA_FILE', 'sslmode=verify-ca needs the CA that signed the database certificate');
  }
  return {
    connectionString,
    ssl: {
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ...(ca !== undefined ? { ca } : {}),
      // node-postgres passes the host as servername (or, for an IP address, as host), so Node's
      // default identity check compares the certificate with the host of the URL.
      ...(mode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
    },
  };
}

export class InsecureDatabaseConnectionError extends Error {
  constructor(detail: string) {
    super(`DATABASE_URL: production requires TLS 1.2 or newer to the database; ${detail}`);
    this.name = 'InsecureDatabaseConnectionError';
  }
}

const ACCEPTED_VERSIONS = new Set(['TLSv1.2', 'TLSv1.3']);

/**
 * Asks the server how this very connection is protected, so that a proxy or a misread URL that
 * ends up in plaintext cannot go unnoticed: production refuses to start unless it is TLS >= 1.2.
 */
export async function assertTlsConnection(pool: Pool): Promise<void> {
  const { rows } = await pool.query<{ ssl: boolean; version: string | null }>(
    'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
  );
  const r = rows[0];
  if (!r?.ssl) throw new InsecureDatabaseConnectionError('the connection is not encrypted');
  if (!r.version || !ACCEPTED_VERSIONS.has(r.version)) throw new InsecureDatabaseConnectionError(`the connection uses ${r.version ?? 'an unknown protocol'}`);
}
