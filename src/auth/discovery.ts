import { outboundRequest } from '../net/outbound-request.ts';
import { tokenRefused } from './token-refused.ts';

const TIMEOUT_MS = 5_000;

/**
 * The discovery document names another issuer than the configured one: every token would fail.
 * Most often the two differ by a trailing slash; both are named so the operator sees which.
 */
export class IssuerMismatchError extends Error {
  constructor(
    readonly configured: string,
    readonly documented: unknown,
  ) {
    super(`the discovery document names the issuer ${JSON.stringify(documented) ?? 'undefined'}, not the configured ${JSON.stringify(configured)}`);
    this.name = 'IssuerMismatchError';
  }
}

/**
 * Fetches the issuer's OpenID Connect discovery document.
 *
 * The document must name exactly the configured issuer: otherwise a document (or a redirect, which
 * is refused for the same reason) could make us trust keys or endpoints published for some other issuer.
 */
export async function discoveryDocument(issuer: string): Promise<Readonly<Record<string, unknown>>> {
  // OpenID Connect Discovery 1.0, section 4: drop a terminating '/' before appending the path.
  const url = new URL(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`);
  let document: unknown;
  try {
    const answer = await outboundRequest(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (answer.status !== 200) throw new Error(`discovery answered HTTP ${answer.status}`);
    document = JSON.parse(answer.text);
  } catch (cause) {
    throw tokenRefused('issuer_unreachable', cause);
  }

  const fields = (typeof document === 'object' && document !== null ? document : {}) as Record<string, unknown>;
  if (fields.issuer !== issuer) throw tokenRefused('issuer_misconfigured', new IssuerMismatchError(issuer, fields.issuer));
  return fields;
}

/**
 * The endpoint the document names under `name`, or null when it names none usable: plain http
 * only where the issuer itself is plain http (the development issuer on loopback).
 */
export function documentedEndpoint(document: Readonly<Record<string, unknown>>, name: string, issuer: string): URL | null {
  const value = document[name];
  const endpoint = typeof value === 'string' ? URL.parse(value) : null;
  if (endpoint === null || (endpoint.protocol !== 'https:' && endpoint.protocol !== new URL(issuer).protocol)) return null;
  return endpoint;
}

/** The issuer's `jwks_uri`, from its discovery document (discoveryDocument). */
export async function discoverJwksUri(issuer: string): Promise<URL> {
  const jwksUri = documentedEndpoint(await discoveryDocument(issuer), 'jwks_uri', issuer);
  if (jwksUri === null) throw tokenRefused('issuer_misconfigured', new Error('the discovery document has no usable jwks_uri'));
  return jwksUri;
}
