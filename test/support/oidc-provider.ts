import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { phigateConfiguration, type PhigateStaff } from '../../deploy/oidc-provider/phigate.ts';

/** How the simulated user logs in: `amr` and `acr` are what the IdP records for that login. */
export interface Login {
  readonly accountId: string;
  readonly amr: string[];
  readonly acr?: string;
}

export interface OidcProviderIssuer {
  /** `http://127.0.0.1:<port>` */
  readonly issuer: string;
  /** An access token for phigate (resource `urn:phigate`, audience `phigate`), through the authorization code flow with PKCE. */
  accessToken(login: Login): Promise<string>;
  close(): Promise<void>;
}

const CLIENT = { client_id: 'phigate-test-client', client_secret: randomBytes(24).toString('base64url') };
/** Never called: the test reads the code from the redirect. */
const REDIRECT_URI = 'http://127.0.0.1:1/callback';

/**
 * panva's oidc-provider on loopback, configured with deploy/oidc-provider/phigate.ts: the real
 * authorization and token endpoints. Only the login page is replaced: its interaction finishes at
 * once with the login the test asked for, as a user who typed the right password (and code) would.
 */
export async function startOidcProvider(staff: (accountId: string) => PhigateStaff | undefined): Promise<OidcProviderIssuer> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: 'oidc-provider-test', alg: 'ES256', use: 'sig' };
  const logins = new Map<string, Login>();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const shipped = phigateConfiguration({ findStaff: async (id) => staff(id) });
  const provider = new Provider(issuer, {
    ...shipped,
    features: { ...shipped.features, devInteractions: { enabled: false } },
    clients: [{ ...CLIENT, id_token_signed_response_alg: 'ES256', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'] }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!req.url?.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    void (async () => {
      const details = await provider.interactionDetails(req, res);
      const login = logins.get(String(details.params.state));
      if (!login) throw new Error('no login prepared for this interaction');
      const grant = new provider.Grant({ accountId: login.accountId, clientId: CLIENT.client_id });
      grant.addOIDCScope('openid');
      grant.addResourceScope('urn:phigate', 'phigate');
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { login: { accountId: login.accountId, amr: login.amr, ...(login.acr ? { acr: login.acr } : {}) }, consent: { grantId } }, { mergeWithLastSubmission: false });
    })().catch(() => res.writeHead(500).end());
  });

  return {
    issuer,
    async accessToken(login) {
      const state = randomBytes(12).toString('base64url');
      logins.set(state, login);
      const verifier = randomBytes(32).toString('base64url');
      const jar = new Map<string, string>();
      const step = async (url: string): Promise<string> => {
        const res = await fetch(new URL(url, issuer), { redirect: 'manual', headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
        for (const c of res.headers.getSetCookie()) {
          const [pair = ''] = c.split(';');
          const at = pair.indexOf('=');
          jar.set(pair.slice(0, at), pair.slice(at + 1));
        }
        const body = await res.text();
        const location = res.headers.get('location');
        if (res.status < 300 || res.status >= 400 || location === null) throw new Error(`${url} answered HTTP ${res.status}: ${textOf(body)}`);
        return location;
      };
      const authorize = new URL('/auth', issuer);
      authorize.search = new URLSearchParams({
        client_id: CLIENT.client_id,
        response_type: 'code',
        redirect_uri: REDIRECT_URI,
        scope: 'openid phigate',
        resource: 'urn:phigate',
        state,
        code_challenge: createHash('sha256').update(verifier).digest('base64url'),
        code_challenge_method: 'S256',
      }).toString();
      let location = await step(authorize.href);
      while (!location.startsWith(REDIRECT_URI)) location = await step(location);
      const code = new URL(location).searchParams.get('code');
      if (code === null) throw new Error(`the authorization answered ${location}`);

      const res = await fetch(new URL('/token', issuer), {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, resource: 'urn:phigate' }),
      });
      const body = (await res.json()) as { access_token?: string };
      if (res.status !== 200 || typeof body.access_token !== 'string') throw new Error(`the token endpoint answered HTTP ${res.status}: ${JSON.stringify(body)}`);
      return body.access_token;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** oidc-provider's error page as one line of text, for a failing test's message. */
const textOf = (html: string): string =>
  html
    .replace(/<style>[^]*<\/style>/, '')
    .replace(/<[^>]*>/g, ' ')
    .replace(/\s+/g, ' ')
    .slice(0, 400);
