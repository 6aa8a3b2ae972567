import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { importJWK, jwtVerify, SignJWT } from 'jose';
import type { DevIssuerKeys } from './dev-issuer-keys.ts';
import { mintDevToken } from './dev-token.ts';

/** A person the login page offers: a seeded staff member (`.phigate/seed.json`). */
export interface DevStaff {
  readonly sub: string;
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
}

export interface DevLoginOptions {
  /** Full issuer URL; a function because the port is only known once the server listens. */
  readonly issuer: () => string;
  readonly keys: DevIssuerKeys;
  readonly staff: () => Promise<readonly DevStaff[]>;
  /** What the minted access tokens carry, as the verifier expects them (config.oidc). */
  readonly audience: string;
  readonly rolesClaim: string;
  readonly clinicsClaim: string;
  /** Lifetime of the access tokens the token endpoint hands out. */
  readonly tokenTtlSeconds: number;
}

/** The only page a code may be sent back to: the gateway's own console. */
export const CONSOLE_PATH = '/console/';
const CODE_TTL_SECONDS = 60;
const CODE_TYPE = 'dev-authorization-code';
const MAX_FORM_BYTES = 8_192;

/**
 * The page does nothing but submit its form back to this origin: no script, no style, and no
 * frame may show it.
 */
const LOGIN_CSP = "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/**
 * The development issuer's authorization and token endpoints: authorization code with PKCE (S256
 * only), for the console. The login page lists the seeded staff and simulates the second factor.
 *
 * The code is itself a signed, 60-second JWT carrying the PKCE challenge, so no state is kept in
 * the process between the two requests (any replica can redeem it). The price, acceptable for a
 * development-only issuer, is that a code may be redeemed more than once within its minute.
 */
export function createDevLogin(opts: DevLoginOptions) {
  const verifyKey = importJWK(opts.keys.publicJwk, 'ES256');
  const authorize = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const redirectTarget = new URL(CONSOLE_PATH, opts.issuer()).href;
    const params = req.method === 'POST' ? await readForm(req) : new URL(req.url ?? '/', 'http://localhost').searchParams;
    const request = authorizationRequest(params, redirectTarget);
    if (typeof request === 'string') return void page(res, 400, errorPage(request));
    const staff = await opts.staff();
    if (req.method !== 'POST') return void page(res, 200, loginPage(request, staff));

    const person = staff.find((s) => s.sub === params.get('sub'));
    if (person === undefined) return void page(res, 400, errorPage('Choose one of the listed staff members.'));
    const code = await new SignJWT({ roles: [...person.roles], clinics: [...person.clinics], mfa: params.get('mfa') === 'on', challenge: request.challenge, redirect_uri: request.redirectUri })
      .setProtectedHeader({ alg: 'ES256', typ: CODE_TYPE, kid: opts.keys.kid })
      .setIssuer(opts.issuer())
      .setAudience(request.clientId)
      .setSubject(person.sub)
      .setIssuedAt()
      .setExpirationTime(`${CODE_TTL_SECONDS}s`)
      .sign(opts.keys.privateKey);
    const target = new URL(request.redirectUri);
    target.searchParams.set('code', code);
    target.searchParams.set('state', request.state);
    res.writeHead(303, { location: target.href, 'cache-control': 'no-store' }).end();
  };

  const token = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST' }).end();
    const form = await readForm(req);
    const refuse = (error: string, description: string) => json(res, 400, { error, error_description: description });
    if (form.get('grant_type') !== 'authorization_code') return refuse('unsupported_grant_type', 'only authorization_code');
    const verifier = form.get('code_verifier') ?? '';
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) return refuse('invalid_request', 'code_verifier must be 43 to 128 unreserved characters');
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(form.get('code') ?? '', await verifyKey, {
        issuer: opts.issuer(),
        audience: form.get('client_id') ?? '',
        typ: CODE_TYPE,
        algorithms: ['ES256'],
      }));
    } catch {
      return refuse('invalid_grant', 'the code is not valid, expired, or for another client');
    }
    if (claims.redirect_uri !== form.get('redirect_uri')) return refuse('invalid_grant', 'redirect_uri differs from the authorization request');
    if (claims.challenge !== s256(verifier)) return refuse('invalid_grant', 'code_verifier does not match the code_challenge');
    const accessToken = await mintDevToken(opts.keys, {
      issuer: opts.issuer(),
      audience: opts.audience,
      subject: String(claims.sub),
      roles: claims.roles as string[],
      clinics: claims.clinics as string[],
      mfa: claims.mfa === true,
      authAgeSeconds: 0,
      ttlSeconds: opts.tokenTtlSeconds,
      rolesClaim: opts.rolesClaim,
      clinicsClaim: opts.clinicsClaim,
    });
    json(res, 200, { access_token: accessToken, token_type: 'Bearer', expires_in: opts.tokenTtlSeconds });
  };

  return { authorize, token };
}

