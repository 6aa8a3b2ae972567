import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MAX_SEMI_SPACE_MB, SCAVENGE_DURING_MARKING_FLAG, STARTUP_ENV, STARTUP_FLAGS, relaunchWithStartupSettings, startupRelaunch } from '../../src/heap.ts';

// What bin/start.js starts the gateway again with: V8's semi-space cap and glibc's malloc settings
// apply only from a process's start (src/heap.ts).
describe('startupRelaunch', () => {
  const argv = ['/usr/bin/node', '/app/bin/start.js', '--flag-of-the-script'];

  it('adds the semi-space cap, scavenges during marking and the arena limit, keeping the command line and the environment', () => {
    const relaunch = startupRelaunch(['--enable-source-maps'], argv, { PHIGATE_PORT: '4000' });
    expect(STARTUP_FLAGS).toEqual([`--max-semi-space-size=${MAX_SEMI_SPACE_MB}`, '--no-separate-gc-phases']);
    expect(SCAVENGE_DURING_MARKING_FLAG).toBe('--no-separate-gc-phases');
    expect(relaunch).toEqual({
      args: [...STARTUP_FLAGS, '--enable-source-maps', '/app/bin/start.js', '--flag-of-the-script'],
      env: { PHIGATE_PORT: '4000', ...STARTUP_ENV },
    });
    expect(relaunch!.env.MALLOC_ARENA_MAX).toBe('2');
  });

  it('does nothing once both are in effect, so the relaunched process runs on', () => {
    const first = startupRelaunch([], argv, {})!;
    expect(startupRelaunch(first.args.slice(0, STARTUP_FLAGS.length), argv, first.env)).toBeNull();
  });

  it("starts with glibc's mmap threshold at 32 KB, unless the operator set it by variable or tunable, and adds only what is missing", () => {
    expect(STARTUP_ENV).toEqual({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768' });
    const flags = [...STARTUP_FLAGS];
    expect(startupRelaunch(flags, argv, { MALLOC_ARENA_MAX: '2' })!.env).toEqual({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768' });
    expect(startupRelaunch(flags, argv, { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' })).toBeNull();
    expect(startupRelaunch(flags, argv, { GLIBC_TUNABLES: 'glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=65536' })).toBeNull();
    expect(startupRelaunch(flags, argv, { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=65536' })!.env).toEqual({ GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=65536', MALLOC_ARENA_MAX: '2' });
  });

  it("keeps the operator's own settings, from the command line, NODE_OPTIONS or glibc's tunables", () => {
    expect(startupRelaunch(['--max_semi_space_size=64', '--separate-gc-phases'], argv, { MALLOC_ARENA_MAX: '8', MALLOC_MMAP_THRESHOLD_: '65536' })).toBeNull();
    // Node refuses --separate-gc-phases in NODE_OPTIONS: that one goes on the command line.
    const tunables = { NODE_OPTIONS: '--max-semi-space-size=32', GLIBC_TUNABLES: 'glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=65536' };
    expect(startupRelaunch([], argv, tunables)).toEqual({ args: [SCAVENGE_DURING_MARKING_FLAG, '/app/bin/start.js', '--flag-of-the-script'], env: tunables });
    expect(startupRelaunch([SCAVENGE_DURING_MARKING_FLAG], argv, tunables)).toBeNull();
    expect(startupRelaunch([], argv, { MALLOC_ARENA_MAX: '8' })).toEqual({ args: [...STARTUP_FLAGS, '/app/bin/start.js', '--flag-of-the-script'], env: { MALLOC_ARENA_MAX: '8', MALLOC_MMAP_THRESHOLD_: '32768' } });
    expect(startupRelaunch(['--max-semi-space-size=64'], argv, {})).toEqual({
      args: [SCAVENGE_DURING_MARKING_FLAG, '--max-semi-space-size=64', '/app/bin/start.js', '--flag-of-the-script'],
      env: { ...STARTUP_ENV },
    });
    expect(startupRelaunch(['--max-semi-space-size=64', '--separate-gc-phases'], argv, { ...STARTUP_ENV })).toBeNull();
    expect(startupRelaunch(['--no-separate_gc_phases'], argv, { ...STARTUP_ENV })).toEqual({
      args: [`--max-semi-space-size=${MAX_SEMI_SPACE_MB}`, '--no-separate_gc_phases', '/app/bin/start.js', '--flag-of-the-script'],
      env: { ...STARTUP_ENV },
    });
  });

  // Node exits with "bad option" on a V8 flag its V8 does not know: every Node of `engines` must know them.
  it('starts a process on this Node with the flags', () => {
    expect(() => execFileSync(process.execPath, [...STARTUP_FLAGS, '-e', '0'], { stdio: 'pipe' })).not.toThrow();
  });
});

describe('relaunchWithStartupSettings', () => {
  const node = process as NodeJS.Process & { execve?: unknown };
  const own = Object.getOwnPropertyDescriptor(process, 'execve');
  afterEach(() => {
    if (own) Object.defineProperty(process, 'execve', own);
    else delete node.execve;
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  });

  it('replaces the process with node, the settings and the same script and arguments', () => {
    const execve = vi.fn();
    node.execve = execve;
    vi.stubEnv('MALLOC_ARENA_MAX', undefined);
    vi.stubEnv('MALLOC_MMAP_THRESHOLD_', undefined);
    relaunchWithStartupSettings();
    const expected = startupRelaunch(process.execArgv, process.argv, process.env)!;
    expect(expected.env.MALLOC_ARENA_MAX).toBe(STARTUP_ENV.MALLOC_ARENA_MAX);
    expect(expected.env.MALLOC_MMAP_THRESHOLD_).toBe(STARTUP_ENV.MALLOC_MMAP_THRESHOLD_);
    expect(execve).toHaveBeenCalledExactlyOnceWith(process.execPath, [process.execPath, ...expected.args], expected.env);
  });

  it('runs on as started, saying so in one line, when the restart is refused', () => {
    node.execve = () => {
      throw Object.assign(new Error('refused'), { code: 'ERR_ACCESS_DENIED' });
    };
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    vi.stubEnv('MALLOC_ARENA_MAX', undefined);
    expect(() => relaunchWithStartupSettings()).not.toThrow();
    expect(write).toHaveBeenCalledTimes(1);
    expect(String(write.mock.calls[0]![0])).toMatch(/could not restart itself .*\(ERR_ACCESS_DENIED\); running without them/);
  });

  it('does nothing on a Node without process.execve (Node 20)', () => {
    delete node.execve;
    expect(() => relaunchWithStartupSettings()).not.toThrow();
  });
});
