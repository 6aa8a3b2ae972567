import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { onFreePort } from './free-port.ts';

export interface PgBouncer {
  readonly host: string;
  readonly port: number;
  /** Everything it logged so far. */
  output(): string;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  /** The PostgreSQL it pools, e.g. the suite's embedded server. */
  readonly upstream: { readonly host: string; readonly port: number };
  /** Login roles it accepts, with their passwords (it logs in to PostgreSQL with the same). */
  readonly users: Readonly<Record<string, string>>;
  /** Server connections per database and user: keep it below the clients' pool so that they share. */
  readonly poolSize: number;
}

/** Debian's pgbouncer binary, or null when it is not installed. */
export function pgbouncerBinary(): string | null {
  for (const candidate of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer']) {
    if (spawnSync(candidate, ['--version']).status === 0) return candidate;
  }
  return null;
}

/**
 * A private PgBouncer in transaction mode in front of `upstream`: its own configuration, auth file
 * and port in a temporary directory, any database name passed through to PostgreSQL. PgBouncer
 * refuses to run as root, so under root (a CI container) it drops to `nobody`.
 */
export async function startPgBouncer(opts: PgBouncerOptions): Promise<PgBouncer> {
  const binary = pgbouncerBinary();
  if (binary === null) throw new Error('pgbouncer is not installed (apt-get install pgbouncer)');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-pgbouncer-'));
  try {
    return await onFreePort((port) => startOn(binary, dir, port, opts));
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startOn(binary: string, dir: string, port: number, opts: PgBouncerOptions): Promise<PgBouncer> {
  const authFile = path.join(dir, 'users.txt');
  const quote = (s: string) => `"${s.replaceAll('"', '""')}"`;
  await writeFile(authFile, Object.entries(opts.users).map(([u, p]) => `${quote(u)} ${quote(p)}\n`).join(''));
  const ini = path.join(dir, 'pgbouncer.ini');
  await writeFile(
    ini,
    [
      '[databases]',
      `* = host=${opts.upstream.host} port=${opts.upstream.port}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = md5',
      `auth_file = ${authFile}`,
      'pool_mode = transaction',
      `default_pool_size = ${opts.poolSize}`,
      'min_pool_size = 0',
      'reserve_pool_size = 0',
      'max_client_conn = 2000',
      // node-postgres does not send it; psql and JDBC do.
      'ignore_startup_parameters = extra_float_digits',
      'log_connections = 0',
      'log_disconnections = 0',
      'query_wait_timeout = 60',
      '',
    ].join('\n'),
  );
  const asRoot = process.getuid?.() === 0;
  // `nobody` must read what is in the directory; the passwords are test-only.
  if (asRoot) for (const f of [dir, ini, authFile]) await chmod(f, 0o755);
  const child = spawn(binary, [...(asRoot ? ['-u', 'nobody'] : []), ini], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  // Ready when it says it listens on its port and the port accepts: a port that accepts alone may
  // be another process's, which took it before PgBouncer could bind it (then PgBouncer exits, saying so).
  const deadline = Date.now() + 15_000;
  while (!(output.includes(`listening on 127.0.0.1:${port}`) && (await accepts(port)))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      await gone;
      throw new Error(`pgbouncer did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: '127.0.0.1',
    port,
    output: () => output,
    async stop() {
      // SIGTERM is PgBouncer's immediate shutdown: a finished run has no client left to wait for.
      if (!exited) child.kill('SIGTERM');
      await gone;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}