interface AuthorizationRequest {
  readonly clientId: string;
  readonly redirectUri: string;
  readonly state: string;
  readonly challenge: string;
}

/** The request's parameters, or what is wrong with them (RFC 6749 4.1.1, RFC 7636 4.3). */
function authorizationRequest(params: URLSearchParams, redirectTarget: string): AuthorizationRequest | string {
  const clientId = params.get('client_id') ?? '';
  const redirectUri = params.get('redirect_uri') ?? '';
  const state = params.get('state') ?? '';
  const challenge = params.get('code_challenge') ?? '';
  if (params.get('response_type') !== 'code') return 'response_type must be code.';
  if (!/^[\w.-]{1,100}$/.test(clientId)) return 'client_id is missing or not a plain name.';
  if (redirectUri !== redirectTarget) return `redirect_uri must be ${redirectTarget}: open the console there.`;
  if (!/^[\w.~-]{16,200}$/.test(state)) return 'state must be 16 to 200 unreserved characters.';
  if (params.get('code_challenge_method') !== 'S256' || !/^[\w-]{43}$/.test(challenge)) return 'PKCE is required: code_challenge_method S256 and a 43-character code_challenge.';
  return { clientId, redirectUri, state, challenge };
}

const s256 = (verifier: string): string => createHash('sha256').update(verifier).digest('base64url');

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  let body = '';
  for await (const chunk of req) {
    body += String(chunk);
    if (body.length > MAX_FORM_BYTES) break;
  }
  return new URLSearchParams(body.slice(0, MAX_FORM_BYTES));
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) }).end(body);
}

function page(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': LOGIN_CSP }).end(html);
}

const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function document(title: string, body: string): string {
  return `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>${escapeHtml(title)}</title>\n</head>\n<body>\n<main>\n<h1>${escapeHtml(title)}</h1>\n${body}\n</main>\n</body>\n</html>\n`;
}

function loginPage(request: AuthorizationRequest, staff: readonly DevStaff[]): string {
  const hidden = Object.entries({
    response_type: 'code',
    client_id: request.clientId,
    redirect_uri: request.redirectUri,
    state: request.state,
    code_challenge: request.challenge,
    code_challenge_method: 'S256',
  })
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`)
    .join('\n');
  const options = staff
    .map((s) => `<option value="${escapeHtml(s.sub)}">${escapeHtml(`${s.sub} (${s.roles.join(', ')}; ${s.clinics.join(', ')})`)}</option>`)
    .join('\n');
  return document(
    'phigate development sign-in',
    `<p>Development only: pick a seeded staff member. No password is asked.</p>
<form method="post">
${hidden}
<p><label for="sub">Staff member</label><br><select id="sub" name="sub" required>\n${options}\n</select></p>
<p><input type="checkbox" id="mfa" name="mfa" checked> <label for="mfa">Second factor passed (simulated multi-factor sign-in)</label></p>
<p><button type="submit">Sign in</button></p>
</form>`,
  );
}

const errorPage = (problem: string): string => document('Sign-in request refused', `<p role="alert">${escapeHtml(problem)}</p>`);
