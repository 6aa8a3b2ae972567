import { PhigateError } from '../errors.ts';

/**
 * Input checks for arguments. Each failure names the argument and the rule it broke and never
 * echoes the value (it may be PHI).
 */
const bad = (message: string) => new PhigateError('BAD_USER_INPUT', message);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// C0/C1 controls, bidi overrides and zero-width characters have no business in a record.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/u;
// With the u flag a surrogate pair is one code point, so this matches unpaired halves only.
const LONE_SURROGATE = /[\ud800-\udfff]/u;

export function id(name: string, value: string): string {
  if (!UUID.test(value)) throw bad(`${name} must be an id (a UUID).`);
  return value.toLowerCase();
}

export function text(name: string, value: string, max: number): string {
  const v = value.normalize('NFC').trim();
  if (v.length === 0) throw bad(`${name} must not be empty.`);
  if (v.length > max) throw bad(`${name} must be at most ${max} characters.`);
  if (INVISIBLE.test(v)) throw bad(`${name} must not contain control or invisible characters.`);
  if (LONE_SURROGATE.test(v)) throw bad(`${name} must be well-formed Unicode text.`);
  return v;
}

export function date(name: string, value: string, now: Date = new Date()): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value.trim());
  const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (!m || !d || d.toISOString().slice(0, 10) !== value.trim()) throw bad(`${name} must be a date as YYYY-MM-DD.`);
  if (d.getTime() > now.getTime()) throw bad(`${name} must not be in the future.`);
  if (Number(m[1]) < 1880) throw bad(`${name} must be after 1880.`);
  return value.trim();
}

export function timestamp(name: string, value: string): Date {
  const v = value.trim();
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/.test(v)) {
    throw bad(`${name} must be an ISO 8601 date-time with a time zone, e.g. 2026-01-31T09:30:00Z.`);
  }
  // Date accepts days a month does not have (2024-02-30 becomes 2024-03-01) and 24:00; refuse
  // them rather than record a different date of service than the one given.
  const [y, mo, da, h] = [v.slice(0, 4), v.slice(5, 7), v.slice(8, 10), v.slice(11, 13)].map(Number) as [number, number, number, number];
  const day = new Date(Date.UTC(y, mo - 1, da));
  const d = new Date(v);
  if (Number.isNaN(d.getTime()) || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== da || h > 23) {
    throw bad(`${name} must be a valid date-time.`);
  }
  if (y < 1880) throw bad(`${name} must be after 1880.`);
  return d;
}

export function email(name: string, value: string): string {
  const v = text(name, value, 254);
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v)) throw bad(`${name} must be an email address.`);
  return v;
}

export function phone(name: string, value: string): string {
  const v = text(name, value, 32);
  if (!/^\+?[0-9 ().-]{7,31}$/.test(v)) throw bad(`${name} must be a phone number (digits, spaces, + ( ) . -).`);
  return v;
}

export function kind(name: string, value: string): string {
  if (!/^[a-z][a-z_]{0,31}$/.test(value)) throw bad(`${name} must be lower-case letters and underscores, at most 32.`);
  return value;
}

export function diagnosisCodes(name: string, values: readonly string[]): string[] {
  if (values.length > 20) throw bad(`${name} must have at most 20 codes.`);
  return values.map((c) => {
    const v = c.trim().toUpperCase();
    if (!/^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$/.test(v)) throw bad(`${name} must hold ICD-10 codes such as E11.9.`);
    return v;
  });
}

export function subjects(name: string, values: readonly string[]): string[] {
  if (values.length > 50) throw bad(`${name} must have at most 50 entries.`);
  const out = values.map((s) => text(name, s, 255));
  return [...new Set(out)];
}
