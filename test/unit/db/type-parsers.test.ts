import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { GATEWAY_TYPES, isoOfTimestamptz, parseBytea, parseTimestamptz } from '../../../src/db/type-parsers.ts';

const pgBytea = pg.types.getTypeParser(pg.types.builtins.BYTEA, 'text') as (text: string) => Buffer;
const pgTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text') as (text: string) => unknown;
const same = (a: unknown, b: unknown) => (a instanceof Date && b instanceof Date ? Object.is(a.getTime(), b.getTime()) : Object.is(a, b));

describe('the gateway pools’ bytea parser', () => {
  it('gives what pg gives for hex, escape, empty, odd-length and non-hex input', () => {
    const inputs = ['\\x', '\\x00', '\\xdeadBEEF', '\\xabc', '\\xzz11', '\\x12zz', 'plain', 'a\\\\b', '\\001\\002x\\377\\777', '\\\\x41', '', 'é€', '\\\\\\\\101'];
    for (let i = 0; i < 200; i++) inputs.push(`\\x${randomBytes(randomInt(0, 300)).toString('hex')}`);
    for (const text of inputs) expect(parseBytea(text).equals(pgBytea(text)), text).toBe(true);
  });

  it('refuses an escape PostgreSQL never sends, on which pg’s own parser never returns', () => {
    for (const text of ['\\X12', '\\', 'a\\b', '\\\\\\a', '\\12', '\\128']) expect(() => parseBytea(text), text).toThrow(TypeError);
  });
});

