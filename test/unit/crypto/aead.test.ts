import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { aeadImplementation, nativeUnavailable, openGcm, openGcmInto, sealGcm, useAead, type AeadMode } from '../../../src/crypto/aead.ts';

const native = nativeUnavailable() === null;
const implementations: AeadMode[] = native ? ['native', 'node'] : ['node'];

function randomCase() {
  return { key: randomBytes(32), iv: randomBytes(12), aad: randomBytes(randomInt(0, 200)), plain: randomBytes(randomInt(0, 100)) };
}

function sealWith(mode: AeadMode, key: Buffer, iv: Buffer, aad: Buffer, plain: Buffer): Buffer {
  useAead(mode);
  return sealGcm(key, iv, aad, plain);
}

function openWith(mode: AeadMode, key: Buffer, iv: Buffer, aad: Buffer, sealed: Buffer): Buffer | null {
  useAead(mode);
  return openGcm(key, iv, aad, sealed.subarray(0, sealed.length - 16), sealed.subarray(sealed.length - 16));
}

afterEach(() => void useAead('auto'));

describe('AES-256-GCM in one call', () => {
  it('picks the addon when it is built, and node:crypto when told to', () => {
    expect(useAead('auto')).toBe(native ? 'native' : 'node:crypto');
    expect(useAead('node')).toBe('node:crypto');
    expect(aeadImplementation()).toBe('node:crypto');
  });

  it.runIf(native)('produces the same bytes as node:crypto, and each opens what the other sealed', () => {
    for (let i = 0; i < 500; i++) {
      const { key, iv, aad, plain } = randomCase();
      const byNative = sealWith('native', key, iv, aad, plain);
      const byNode = sealWith('node', key, iv, aad, plain);
      expect(byNative.equals(byNode)).toBe(true);
      expect(byNative.length).toBe(plain.length + 16);
      expect(openWith('native', key, iv, aad, byNode)?.equals(plain)).toBe(true);
      expect(openWith('node', key, iv, aad, byNative)?.equals(plain)).toBe(true);
    }
  });

  it('matches a published test vector (GCM spec, test case 16 without its AAD split)', () => {
    // McGrew and Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, 96-bit IV, 20 bytes of AAD).
    const key = Buffer.from('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308', 'hex');
    const iv = Buffer.from('cafebabefacedbaddecaf888', 'hex');
    const aad = Buffer.from('feedfacedeadbeeffeedfacedeadbeefabaddad2', 'hex');
    const plain = Buffer.from(
      'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39',
      'hex',
    );
    const expected =
      '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662' +
      '76fc6ece0f4e1768cddf8853bb2d551b';
    for (const mode of implementations) {
      const sealed = sealWith(mode, key, iv, aad, plain);
      expect(sealed.toString('hex')).toBe(expected);
      expect(openWith(mode, key, iv, aad, sealed)?.equals(plain)).toBe(true);
    }
  });

  it.each(implementations)('%s: fails closed on a changed tag, ciphertext, AAD, IV or key, and hands back no bytes', (mode) => {
    const { key, iv, plain } = randomCase();
    const aad = randomBytes(100);
    const value = Buffer.concat([plain, Buffer.from('x')]);
    const sealed = sealWith(mode, key, iv, aad, value);
    const flip = (b: Buffer, at: number) => {
      const c = Buffer.from(b);
      c[at]! ^= 1;
      return c;
    };
    expect(openWith(mode, key, iv, aad, flip(sealed, sealed.length - 1))).toBeNull();
    expect(openWith(mode, key, iv, aad, flip(sealed, 0))).toBeNull();
    expect(openWith(mode, key, iv, flip(aad, 50), sealed)).toBeNull();
    expect(openWith(mode, key, flip(iv, 11), aad, sealed)).toBeNull();
    expect(openWith(mode, flip(key, 31), iv, aad, sealed)).toBeNull();
    // A failed open leaves nothing of the plaintext in the caller's buffer, and the next open works.
    const out = Buffer.alloc(value.length, 0xee);
    expect(openGcmInto(out, key, iv, aad, flip(sealed, 0).subarray(0, value.length), sealed.subarray(value.length))).toBe(false);
    expect(out.includes(value)).toBe(false);
    expect(openWith(mode, key, iv, aad, sealed)?.equals(value)).toBe(true);
  });

  it.each(implementations)('%s: refuses a key, IV or tag of the wrong length, and an output too short', (mode) => {
    useAead(mode);
    const { iv, aad } = randomCase();
    const key = randomBytes(32);
    const sealed = sealGcm(key, iv, aad, Buffer.from('value'));
    const [body, tag] = [sealed.subarray(0, 5), sealed.subarray(5)];
    for (const short of [randomBytes(16), randomBytes(24), randomBytes(33)]) {
      expect(() => sealGcm(short, iv, aad, Buffer.from('value'))).toThrow(RangeError);
      expect(() => openGcm(short, iv, aad, body, tag)).toThrow(RangeError);
    }
    expect(() => openGcm(key, randomBytes(16), aad, body, tag)).toThrow(RangeError);
    expect(() => openGcm(key, iv, aad, body, tag.subarray(0, 12))).toThrow(RangeError);
    expect(() => openGcmInto(Buffer.alloc(4), key, iv, aad, body, tag)).toThrow(RangeError);
  });

  it.runIf(native)('the addon itself refuses arguments that are not bytes, of the wrong length, or overlapping', () => {
    const addon = createRequire(import.meta.url)(path.resolve('native/build/Release/aead.node')) as Record<'open' | 'seal', (...args: unknown[]) => number>;
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const out = Buffer.alloc(64);
    expect(() => addon.seal(key, iv, Buffer.alloc(0), 'text', out)).toThrow(TypeError);
    expect(() => addon.seal(key, iv, Buffer.alloc(0))).toThrow(TypeError);
    expect(() => addon.seal(key.subarray(1), iv, Buffer.alloc(0), Buffer.alloc(4), out)).toThrow(RangeError);
    expect(() => addon.seal(key, iv, Buffer.alloc(0), Buffer.alloc(40), out.subarray(0, 55))).toThrow(RangeError);
    expect(() => addon.seal(key, iv, Buffer.alloc(0), out.subarray(0, 8), out.subarray(4))).toThrow(RangeError);
    const n = addon.seal(key, iv, Buffer.alloc(0), Buffer.from('abcd'), out);
    expect(n).toBe(20);
    expect(() => addon.open(key, iv, Buffer.alloc(0), out.subarray(0, 4), out.subarray(4, 20), out.subarray(2))).toThrow(RangeError);
  });

  it('falls back to node:crypto when the addon is not there, and PHIGATE_AEAD=native then refuses to start', () => {
    // The module looks for the addon beside itself (../../native): a copy elsewhere finds none.
    const dir = mkdtempSync(path.join(tmpdir(), 'phigate-aead-'));
    try {
      mkdirSync(path.join(dir, 'src', 'crypto'), { recursive: true });
      copyFileSync('src/crypto/aead.ts', path.join(dir, 'src', 'crypto', 'aead.ts'));
      writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
      const script = `
        const a = await import(${JSON.stringify(path.join(dir, 'src', 'crypto', 'aead.ts'))});
        let refused = null;
        try { a.useAead('native'); } catch (e) { refused = e.message; }
        const key = Buffer.alloc(32, 1), iv = Buffer.alloc(12, 2), aad = Buffer.from('aad');
        const sealed = a.sealGcm(key, iv, aad, Buffer.from('value'));
        const opened = a.openGcm(key, iv, aad, sealed.subarray(0, 5), sealed.subarray(5));
        console.log(JSON.stringify({ impl: a.aeadImplementation(), why: a.nativeUnavailable(), refused, opened: opened && opened.toString() }));
      `;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(JSON.parse(out)).toEqual({
        impl: 'node:crypto',
        why: 'the addon is not built (npm run build:native)',
        refused: 'native was required, but the addon is not built (npm run build:native)',
        opened: 'value',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
