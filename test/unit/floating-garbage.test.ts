import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { RECHECK_MIN_INTERVAL_MS, createFloatingGarbageCheck } from '../../src/floating-garbage.ts';

const MB = 2 ** 20;

// When the gateway runs one more full GC (src/floating-garbage.ts): only after a full GC that kept
// far more than the recent ones, at most once an interval.
describe('createFloatingGarbageCheck', () => {
  it('collects again after a full GC that kept far more than the recent ones, not after ordinary ones', () => {
    const check = createFloatingGarbageCheck();
    for (const [i, kept] of [45, 48, 44, 47].entries()) expect(check.afterFullGc(kept * MB, i * 1_000)).toBe(false);
    // The page cell's cycle: 77.6 MB kept where the cycles around it kept 44-50.
    expect(check.afterFullGc(77.6 * MB, 5_000)).toBe(true);
  });

  it('needs both the ratio and the bytes: a small heap that grows by a few MB is left alone', () => {
    const check = createFloatingGarbageCheck();
    check.afterFullGc(10 * MB, 0);
    expect(check.afterFullGc(17 * MB, 1_000)).toBe(false);
    const large = createFloatingGarbageCheck();
    large.afterFullGc(100 * MB, 0);
    expect(large.afterFullGc(120 * MB, 1_000)).toBe(false);
  });

  it('collects at most once an interval, and a live set that truly grew becomes the norm at once', () => {
    const check = createFloatingGarbageCheck();
    check.afterFullGc(40 * MB, 0);
    expect(check.afterFullGc(80 * MB, 1_000)).toBe(true);
    // The extra GC found it all live: the cycles after it are measured against 78 MB, not 40.
    check.collected(78 * MB, 1_100);
    expect(check.afterFullGc(100 * MB, 1_100 + RECHECK_MIN_INTERVAL_MS / 2)).toBe(false);
    expect(check.afterFullGc(150 * MB, 1_100 + RECHECK_MIN_INTERVAL_MS - 1)).toBe(false);
    expect(check.afterFullGc(150 * MB, 1_100 + RECHECK_MIN_INTERVAL_MS)).toBe(true);
  });

  it('measures the cycles after an extra GC against what it found, not against the cycles before', () => {
    const check = createFloatingGarbageCheck();
    check.afterFullGc(36 * MB, 0);
    expect(check.afterFullGc(52 * MB, 1_000)).toBe(true);
    check.collected(43 * MB, 1_100);
    // A burst: a cycle 1.3 s later keeps 70.8 MB.
    expect(check.afterFullGc(70.8 * MB, 2_400)).toBe(true);
  });

  it('measures against the smallest of the recent cycles, so that steps of under the ratio do not ratchet it up', () => {
    const check = createFloatingGarbageCheck();
    expect(check.afterFullGc(40 * MB, 0)).toBe(false);
    expect(check.afterFullGc(48 * MB, 1_000)).toBe(false);
    expect(check.afterFullGc(58 * MB, 2_000)).toBe(true);
  });
});

// The watcher itself, in a process of its own (it is process-wide; V8 reports no GC entry for the
// extra collection, so --trace-gc's lines of GCs asked for through `gc`, "testing", are counted:
// the script's and the watcher's): a full GC that keeps ~50 MB more than the one before is followed
// by one more, and the main context gets no `gc` global.
describe('recheckFloatingGarbage', () => {
  const fullGcsAfterGrowth = (watch: boolean): { fullGcs: number; gcGlobal: string } => {
    const script = `
      import v8 from 'node:v8';
      import vm from 'node:vm';
      import { recheckFloatingGarbage } from './src/floating-garbage.ts';
      if (${watch}) recheckFloatingGarbage();
      const gcGlobal = typeof globalThis.gc;
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc');
      const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
      gc(); await settle();
      console.log('GROWN');
      globalThis.held = Array.from({ length: 800_000 }, (_, i) => ({ i, s: 'x' + i }));
      gc(); await settle();
      console.log('SETTLED', gcGlobal);
    `;
    const out = execFileSync(process.execPath, ['--trace-gc', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    const lines = out.slice(out.indexOf('GROWN')).split('\n');
    const settled = lines.findIndex((l) => l.startsWith('SETTLED'));
    return { fullGcs: lines.slice(0, settled).filter((l) => l.includes('Mark-Compact') && l.includes('testing')).length, gcGlobal: lines[settled]!.split(' ')[1]! };
  };

  it('runs one more full GC after a full GC that kept far more than the one before', () => {
    expect(fullGcsAfterGrowth(false)).toEqual({ fullGcs: 1, gcGlobal: 'undefined' });
    expect(fullGcsAfterGrowth(true)).toEqual({ fullGcs: 2, gcGlobal: 'undefined' });
  });
});
