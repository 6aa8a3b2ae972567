import { createCipheriv, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeUnavailable, openGcmInto, useAead, type AeadMode } from '../../../src/crypto/aead.ts';
import { openField, sealField, sealedUnder } from '../../../src/crypto/envelope.ts';
import type { DataKey, FieldAad, PatientKey } from '../../../src/crypto/envelope.ts';
import { PhigateError } from '../../../src/errors.ts';

// What a database row may hold is not trusted: every value below is one an attacker with write
// access to the table (or a corrupted page) could leave there. Each must fail as KEY_UNAVAILABLE,
// never return text, and leave the next honest value readable.
const key: DataKey = { scope: 'clinic-a', version: 3, key: randomBytes(32) };
const patientKey: PatientKey = { scope: 'clinic-a', version: 3, key: randomBytes(32), patientId: '7f9c1e4a-0000-4000-8000-00000000000a', patientVersion: 2 };
const aad: FieldAad = { table: 'patients', column: 'ssn', rowId: '7f9c1e4a-0000-4000-8000-000000000001' };
const secret = 'a secret of thirty-odd bytes, 123-45-6789';
const native = nativeUnavailable() === null;
const implementations: AeadMode[] = native ? ['native', 'node'] : ['node'];

function refusal(fn: () => unknown): PhigateError {
  let error: unknown = null;
  let value: unknown;
  try {
    value = fn();
  } catch (e) {
    error = e;
  }
  expect(value).toBeUndefined();
  expect(error).toBeInstanceOf(PhigateError);
  const e = error as PhigateError;
  expect(e.code).toBe('KEY_UNAVAILABLE');
  expect(JSON.stringify({ message: e.message, extensions: e.extensions })).not.toContain('secret');
  return e;
}

describe.each(implementations)('hostile ciphertexts (PHIGATE_AEAD=%s)', (mode) => {
  beforeAll(() => void useAead(mode));
  afterAll(() => void useAead('auto'));

  it('refuses every truncation of a value, header-only values included, and still opens the whole', () => {
    for (const k of [key, patientKey]) {
      const sealed = sealField(k, aad, secret);
      for (let n = 0; n < sealed.length; n++) refusal(() => openField(k, aad, sealed.subarray(0, n)));
      // Cut from the front too: the tag is intact, the header and nonce are not.
      for (let n = 1; n < sealed.length; n++) refusal(() => openField(k, aad, sealed.subarray(n)));
      expect(openField(k, aad, sealed)).toBe(secret);
    }
  });

  it('refuses a body shortened, lengthened or swapped for another value of the same length', () => {
    const sealed = sealField(key, aad, secret);
    const header = sealed.subarray(0, 17);
    const body = sealed.subarray(17, sealed.length - 16);
    const tag = sealed.subarray(sealed.length - 16);
    refusal(() => openField(key, aad, Buffer.concat([header, body.subarray(1), tag])));
    refusal(() => openField(key, aad, Buffer.concat([header, body, Buffer.from('x'), tag])));
    refusal(() => openField(key, aad, Buffer.concat([sealed, Buffer.alloc(16)])));
    const other = sealField(key, aad, secret.replace('secret', 'sekret'));
    refusal(() => openField(key, aad, Buffer.concat([header, other.subarray(17, other.length - 16), tag])));
  });

  it('refuses zero versions and a header claiming the other format', () => {
    const sealed = sealField(patientKey, aad, secret);
    const zeroPatient = Buffer.from(sealed);
    zeroPatient.writeUInt32BE(0, 5);
    expect(refusal(() => openField(patientKey, aad, zeroPatient)).extensions.reason).toBe('malformed_ciphertext');
    const zeroClinic = Buffer.from(sealed);
    zeroClinic.writeUInt32BE(0, 1);
    expect(refusal(() => openField(patientKey, aad, zeroClinic)).extensions.reason).toBe('malformed_ciphertext');
    const asV1 = Buffer.from(sealed);
    asV1[0] = 0x01;
    refusal(() => openField(patientKey, aad, asV1));
    refusal(() => openField(key, aad, asV1));
    // A caller handing in another value's header facts gets a refusal, not a misaligned open.
    refusal(() => openField(patientKey, aad, sealed, { version: 3, patientVersion: null }));
    refusal(() => openField(key, aad, sealField(key, aad, secret), sealedUnder(sealed)));
  });

  it('refuses a forged value of several megabytes, and opens the next honest value', () => {
    const header = sealField(key, aad, secret).subarray(0, 17);
    const huge = Buffer.concat([header, randomBytes(8 * 1024 * 1024), randomBytes(16)]);
    expect(refusal(() => openField(key, aad, huge)).extensions.reason).toBe('decrypt_failed');
    expect(openField(key, aad, sealField(key, aad, secret))).toBe(secret);
    // A value past the scratch buffer's bound opens through a buffer of its own.
    const large = 'y'.repeat(300 * 1024);
    expect(openField(key, aad, sealField(key, aad, large))).toBe(large);
    expect(openField(key, aad, sealField(key, aad, secret))).toBe(secret);
  });

  it('leaves no plaintext in the output when a forged value is opened into it', () => {
    const k = randomBytes(32);
    const iv = randomBytes(12);
    const plain = Buffer.from(secret);
    const c = createCipheriv('aes-256-gcm', k, iv);
    const body = c.update(plain);
    c.final();
    const tag = c.getAuthTag();
    tag[3]! ^= 0x80;
    const out = Buffer.alloc(body.length + 8, 0xee);
    expect(openGcmInto(out, k, iv, Buffer.alloc(0), body, tag)).toBe(false);
    expect(out.includes(plain.subarray(0, 8))).toBe(false);
    // The bytes past the ciphertext's length are not the addon's to touch.
    expect(out.subarray(body.length).every((b) => b === 0xee)).toBe(true);
  });
});

