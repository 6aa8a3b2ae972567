import { spawn } from 'node:child_process';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');

export interface GatewayProcess {
  readonly pid: number;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * `command args` in the repository, with this machine's environment minus any PHIGATE_*, npm_* or
 * NODE_OPTIONS setting, plus `env`; resolves once it logs "phigate listening". `detached` gives it
 * a process group of its own, as a terminal gives its foreground job.
 */
export async function startGatewayProcess(command: string, args: string[], env: Record<string, string>, opts: { detached?: boolean } = {}): Promise<GatewayProcess> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PHIGATE_') && !k.startsWith('npm_') && k !== 'NODE_OPTIONS'));
  const child = spawn(command, args, { cwd: ROOT, detached: opts.detached ?? false, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + 60_000;
  while (!output.includes('"msg":"phigate listening"')) {
    if (gone || Date.now() > deadline) {
      if (!gone) process.kill(opts.detached ? -child.pid! : child.pid!, 'SIGKILL');
      throw new Error(`${command} ${args.join(' ')} did not listen:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { pid: child.pid!, output: () => output, exited };
}
