// Sign-in with the configured OIDC issuer: authorization code with PKCE (RFC 7636), a public
// client. The access token lives in this module's memory only: a reload signs in again. Only the
// PKCE verifier and state cross the redirect, in sessionStorage, and are deleted on return.

const PENDING = 'phigate-console-pending-login';

/** @type {{ token: string, expiresAt: number } | null} */
let session = null;
let expiryTimer = 0;
let warningTimer = 0;
/** How long before expiry the page warns, so that no one loses a half-written review to it. */
const WARN_SECONDS = 120;

const base64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const randomString = (n) => base64url(crypto.getRandomValues(new Uint8Array(n)));

async function discover(issuer) {
  const res = await fetch(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`, { cache: 'no-store' });
  if (!res.ok) throw new Error(`the issuer's discovery document answered ${res.status}`);
  const doc = await res.json();
  if (!doc.authorization_endpoint || !doc.token_endpoint) throw new Error('the issuer offers no authorization code sign-in');
  return doc;
}

const redirectUri = () => `${location.origin}/console/`;

/** Leaves for the issuer's sign-in page. */
export async function signIn(config) {
  const { authorization_endpoint: endpoint } = await discover(config.issuer);
  const verifier = randomString(48);
  const state = randomString(24);
  const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const url = new URL(endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: redirectUri(),
    scope: 'openid',
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  })) url.searchParams.set(k, v);
  location.assign(url.href);
}

/**
 * On return from the issuer: redeems the code for a token; `onExpiring` runs two minutes before it
 * expires, `onExpired` when it has. Returns false when this page load is
 * not a return from the issuer; throws when it is one that cannot be trusted.
 */
export async function completeSignIn(config, onExpired, onExpiring = () => {}) {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return false;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? 'null');
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, '', redirectUri());
  if (params.has('error')) throw new Error(`the issuer refused the sign-in: ${params.get('error')}`);
  if (pending === null || pending.state !== params.get('state')) throw new Error('this sign-in was not started here (state mismatch); sign in again');
  const { token_endpoint: endpoint } = await discover(config.issuer);
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code') ?? '',
      code_verifier: pending.verifier,
      redirect_uri: redirectUri(),
      client_id: config.clientId,
    }),
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || typeof body.access_token !== 'string') throw new Error(`the issuer refused the code: ${body.error_description ?? body.error ?? res.status}`);
  const ttl = Number(body.expires_in) > 0 ? Number(body.expires_in) : 300;
  session = { token: body.access_token, expiresAt: Date.now() + ttl * 1000 };
  clearTimeout(expiryTimer);
  clearTimeout(warningTimer);
  expiryTimer = setTimeout(() => {
    session = null;
    onExpired();
  }, ttl * 1000);
  if (ttl > WARN_SECONDS) warningTimer = setTimeout(onExpiring, (ttl - WARN_SECONDS) * 1000);
  return true;
}

/** The bearer token, or null when signed out or expired. */
export function accessToken() {
  if (session !== null && Date.now() >= session.expiresAt) session = null;
  return session?.token ?? null;
}

export function expiresAt() {
  return session?.expiresAt ?? null;
}

/** Forgets the token; the issuer's own session (if any) is the issuer's. */
export function signOut() {
  clearTimeout(expiryTimer);
  clearTimeout(warningTimer);
  session = null;
}
