/**
 * `--replicas R --pgbouncer`: the phigate target scaled out as docker-compose.yml runs it. R gateway
 * processes (bench/targets/phigate.ts), their connections through PgBouncer in transaction mode
 * (Debian's, prepared statements off; two instances, one for requests and one for the audit
 * writer and key loads, as PHIGATE_AUX_DATABASE_URL), and with R > 1 HAProxy in round robin in
 * front. Everything runs on the same cores as the database and the load generator, so on a small
 * machine the pooler and the balancer cost the gateways CPU: the row says what that costs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onFreePort } from '../test/support/free-port.ts';
import { startPgBouncer, type PgBouncer } from '../test/support/pgbouncer.ts';

export interface ScaledOptions {
  readonly appUrl: string;
  readonly replicas: number;
  readonly pgbouncer: boolean;
  /** Server connections of the requests' PgBouncer pool: default the pool of one replica, so R replicas share it. */
  readonly serverPoolSize: number;
  /** Starts one phigate target with these extra settings; resolves with its url and process. */
  start(extra: { appUrl: string; auxUrl: string; preparedStatements: boolean }): Promise<{ url: string; child: ChildProcess }>;
}

export interface Scaled {
  readonly url: string;
  /** The first replica: RSS and target CPU of a scaled row are its own. */
  readonly child: ChildProcess;
  readonly label: string;
  stop(stopReplica: (child: ChildProcess) => Promise<void>): Promise<void>;
}

export async function startScaled(opts: ScaledOptions): Promise<Scaled> {
  const bouncers: PgBouncer[] = [];
  let appUrl = opts.appUrl;
  let auxUrl = opts.appUrl;
  if (opts.pgbouncer) {
    const upstream = new URL(opts.appUrl);
    const users = { [decodeURIComponent(upstream.username)]: decodeURIComponent(upstream.password) };
    const where = { host: upstream.hostname, port: Number(upstream.port || 5432) };
    bouncers.push(await startPgBouncer({ upstream: where, users, poolSize: opts.serverPoolSize }));
    bouncers.push(await startPgBouncer({ upstream: where, users, poolSize: Math.max(2, opts.replicas) }));
    const through = (b: PgBouncer) => {
      const u = new URL(opts.appUrl);
      u.hostname = b.host;
      u.port = String(b.port);
      return u.toString();
    };
    appUrl = through(bouncers[0]!);
    auxUrl = through(bouncers[1]!);
  }
  const replicas: { url: string; child: ChildProcess }[] = [];
  for (let i = 0; i < opts.replicas; i++) replicas.push(await opts.start({ appUrl, auxUrl, preparedStatements: !opts.pgbouncer }));
  let balancer: { url: string; child: ChildProcess; dir: string } | null = null;
  if (replicas.length > 1) balancer = await startHaproxy(replicas.map((r) => r.url));
  const label = `phigate x${opts.replicas}${opts.pgbouncer ? ' via pgbouncer' : ''}`;
  return {
    url: balancer?.url ?? replicas[0]!.url,
    child: replicas[0]!.child,
    label,
    async stop(stopReplica) {
      if (balancer) {
        const exited = new Promise((r) => balancer!.child.once('exit', r));
        balancer.child.kill('SIGTERM');
        await exited;
        await rm(balancer.dir, { recursive: true, force: true });
      }
      for (const r of replicas) await stopReplica(r.child);
      for (const b of bouncers) await b.stop();
    },
  };
}

async function startHaproxy(backends: string[]): Promise<{ url: string; child: ChildProcess; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-bench-haproxy-'));
  return onFreePort((port) => startHaproxyOn(dir, port, backends));
}

async function startHaproxyOn(dir: string, port: number, backends: string[]): Promise<{ url: string; child: ChildProcess; dir: string }> {
  const cfg = path.join(dir, 'haproxy.cfg');
  await writeFile(
    cfg,
    [
      'global',
      '  maxconn 4000',
      'defaults',
      '  mode http',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  option forwardfor',
      'frontend phigate',
      `  bind 127.0.0.1:${port}`,
      '  default_backend gateways',
      'backend gateways',
      '  balance roundrobin',
      ...backends.map((b, i) => `  server gw${i + 1} ${new URL(b).host}`),
      '',
    ].join('\n'),
  );
  // Its output still goes to the terminal, and is kept for the error when it does not start (a port in use).
  const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'inherit', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (c: Buffer) => {
    output += c.toString('utf8');
    process.stderr.write(c);
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    // Answered while haproxy still runs: not some other process that took the port before haproxy bound it.
    if (ok && child.exitCode === null) return { url, child, dir };
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`haproxy did not start (apt-get install haproxy):\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
