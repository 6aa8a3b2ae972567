import { describe, expect, it } from 'vitest';
import { contextSwitches, cpuMeter, procStat, treeCpuMs } from '../../bench/cpu.ts';

/**
 * Spends `ms` of this process's own CPU time. A loaded machine stretches wall time: 60 ms of it
 * can give this process less CPU than the 10 ms tick /proc counts in, and CPU time reads as unchanged.
 */
function burnCpu(ms: number): void {
  const start = process.cpuUsage();
  for (;;) {
    const spent = process.cpuUsage(start);
    if (spent.user + spent.system >= ms * 1000) return;
    for (let i = 0; i < 10_000; i++) Math.sqrt(Math.random());
  }
}

describe('bench CPU per request', () => {
  it('reads this process from /proc: its parent, and CPU time that grows with work', () => {
    const before = procStat(process.pid)!;
    expect(before.ppid).toBe(process.ppid);
    burnCpu(60);
    expect(procStat(process.pid)!.cpuMs).toBeGreaterThan(before.cpuMs);
  });

  it("reads the kernel's part of the CPU time, and the times the process waited, which grow when it sleeps", async () => {
    const stat = procStat(process.pid)!;
    expect(stat.systemMs).toBeGreaterThanOrEqual(0);
    expect(stat.systemMs).toBeLessThanOrEqual(stat.cpuMs);
    const before = contextSwitches(process.pid)!;
    expect(Number.isInteger(before.voluntary) && Number.isInteger(before.involuntary)).toBe(true);
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(contextSwitches(process.pid)!.voluntary).toBeGreaterThan(before.voluntary);
  });

  it('a process that is not there reads as null, and so does its tree', () => {
    expect(contextSwitches(2 ** 22 + 1)).toBeNull();
    expect(procStat(2 ** 22 + 1)).toBeNull();
    expect(treeCpuMs(2 ** 22 + 1)).toBeNull();
  });

  it('divides the time spent by the requests; no PostgreSQL on this machine gives null, not 0', () => {
    const stop = cpuMeter(process.pid, null);
    burnCpu(60);
    const per = stop(2);
    expect(per.postgresMs).toBeNull();
    expect(per.targetMs).toBeGreaterThan(0);
    expect(per.runnerMs).toBeGreaterThan(0);
    expect(stop(0).targetMs).toBeNull();
  });
});

describe('bench CPU of a process tree', () => {
  it('keeps counting a child after it has exited and been waited for', async () => {
    const { spawnSync } = await import('node:child_process');
    const before = treeCpuMs(process.pid)!;
    // A child that burns 200 ms of its own CPU (not of wall time, which a loaded machine stretches),
    // then exits and is reaped by this process.
    spawnSync(process.execPath, ['-e', 'const s = process.cpuUsage(); while (process.cpuUsage(s).user < 200_000) Math.sqrt(Math.random());']);
    expect(procStat(process.pid)!.reapedChildrenMs).toBeGreaterThan(0);
    expect(treeCpuMs(process.pid)! - before).toBeGreaterThanOrEqual(100);
  });
});
