/**
 * CPU time spent per request by each side of a run: the target process, the PostgreSQL server (its
 * postmaster and every process it forked) and the runner (autocannon). On 2 shared cores req/s
 * moves with whatever else runs; CPU milliseconds per request move much less, so they say where a
 * change saved work. Read from /proc: a PostgreSQL that is not a process on this machine reports null.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * utime + stime of one process (ms), the same for its children that have exited and been waited
 * for (cutime + cstime), and its parent pid; null once it has gone.
 */
export function procStat(pid: number): { cpuMs: number; systemMs: number; reapedChildrenMs: number; ppid: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ms = (ticks: number) => (ticks * 1000) / TICKS_PER_S;
  return { cpuMs: ms(Number(f[11]) + Number(f[12])), systemMs: ms(Number(f[12])), reapedChildrenMs: ms(Number(f[13]) + Number(f[14])), ppid: Number(f[1]) };
}

/**
 * The times a process gave up its CPU (waiting to be woken: a read with nothing to read) and was
 * taken off it (preempted), from /proc/<pid>/status; null once it has gone. Under more contention
 * the same work costs more of both, and more kernel time with them, with user-space work unchanged.
 */
export function contextSwitches(pid: number): { voluntary: number; involuntary: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return { voluntary: field('voluntary_ctxt_switches'), involuntary: field('nonvoluntary_ctxt_switches') };
}

/**
 * CPU ms of a process and its direct children (PostgreSQL's process tree is one level deep), live
 * or exited: a backend that ends (a pool closing an idle connection) keeps counting through its
 * parent's cutime, so the sum never goes down.
 */
export function treeCpuMs(root: number): number | null {
  const self = procStat(root);
  if (!self) return null;
  let ms = self.cpuMs + self.reapedChildrenMs;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = procStat(Number(name));
    if (s && s.ppid === root) ms += s.cpuMs;
  }
  return ms;
}

export interface CpuPerRequest {
  readonly targetMs: number | null;
  readonly postgresMs: number | null;
  readonly runnerMs: number;
}

/**
 * Starts counting; the returned function stops and divides by the requests completed. PostgreSQL's
 * figure is the whole server's: the idle connections of the targets not being measured cost it
 * next to nothing.
 */
export function cpuMeter(targetPid: number, postmasterPid: number | null): (requests: number) => CpuPerRequest {
  const t0 = procStat(targetPid)?.cpuMs ?? null;
  const p0 = postmasterPid === null ? null : treeCpuMs(postmasterPid);
  const r0 = process.cpuUsage();
  return (requests) => {
    const per = (a: number | null, b: number | null) => (a === null || b === null || requests === 0 ? null : Math.round(((b - a) / requests) * 100) / 100);
    const r = process.cpuUsage(r0);
    return {
      targetMs: per(t0, procStat(targetPid)?.cpuMs ?? null),
      postgresMs: per(p0, postmasterPid === null ? null : treeCpuMs(postmasterPid)),
      runnerMs: requests === 0 ? 0 : Math.round(((r.user + r.system) / 1000 / requests) * 100) / 100,
    };
  };
}
