import pg from 'pg';

/**
 * pg's text parsers for the two types a page parses hundreds of times, on the gateway's pools
 * only (createPool), never installed globally: `bytea` (every ciphertext) and `timestamptz`
 * (every encounter's date). Each takes the form PostgreSQL sends by default without a regular
 * expression and gives what pg's own parser gives.
 */

const BACKSLASH = 0x5c;
const LOWER_X = 0x78;
const defaultTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text') as (text: string) => Date | number | null;

/**
 * `\x` followed by hex (bytea_output = hex, the default since PostgreSQL 9.0), decoded as pg
 * decodes it; the escape form decoded here too, since pg's parser never returns from a backslash
 * followed by anything but a backslash or three octal digits (PostgreSQL sends no such thing):
 * that is refused, and pg fails the query with it.
 */
export function parseBytea(text: string): Buffer {
  return text.charCodeAt(0) === BACKSLASH && text.charCodeAt(1) === LOWER_X ? Buffer.from(text.slice(2), 'hex') : parseEscapedBytea(text);
}

function octal(text: string, at: number): number {
  const c = text.charCodeAt(at) - 0x30;
  return c >= 0 && c <= 7 ? c : -1;
}

function parseEscapedBytea(text: string): Buffer {
  const out = Buffer.alloc(text.length);
  let n = 0;
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i);
    if (c !== BACKSLASH) {
      // pg's parser keeps each character's low byte ('binary').
      out[n++] = c & 0xff;
      i++;
    } else if (text.charCodeAt(i + 1) === BACKSLASH) {
      out[n++] = BACKSLASH;
      i += 2;
    } else {
      const a = octal(text, i + 1);
      const b = octal(text, i + 2);
      const d = octal(text, i + 3);
      if (a < 0 || b < 0 || d < 0) throw new TypeError('bytea: malformed escape');
      out[n++] = (a * 64 + b * 8 + d) & 0xff;
      i += 4;
    }
  }
  return out.subarray(0, n);
}

// The digit at `at`, or -1.
function digit(text: string, at: number): number {
  const c = text.charCodeAt(at) - 0x30;
  return c >= 0 && c <= 9 ? c : -1;
}

function twoDigits(text: string, at: number): number {
  const a = digit(text, at);
  const b = digit(text, at + 1);
  return a < 0 || b < 0 ? -1 : a * 10 + b;
}

/**
 * `YYYY-MM-DD HH:MM:SS[.f{1,6}]±HH[:MM]` (DateStyle ISO, any TimeZone) with a year from 1000 to
 * 9999; infinities, BC, other years and any other form go to pg's parser. Milliseconds are the
 * fraction's first three digits, as pg's parser truncates them.
 */
export function parseTimestamptz(text: string): Date | number | null {
  const n = text.length;
  if (n < 22 || text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d || text.charCodeAt(10) !== 0x20 || text.charCodeAt(13) !== 0x3a || text.charCodeAt(16) !== 0x3a) {
    return defaultTimestamptz(text);
  }
  const century = twoDigits(text, 0);
  const yy = twoDigits(text, 2);
  const month = twoDigits(text, 5);
  const day = twoDigits(text, 8);
  const hour = twoDigits(text, 11);
  const minute = twoDigits(text, 14);
  const second = twoDigits(text, 17);
  if (century < 10 || yy < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return defaultTimestamptz(text);
  let at = 19;
  let ms = 0;
  if (text.charCodeAt(at) === 0x2e) {
    const start = ++at;
    for (let d = digit(text, at); d >= 0 && at - start < 6; d = digit(text, ++at)) if (at - start < 3) ms = ms * 10 + d;
    const digits = at - start;
    if (digits === 0) return defaultTimestamptz(text);
    for (let k = digits; k < 3; k++) ms *= 10;
  }
  const sign = text.charCodeAt(at);
  if (sign !== 0x2b && sign !== 0x2d) return defaultTimestamptz(text);
  const offsetHours = twoDigits(text, at + 1);
  let offsetMinutes = 0;
  let end = at + 3;
  if (text.charCodeAt(end) === 0x3a) {
    offsetMinutes = twoDigits(text, end + 1);
    end += 3;
  }
  if (offsetHours < 0 || offsetMinutes < 0 || end !== n) return defaultTimestamptz(text);
  const offsetMs = (sign === 0x2d ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000;
  return new Date(Date.UTC(century * 100 + yy, month - 1, day, hour, minute, second, ms) - offsetMs);
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const isLeap = (year: number) => year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);

// The ISO form is written here and read out as one flat string. Built by concatenation it was
// a cons string of six pieces, ~210 bytes against ~40, held in the answer of every encounter's
// date until the page's audit commit (bench/README.md, branch pagegc).
const ISO_LENGTH = 24;
const ISO = Buffer.alloc(ISO_LENGTH, 0x5a);

/**
 * What `parseTimestamptz(text).toISOString()` gives, for a date that is only ever printed (an
 * encounter's, read as text): PostgreSQL's UTC form `YYYY-MM-DD HH:MM:SS[.f{1,6}]+00` (a server or
 * session in UTC), a valid date and time of a year from 1000 to 9999, is rewritten character by
 * character, milliseconds truncated as the parser truncates them; any other offset or form goes
 * through parseTimestamptz and a Date, and fails as that would.
 */
export function isoOfTimestamptz(text: string): string {
  const n = text.length;
  if (
    n >= 22 && n !== 23 && n <= 29 &&
    text.charCodeAt(n - 3) === 0x2b && text.charCodeAt(n - 2) === 0x30 && text.charCodeAt(n - 1) === 0x30 &&
    text.charCodeAt(4) === 0x2d && text.charCodeAt(7) === 0x2d && text.charCodeAt(10) === 0x20 && text.charCodeAt(13) === 0x3a && text.charCodeAt(16) === 0x3a &&
    (n === 22 || text.charCodeAt(19) === 0x2e)
  ) {
    const century = twoDigits(text, 0);
    const yy = twoDigits(text, 2);
    const month = twoDigits(text, 5);
    const day = twoDigits(text, 8);
    const hour = twoDigits(text, 11);
    const minute = twoDigits(text, 14);
    const second = twoDigits(text, 17);
    let fraction = true;
    for (let at = 20; at < n - 3; at++) if (digit(text, at) < 0) fraction = false;
    const year = century * 100 + yy;
    if (
      fraction && century >= 10 && yy >= 0 && month >= 1 && month <= 12 && day >= 1 &&
      day <= (month === 2 && isLeap(year) ? 29 : DAYS_IN_MONTH[month - 1]!) && hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 59
    ) {
      for (let at = 0; at < 19; at++) ISO[at] = text.charCodeAt(at);
      ISO[10] = 0x54;
      ISO[19] = 0x2e;
      for (let at = 20; at < 23; at++) ISO[at] = at < n - 3 ? text.charCodeAt(at) : 0x30;
      return ISO.toString('latin1', 0, ISO_LENGTH);
    }
  }
  return (parseTimestamptz(text) as Date).toISOString();
}

/** The type parsers of the gateway's pools: pg's, but for bytea and timestamptz above. */
export const GATEWAY_TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (format !== 'binary') {
      if (oid === pg.types.builtins.BYTEA) return parseBytea;
      if (oid === pg.types.builtins.TIMESTAMPTZ) return parseTimestamptz;
    }
    return pg.types.getTypeParser(oid, format ?? 'text');
  },
} as pg.CustomTypesConfig;
