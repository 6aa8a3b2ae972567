import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { aeadImplementation, nativeUnavailable, openGcm, openGcmInto, openText, sealGcm, useAead, type AeadMode } from '../../../src/crypto/aead.ts';

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

describe('openText: an envelope opened to its text in one call', () => {
  const fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const decoded = (bytes: Buffer): string | null => {
    try {
      return fatal.decode(bytes);
    } catch {
      return null;
    }
  };
  // header (any bytes), IV, ciphertext, tag; the AAD at the start of a longer buffer.
  const envelopeOf = (key: Buffer, aad: Buffer, plain: Buffer, header = randomBytes(5)) => {
    const iv = randomBytes(12);
    return { envelope: Buffer.concat([header, iv, sealGcm(key, iv, aad, plain)]), nonceAt: header.length };
  };
  // Well-formed and ill-formed UTF-8 side by side: overlong forms, surrogates, past U+10FFFF,
  // truncated and stray continuation bytes, the edges of each range, a BOM, NUL.
  const SAMPLES = [
    '', 'plain ascii', 'Zoë Ångström 李小龙 🩺', '\uFEFFstarts with a BOM', 'nul\u0000inside', '\u{10FFFF}', '\u{FFFF}', '\u0080', '\u07FF', '\u0800', '\uD7FF', '\uE000',
  ].map((t) => Buffer.from(t, 'utf8')).concat(
    ['c080', 'c1bf', 'e08080', 'e09fbf', 'eda080', 'edbfbf', 'f08f8080', 'f4908080', 'f5808080', 'ff', 'fe', '80', 'bf', 'c2', 'e0a0', 'f0908080', 'e282', 'f09f8f', '41c3', 'c3a9', 'efbbbf41']
      .map((h) => Buffer.from(h, 'hex')),
  );

  it.each(implementations)('%s: gives exactly what a fatal TextDecoder gives, or null where it throws', (mode) => {
    useAead(mode);
    const key = randomBytes(32);
    const aad = randomBytes(90);
    const cases = [...SAMPLES];
    for (let i = 0; i < 3000; i++) {
      // Random bytes mostly from the multi-byte lead and continuation ranges.
      const bytes = Buffer.alloc(randomInt(0, 8));
      for (let j = 0; j < bytes.length; j++) bytes[j] = [0x41, 0x80, 0xbf, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0x9f, 0xa0, 0x8f, 0x90][randomInt(0, 15)]!;
      cases.push(bytes);
    }
    let refused = 0;
    for (const plain of cases) {
      const { envelope, nonceAt } = envelopeOf(key, aad, plain);
      const expected = decoded(plain);
      if (expected === null) refused++;
      expect(openText(key, envelope, nonceAt, Buffer.concat([aad, randomBytes(7)]), aad.length)).toBe(expected);
    }
    expect(refused).toBeGreaterThan(100);
  });

  it.each(implementations)('%s: refuses a changed byte anywhere, another AAD or length, a wiped key; opens a large value', (mode) => {
    useAead(mode);
    const key = randomBytes(32);
    const aad = randomBytes(100);
    const { envelope, nonceAt } = envelopeOf(key, aad, Buffer.from('a value'), Buffer.from([2, 0, 0, 0, 1, 0, 0, 0, 1]));
    expect(openText(key, envelope, nonceAt, aad, aad.length)).toBe('a value');
    for (let at = nonceAt; at < envelope.length; at++) {
      const changed = Buffer.from(envelope);
      changed[at]! ^= 0x10;
      expect(openText(key, changed, nonceAt, aad, aad.length)).toBeNull();
    }
    const otherAad = Buffer.from(aad);
    otherAad[99]! ^= 1;
    expect(openText(key, envelope, nonceAt, otherAad, aad.length)).toBeNull();
    expect(openText(key, envelope, nonceAt, aad, aad.length - 1)).toBeNull();
    expect(openText(key, envelope, nonceAt - 1, aad, aad.length)).toBeNull();
    expect(openText(Buffer.alloc(32), envelope, nonceAt, aad, aad.length)).toBeNull();
    // Past the stack buffer of the addon: opened into memory of its own.
    const large = 'é'.repeat(40_000);
    const big = envelopeOf(key, aad, Buffer.from(large));
    expect(openText(key, big.envelope, big.nonceAt, aad, aad.length)).toBe(large);
    // Past node:crypto's bounded scratch (256 KiB): opened into a buffer of its own, then a small
    // value through the scratch again.
    const huge = 'x'.repeat(300_000);
    const hugeSealed = envelopeOf(key, aad, Buffer.from(huge));
    expect(openText(key, hugeSealed.envelope, hugeSealed.nonceAt, aad, aad.length)).toBe(huge);
    expect(openText(key, envelope, nonceAt, aad, aad.length)).toBe('a value');
  });

  it.each(implementations)('%s: refuses an envelope too short, offsets out of range and a key of the wrong length', (mode) => {
    useAead(mode);
    const key = randomBytes(32);
    const aad = randomBytes(10);
    const { envelope } = envelopeOf(key, aad, Buffer.alloc(0), Buffer.alloc(0));
    expect(openText(key, envelope, 0, aad, aad.length)).toBe('');
    expect(() => openText(key, envelope.subarray(1), 0, aad, aad.length)).toThrow(RangeError);
    expect(() => openText(key, envelope, 1, aad, aad.length)).toThrow(RangeError);
    expect(() => openText(key, envelope, 0, aad, aad.length + 1)).toThrow(RangeError);
    expect(() => openText(key.subarray(1), envelope, 0, aad, aad.length)).toThrow(RangeError);
  });

  // The addon sets a key only when it differs from the last value's (native/aead.c, open_init):
  // whichever key came before, a value opens under its own key only.
  it.each(implementations)('%s: opens each value under its own key, whatever key the value before it was under', (mode) => {
    useAead(mode);
    const aad = randomBytes(40);
    const a = randomBytes(32);
    // Keys one bit from a in the first and in the last byte: a comparison of part of the key would take them for a.
    const first = Buffer.from(a);
    first[0]! ^= 1;
    const last = Buffer.from(a);
    last[31]! ^= 0x80;
    const values = [a, first, last].map((key, i) => ({ key, ...envelopeOf(key, aad, Buffer.from(`value ${i}`)) }));
    const [va, vFirst, vLast] = values;
    const opened = (key: Buffer, v: { envelope: Buffer; nonceAt: number }) => openText(key, v.envelope, v.nonceAt, aad, aad.length);
    for (let round = 0; round < 2; round++) {
      expect(opened(a, va!)).toBe('value 0');
      expect(opened(a, va!)).toBe('value 0');
      // The key of the value before, the wrong one for these: refused, each then opens under its own.
      expect(opened(a, vFirst!)).toBeNull();
      expect(opened(a, vLast!)).toBeNull();
      expect(opened(first, vFirst!)).toBe('value 1');
      expect(opened(first, va!)).toBeNull();
      expect(opened(last, vLast!)).toBe('value 2');
      expect(opened(last, vLast!)).toBe('value 2');
      // A forged tag under the key in place, then a good value under it; a wiped key, then the key.
      const forged = Buffer.from(vLast!.envelope);
      forged[forged.length - 1]! ^= 1;
      expect(openText(last, forged, vLast!.nonceAt, aad, aad.length)).toBeNull();
      expect(opened(last, vLast!)).toBe('value 2');
      expect(opened(Buffer.alloc(32), vLast!)).toBeNull();
      expect(opened(last, vLast!)).toBe('value 2');
      // openGcm shares the addon's context: a value under another key between two under `last`.
      const iv = randomBytes(12);
      const sealed = sealGcm(a, iv, aad, Buffer.from('between'));
      expect(openGcm(a, iv, aad, sealed.subarray(0, -16), sealed.subarray(-16))?.toString()).toBe('between');
      expect(openGcm(last, iv, aad, sealed.subarray(0, -16), sealed.subarray(-16))).toBeNull();
      expect(opened(a, vLast!)).toBeNull();
      expect(opened(last, vLast!)).toBe('value 2');
    }
  });

  it.runIf(native)('the addon refuses offsets that are not unsigned integers and arguments that are not bytes', () => {
    const addon = createRequire(import.meta.url)(path.resolve('native/build/Release/aead.node')) as Record<'openText', (...args: unknown[]) => unknown>;
    const key = randomBytes(32);
    const envelope = randomBytes(40);
    expect(() => addon.openText(key, envelope, '0', Buffer.alloc(0), 0)).toThrow(TypeError);
    expect(() => addon.openText(key, envelope, 0, Buffer.alloc(0))).toThrow(TypeError);
    expect(() => addon.openText(key, 'envelope', 0, Buffer.alloc(0), 0)).toThrow(TypeError);
    expect(() => addon.openText(key, envelope, 0, new Uint16Array(4), 0)).toThrow(TypeError);
    expect(() => addon.openText(key, envelope, 13, Buffer.alloc(0), 0)).toThrow(RangeError);
    expect(addon.openText(key, envelope, 12, Buffer.alloc(0), 0)).toBeNull();
  });
});
