import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLocalKeyProvider, loadOrCreateLocalMasterKey } from '../../../src/crypto/keys/local.ts';
import { rejected, thrown } from './expect-error.ts';

const context = { purpose: 'data', scope: 'clinic-a', version: '1' };

describe('createLocalKeyProvider', () => {
  const master = randomBytes(32);
  const provider = createLocalKeyProvider(master);

  it('names the master key by a fingerprint, not the key', () => {
    const fingerprint = createHash('sha256').update(master).digest().subarray(0, 8).toString('hex');
    expect(provider.name).toBe('local');
    expect(provider.keyRef).toBe(`local:${fingerprint}`);
  });

  it('wraps a fresh 32-byte key and unwraps it with the same context, in any key order', async () => {
    const { plaintext, wrapped } = await provider.generateDataKey(context);
    expect(plaintext.length).toBe(32);
    expect(wrapped.includes(plaintext)).toBe(false);
    const reordered = { version: '1', scope: 'clinic-a', purpose: 'data' };
    expect((await provider.decryptDataKey(wrapped, reordered)).equals(plaintext)).toBe(true);
    expect((await provider.generateDataKey(context)).plaintext.equals(plaintext)).toBe(false);
  });

  it.each([
    ['another clinic', { ...context, scope: 'clinic-b' }],
    ['another version', { ...context, version: '2' }],
    ['an extra entry', { ...context, extra: 'x' }],
    ['a missing entry', { purpose: 'data', scope: 'clinic-a' }],
    ['no context', {}],
  ])('refuses to unwrap under %s', async (_, other) => {
    const { wrapped } = await provider.generateDataKey(context);
    const e = await rejected(provider.decryptDataKey(wrapped, other), 'KEY_UNAVAILABLE', 'unwrap_failed');
    expect(e.cause).toBeDefined();
  });

  it('refuses a key wrapped under another master key, or tampered with', async () => {
    const { wrapped } = await provider.generateDataKey(context);
    await rejected(createLocalKeyProvider(randomBytes(32)).decryptDataKey(wrapped, context), 'KEY_UNAVAILABLE', 'unwrap_failed');
    const tampered = Buffer.from(wrapped);
    tampered[20]! ^= 0x01;
    await rejected(provider.decryptDataKey(tampered, context), 'KEY_UNAVAILABLE', 'unwrap_failed');
    await rejected(provider.decryptDataKey(wrapped.subarray(1), context), 'KEY_UNAVAILABLE', 'unwrap_failed');
  });

  it('needs a 32-byte master key', () => {
    thrown(() => createLocalKeyProvider(randomBytes(16)), 'KEY_UNAVAILABLE', 'invalid_master_key');
  });
});

describe('loadOrCreateLocalMasterKey', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'phigate-master-key-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('creates a 0600 key file in a new 0700 directory, then reuses it', async () => {
    const dataDir = path.join(root, 'data');
    const key = await loadOrCreateLocalMasterKey(dataDir, null);
    expect(key.length).toBe(32);
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(dataDir, 'master.key'))).mode & 0o777).toBe(0o600);
    expect((await loadOrCreateLocalMasterKey(dataDir, null)).equals(key)).toBe(true);
    expect(await readdir(dataDir)).toEqual(['master.key']);
  });

  it('gives every concurrent caller the same key when they race to create it', async () => {
    const dataDir = path.join(root, 'data');
    const keys = await Promise.all(Array.from({ length: 20 }, () => loadOrCreateLocalMasterKey(dataDir, null)));
    expect(new Set(keys.map((k) => k.toString('hex'))).size).toBe(1);
    expect(await readdir(dataDir)).toEqual(['master.key']);
  });

  it('refuses a key file readable by group or others, without printing the key', async () => {
    const key = randomBytes(32);
    await writeFile(path.join(root, 'master.key'), key);
    await chmod(path.join(root, 'master.key'), 0o644);
    const e = await rejected(loadOrCreateLocalMasterKey(root, null), 'KEY_UNAVAILABLE', 'master_key_insecure');
    expect(e.message).toContain('chmod 600');
    expect(e.message).not.toContain(key.toString('hex'));
    expect(e.message).not.toContain(key.toString('base64'));
    await chmod(path.join(root, 'master.key'), 0o640);
    await rejected(loadOrCreateLocalMasterKey(root, null), 'KEY_UNAVAILABLE', 'master_key_insecure');
  });

  it('refuses a key file of the wrong length', async () => {
    await writeFile(path.join(root, 'master.key'), randomBytes(31), { mode: 0o600 });
    await rejected(loadOrCreateLocalMasterKey(root, null), 'KEY_UNAVAILABLE', 'invalid_master_key');
  });

  it('uses a key from the environment and then touches no file', async () => {
    const key = randomBytes(32);
    const dataDir = path.join(root, 'data');
    expect((await loadOrCreateLocalMasterKey(dataDir, key.toString('base64'))).equals(key)).toBe(true);
    await expect(stat(dataDir)).rejects.toThrow();
  });

  it.each([
    ['too short', randomBytes(16).toString('base64')],
    ['too long', randomBytes(33).toString('base64')],
    ['not base64', '!'.repeat(44)],
    ['base64 with junk inside', `${randomBytes(32).toString('base64').slice(0, 20)}$$${randomBytes(32).toString('base64').slice(20)}`],
  ])('refuses an environment key that is %s', async (_, value) => {
    const e = await rejected(loadOrCreateLocalMasterKey(root, value), 'KEY_UNAVAILABLE', 'invalid_master_key');
    expect(e.message).not.toContain(value);
  });
});
