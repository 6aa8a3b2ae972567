type Factor = 'knowledge' | 'possession' | 'inherence';

/**
 * RFC 8176 `amr` values by the factor they prove. Two values make MFA only when they prove
 * different factors (NIST SP 800-63B): 'otp' + 'sms' are both something the user has, 'pwd' +
 * 'pin' both something the user knows.
 *
 * Left out, so they never count towards MFA: 'geo' and 'rba' are risk signals, not proof of
 * identity; 'wia' and 'mca' name a protocol or channel that can carry any factor, including a
 * password alone; 'user' is a presence test that anyone holding the device passes. 'mfa' is not
 * a factor but a direct assertion, handled on its own.
 */
const FACTORS: ReadonlyMap<string, Factor> = new Map([
  ['pwd', 'knowledge'],
  ['pin', 'knowledge'],
  ['kba', 'knowledge'],
  ['otp', 'possession'],
  ['sms', 'possession'],
  ['tel', 'possession'],
  ['hwk', 'possession'],
  ['swk', 'possession'],
  ['sc', 'possession'],
  ['pop', 'possession'],
  ['face', 'inherence'],
  ['fpt', 'inherence'],
  ['iris', 'inherence'],
  ['retina', 'inherence'],
  ['vbm', 'inherence'],
]);

/**
 * Whether the token proves multi-factor authentication. `amr` and `acr` are judged separately; a
 * malformed one proves nothing (an `amr` that is not an array of strings counts as no factors at
 * all, rather than as whichever members happen to be strings).
 */
export function hasMfa(claims: { amr?: unknown; acr?: unknown }, mfaAcrValues: readonly string[]): boolean {
  return amrIsMultiFactor(claims.amr) || (typeof claims.acr === 'string' && mfaAcrValues.includes(claims.acr));
}

function amrIsMultiFactor(amr: unknown): boolean {
  if (!Array.isArray(amr) || !amr.every((method): method is string => typeof method === 'string')) return false;
  if (amr.includes('mfa')) return true;
  const factors = new Set<Factor>();
  for (const method of amr) {
    const factor = FACTORS.get(method);
    if (factor) factors.add(factor);
  }
  return factors.size >= 2;
}