describe.runIf(native)('the addon under hostile arguments', () => {
  const addon = createRequire(import.meta.url)(path.resolve('native/build/Release/aead.node')) as Record<'open' | 'seal', (...args: unknown[]) => number>;
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const none = Buffer.alloc(0);

  it('refuses typed arrays that are not bytes, and plain objects posing as Buffers', () => {
    const out = Buffer.alloc(64);
    for (const fake of [new Uint16Array(16), new Float64Array(4), new DataView(new ArrayBuffer(32)), { length: 32, buffer: new ArrayBuffer(32) }, null, 32]) {
      expect(() => addon.seal(fake, iv, none, Buffer.alloc(4), out)).toThrow(TypeError);
      expect(() => addon.open(key, iv, none, Buffer.alloc(4), Buffer.alloc(16), fake)).toThrow(TypeError);
    }
  });

  it('refuses an output shorter than the ciphertext, the same memory as it, or extra arguments', () => {
    const sealed = Buffer.alloc(20);
    expect(addon.seal(key, iv, none, Buffer.from('abcd'), sealed)).toBe(20);
    const [body, tag] = [sealed.subarray(0, 4), sealed.subarray(4)];
    expect(() => addon.open(key, iv, none, body, tag, Buffer.alloc(3))).toThrow(RangeError);
    expect(() => addon.open(key, iv, none, body, tag, body)).toThrow(RangeError);
    expect(() => addon.open(key, iv, none, body, tag, tag)).toThrow(RangeError);
    expect(() => addon.open(key, iv, body, Buffer.alloc(0), tag, body)).not.toThrow();
    expect(() => addon.open(key, iv, none, body, tag, Buffer.alloc(4), Buffer.alloc(4))).toThrow(TypeError);
    const out = Buffer.alloc(4);
    expect(addon.open(key, iv, none, body, tag, out)).toBe(4);
    expect(out.toString()).toBe('abcd');
  });

  it('keeps the threads apart: workers sealing and opening at once agree with node:crypto', async () => {
    const addonPath = path.resolve('native/build/Release/aead.node');
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { createCipheriv, randomBytes } = require('node:crypto');
      const addon = require(workerData);
      let bad = 0;
      for (let i = 0; i < 5000; i++) {
        const key = randomBytes(32), iv = randomBytes(12), aad = randomBytes(i % 40), plain = randomBytes(i % 97);
        const out = Buffer.alloc(plain.length + 16);
        addon.seal(key, iv, aad, plain, out);
        const c = createCipheriv('aes-256-gcm', key, iv); c.setAAD(aad);
        const expected = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
        const back = Buffer.alloc(plain.length);
        if (!out.equals(expected) || addon.open(key, iv, aad, out.subarray(0, plain.length), out.subarray(plain.length), back) !== plain.length || !back.equals(plain)) bad++;
      }
      parentPort.postMessage(bad);
    `;
    const run = () =>
      new Promise<number>((resolve, reject) => {
        const w = new Worker(source, { eval: true, workerData: addonPath });
        w.once('message', (n: number) => void w.terminate().then(() => resolve(n)));
        w.once('error', reject);
      });
    expect(await Promise.all([run(), run(), run()])).toEqual([0, 0, 0]);
  });
});

describe.each(implementations)('plaintext left behind (PHIGATE_AEAD=%s)', (mode) => {
  beforeAll(() => void useAead(mode));
  afterAll(() => void useAead('auto'));

  it("leaves no sealed value's bytes in Node's shared allocation pool", () => {
    // Assembled at run time, so that no literal of these bytes sits in the pool beforehand.
    const value = ['pool', 'probe', String(Date.now()), 'x'.repeat(20)].join('-');
    const sealed = sealField(key, aad, value);
    // A small unsafe allocation is a view of the pool the encoding used: the probe searches all of it.
    const pool = Buffer.from(Buffer.allocUnsafe(1).buffer);
    expect(pool.includes(value)).toBe(false);
    expect(openField(key, aad, sealed)).toBe(value);
    expect(Buffer.from(Buffer.allocUnsafe(1).buffer).includes(value)).toBe(false);
  });
});
