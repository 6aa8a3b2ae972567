import { tokenRefused } from './token-refused.ts';

/** Bounds on a token's times that jose does not impose (settings; see config.ts `oidc`). */
export interface TokenTimeLimits {
  /** Longest `exp - iat`, and furthest `exp` from now. */
  readonly maxLifetimeSeconds: number;
  /** Oldest `auth_time` accepted for ordinary reads. */
  readonly maxAuthAgeSeconds: number;
  readonly clockToleranceSeconds: number;
}

/**
 * Refuses a compact JWS whose header or payload repeats a member name. JSON leaves duplicates
 * undefined and JSON.parse (hence jose) keeps the last one, while another parser in front of us
 * (a WAF, a proxy, the IdP's own tooling) may keep the first: the token would mean two things.
 * Checked on the raw segments before jose sees them; anything that is not a decodable JWS is left
 * for jose to refuse with its own reason.
 */
export function assertNoDuplicateMembers(token: string): void {
  const [header, payload] = token.split('.', 2);
  for (const segment of [header, payload]) {
    if (segment !== undefined && hasDuplicateMember(Buffer.from(segment, 'base64url').toString('utf8'))) {
      throw tokenRefused('duplicate_member');
    }
  }
}

/**
 * Whether any object in the JSON text names a member twice, at any depth, names compared after
 * unescaping (`"a"` and `"\u0061"` are the same member). Strings are skipped whole, so braces
 * inside them do not count.
 */
export function hasDuplicateMember(json: string): boolean {
  // One entry per open object (its member names) or array (null).
  const open: (Set<string> | null)[] = [];
  let expectName = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      let end = i + 1;
      while (end < json.length && json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      const names = open.at(-1);
      if (expectName && names) {
        let name: unknown;
        try {
          name = JSON.parse(json.slice(i, end + 1));
        } catch {
          return false;
        }
        if (names.has(name as string)) return true;
        names.add(name as string);
        expectName = false;
      }
      i = end;
    } else if (ch === '{') {
      open.push(new Set());
      expectName = true;
    } else if (ch === '[') {
      open.push(null);
      expectName = false;
    } else if (ch === '}' || ch === ']') {
      open.pop();
      expectName = false;
    } else if (ch === ',') {
      expectName = open.at(-1) instanceof Set;
    }
  }
  return false;
}

/**
 * A token good for years, or a sign-in in the future or long past, is a leaked or forged
 * credential's mark, not a client's: an IdP issues access tokens for minutes or hours.
 */
export function assertSaneTimes(claims: { iat: number; exp: number; authTime: number | null }, limits: TokenTimeLimits, nowSeconds: number): void {
  const { maxLifetimeSeconds: maxLifetime, maxAuthAgeSeconds: maxAuthAge, clockToleranceSeconds: skew } = limits;
  if (claims.exp - claims.iat > maxLifetime || claims.exp > nowSeconds + maxLifetime + skew) throw tokenRefused('lifetime_too_long');
  if (claims.authTime === null) return;
  if (claims.authTime > nowSeconds + skew) throw tokenRefused('auth_time_in_future');
  if (claims.authTime > claims.iat + skew) throw tokenRefused('auth_time_in_future');
  if (nowSeconds - claims.authTime > maxAuthAge) throw tokenRefused('auth_too_old');
}
