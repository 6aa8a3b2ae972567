import { tokenRefused } from './token-refused.ts';

/**
 * Reads a claim that must be an array of strings (roles, clinics). The name is first taken as-is,
 * because namespaced claims are URLs full of dots (Auth0's `https://example.com/roles`), then as a
 * dotted path into nested objects (Keycloak's `realm_access.roles`).
 *
 * Absent means none (`[]`); anything present but of another shape refuses the token, because a
 * half-understood authorisation claim must not be guessed at.
 */
export function stringListClaim(payload: Readonly<Record<string, unknown>>, name: string): readonly string[] {
  const value = Object.hasOwn(payload, name) ? payload[name] : atPath(payload, name.split('.'));
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) throw tokenRefused('invalid_claims');
  return Object.freeze([...value]);
}

function atPath(payload: Readonly<Record<string, unknown>>, segments: readonly string[]): unknown {
  let node: unknown = payload;
  for (const segment of segments) {
    if (node === undefined) return undefined;
    if (!isRecord(node)) throw tokenRefused('invalid_claims');
    // Own properties only: a path like `__proto__.x` must not reach into Object.prototype.
    node = Object.hasOwn(node, segment) ? node[segment] : undefined;
  }
  return node;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