describe('the gateway pools’ timestamptz parser', () => {
  const pad = (n: number, w: number) => String(n).padStart(w, '0');
  it('gives the same instant as pg for what PostgreSQL sends, in any time zone, and hands anything else to pg', () => {
    const inputs = [
      '2026-12-06 08:30:00+00', '2026-12-06 08:30:00.5+00', '2026-12-06 08:30:00.123456+00', '2026-12-06 08:30:00.000001-08',
      '1999-12-31 23:59:59.999999+05:30', '2000-02-29 00:00:00+14', '2000-02-29 00:00:00-12:45', '1000-01-01 00:00:00+00', '9999-12-31 23:59:59.999+00',
      '0999-01-01 00:00:00+00', '0099-06-01 12:00:00+00', '0001-01-01 00:00:00+00 BC', '12026-01-01 00:00:00+00', 'infinity', '-infinity',
      '2026-12-06 08:30:00.1234567+00', '2026-12-06 08:30:00.+00', '2026-12-06 08:30:00+00:30:15', '2026-12-06 08:30:00Z', '2026-12-06T08:30:00+00',
      '2026-12-06 08:30:00', '2026-12-06', '2026-13-45 25:61:61+00', 'not a date', '',
    ];
    for (let i = 0; i < 3000; i++) {
      const fraction = randomInt(0, 3) === 0 ? '' : `.${pad(randomInt(0, 1_000_000), 6).slice(0, randomInt(1, 7))}`;
      const offset = `${randomInt(0, 2) ? '+' : '-'}${pad(randomInt(0, 15), 2)}${randomInt(0, 3) === 0 ? `:${pad(randomInt(0, 60), 2)}` : ''}`;
      inputs.push(`${pad(randomInt(1000, 10000), 4)}-${pad(randomInt(1, 13), 2)}-${pad(randomInt(1, 29), 2)} ${pad(randomInt(0, 24), 2)}:${pad(randomInt(0, 60), 2)}:${pad(randomInt(0, 60), 2)}${fraction}${offset}`);
    }
    for (const text of inputs) expect(same(parseTimestamptz(text), pgTimestamptz(text)), text).toBe(true);
    expect((parseTimestamptz('2026-12-06 08:30:00.123456-01:30') as Date).toISOString()).toBe('2026-12-06T10:00:00.123Z');
  });

  it('prints an instant as pg’s Date would print it, or fails as that would, whatever the text', () => {
    const printed = (f: () => unknown): string => {
      try {
        return `ok ${String(f())}`;
      } catch (e) {
        return `threw ${(e as Error).name}`;
      }
    };
    const inputs = [
      '2026-12-06 08:30:00+00', '2026-12-06 08:30:00.5+00', '2026-12-06 08:30:00.12+00', '2026-12-06 08:30:00.123+00', '2026-12-06 08:30:00.1239+00',
      '2026-12-06 08:30:00.123456+00', '2026-12-06 08:30:00.000001+00', '2024-02-29 23:59:59.999999+00', '2023-02-29 00:00:00+00', '2026-04-31 00:00:00+00',
      '2026-12-06 24:00:00+00', '2026-12-06 23:60:00+00', '2026-12-06 23:59:60+00', '2026-00-06 08:30:00+00', '2026-12-00 08:30:00+00',
      '1000-01-01 00:00:00+00', '9999-12-31 23:59:59.999+00', '0999-12-31 23:59:59+00', '1900-02-29 00:00:00+00', '2000-02-29 00:00:00+00',
      '2026-12-06 08:30:00.+00', '2026-12-06 08:30:00.1234567+00', '2026-12-06 08:30:00.12a+00', '2026-12-06 08:30:00+01', '2026-12-06 08:30:00-00',
      '2026-12-06 08:30:00+00:30', '2026-12-06T08:30:00+00', '2026-12-06 08:30:00Z', 'infinity', '-infinity', '0001-01-01 00:00:00+00 BC', '', 'x',
    ];
    for (let i = 0; i < 3000; i++) {
      const fraction = randomInt(0, 3) === 0 ? '' : `.${pad(randomInt(0, 1_000_000), 6).slice(0, randomInt(1, 7))}`;
      const offset = randomInt(0, 4) === 0 ? `-${pad(randomInt(0, 15), 2)}` : '+00';
      inputs.push(`${pad(randomInt(990, 10000), 4)}-${pad(randomInt(0, 14), 2)}-${pad(randomInt(0, 33), 2)} ${pad(randomInt(0, 25), 2)}:${pad(randomInt(0, 61), 2)}:${pad(randomInt(0, 61), 2)}${fraction}${offset}`);
    }
    for (const text of inputs) expect(printed(() => isoOfTimestamptz(text)), text).toBe(printed(() => (pgTimestamptz(text) as Date).toISOString()));
  });

  it('prints a date as one flat string, not a chain of its pieces, since the answer holds it until the audit commit', () => {
    // In a child process, so that the heap measured is this alone: 20,000 dates held, after full GCs.
    const script = `
      import { isoOfTimestamptz } from './src/db/type-parsers.ts';
      const used = () => { globalThis.gc(); globalThis.gc(); return process.memoryUsage().heapUsed; };
      const held = new Array(20_000);
      const before = used();
      for (let i = 0; i < held.length; i++) held[i] = isoOfTimestamptz('2026-12-' + String(10 + (i % 20)) + ' 08:' + String(10 + (i % 50)) + ':30.123456+00');
      console.log('HELD', (used() - before) / held.length, held[7]);
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    const [, bytes, sample] = out.slice(out.indexOf('HELD')).trim().split(/\s+/);
    expect(sample).toBe('2026-12-17T08:17:30.123Z');
    // A flat string of 24 characters is ~40 bytes; the six-piece cons string it replaced held ~210.
    expect(Number(bytes)).toBeGreaterThan(20);
    expect(Number(bytes)).toBeLessThan(80);
  }, 60_000);

  it('is what the gateway pools use for these two types, and pg’s parser for every other', () => {
    expect(GATEWAY_TYPES.getTypeParser(pg.types.builtins.BYTEA, 'text')).toBe(parseBytea);
    expect(GATEWAY_TYPES.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text')).toBe(parseTimestamptz);
    expect(GATEWAY_TYPES.getTypeParser(pg.types.builtins.TIMESTAMP, 'text')).toBe(pg.types.getTypeParser(pg.types.builtins.TIMESTAMP, 'text'));
    expect(GATEWAY_TYPES.getTypeParser(pg.types.builtins.BYTEA, 'binary')).toBe(pg.types.getTypeParser(pg.types.builtins.BYTEA, 'binary'));
    // Not installed globally: other pools and clients keep pg's own.
    expect(pg.types.getTypeParser(pg.types.builtins.BYTEA, 'text')).not.toBe(parseBytea);
  });
});
