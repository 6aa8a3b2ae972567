/**
 * PostgreSQL's `encode(bytes, 'base64')` written from its definition (src/backend/utils/adt/encode.c):
 * RFC 4648's alphabet and padding, a newline after every 76 characters of full groups, none after
 * a padded group. test/integration/packed-phi.test.ts holds src/db/pg-base64.ts to what PostgreSQL sends.
 */
export function pgBase64(bytes: Buffer): string {
  const full = bytes.toString('base64');
  const lines: string[] = [];
  const body = Math.floor(bytes.length / 3) * 4;
  for (let at = 0; at < body; at += 76) lines.push(full.slice(at, Math.min(at + 76, body)) + (at + 76 <= body ? '\n' : ''));
  return lines.join('') + full.slice(body);
}
