import { PhigateError } from '../errors.ts';
import { discoverJwksUri, IssuerMismatchError } from './discovery.ts';

export type IssuerCheck = { readonly ok: true } | { readonly ok: false; readonly unreachable: boolean; readonly problem: string };

/**
 * Start-up's look at the configured issuer's discovery document. A document that names another
 * issuer, or no usable JWKS, would make every token fail, so the caller stops start-up with
 * `problem`. An issuer that does not answer yet is reported as unreachable: the verifier retries
 * discovery by itself, and /readyz fails until it succeeds.
 */
export async function checkIssuer(issuer: string): Promise<IssuerCheck> {
  try {
    await discoverJwksUri(issuer);
    return { ok: true };
  } catch (e) {
    const cause = e instanceof PhigateError ? (e as { cause?: unknown }).cause : e;
    const problem =
      cause instanceof IssuerMismatchError
        ? `is ${JSON.stringify(issuer)} but its discovery document names ${JSON.stringify(cause.documented) ?? 'no issuer'}; tokens carry the document's value, so set exactly that`
        : cause instanceof Error
          ? cause.message
          : String(cause);
    return { ok: false, unreachable: !(e instanceof PhigateError) || e.reason === 'issuer_unreachable', problem };
  }
}
