import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';

// Keycloak does not run here, so this reads deploy/keycloak/phigate-realm.json for what makes
// its access tokens acceptable to phigate with the settings the README gives for it. What Keycloak
// does with the export is documented Keycloak behaviour, not something this test can observe.

const ROOT = path.resolve(import.meta.dirname, '../..');
type Json = Record<string, any>;
let realm: Json;

beforeAll(async () => {
  realm = JSON.parse(await readFile(path.join(ROOT, 'deploy/keycloak/phigate-realm.json'), 'utf8'));
});

const client = (id: string): Json => realm.clients.find((c: Json) => c.clientId === id);
const accessTokenMapper = (mapper: string): Json[] =>
  client('phigate-cli').protocolMappers.filter((m: Json) => m.protocolMapper === mapper && m.config['access.token.claim'] === 'true');

describe("the Keycloak realm's access tokens", () => {
  it('name phigate in aud', () => {
    expect(accessTokenMapper('oidc-audience-mapper').map((m) => m.config['included.client.audience'])).toEqual(['phigate']);
  });

  it('carry the realm roles as a top-level string array `roles`, and every role of the policy exists', async () => {
    const [mapper] = accessTokenMapper('oidc-usermodel-realm-role-mapper');
    expect(mapper?.config).toMatchObject({ 'claim.name': 'roles', multivalued: 'true', 'jsonType.label': 'String' });
    const policy = await loadPolicy(path.join(ROOT, 'policies/default.yaml'), PHI_FIELDS);
    const realmRoles = realm.roles.realm.map((r: Json) => r.name);
    for (const role of Object.keys(policy.roles)) expect(realmRoles).toContain(role);
  });

  it('carry the user attribute `clinics` as a string array', () => {
    const [mapper] = accessTokenMapper('oidc-usermodel-attribute-mapper');
    expect(mapper?.config).toMatchObject({ 'user.attribute': 'clinics', 'claim.name': 'clinics', multivalued: 'true', 'jsonType.label': 'String' });
  });

  it('carry amr, and every factor of both login flows names itself in it (pwd and otp: two factors of RFC 8176)', () => {
    expect(accessTokenMapper('oidc-amr-mapper')).toHaveLength(1);
    const configs = new Map(realm.authenticatorConfig.map((c: Json) => [c.alias, c.config['default.reference.value']]));
    const flow = (alias: string): Json => realm.authenticationFlows.find((f: Json) => f.alias === alias);
    // The browser flow is the SSO cookie or this sub-flow of forms.
    expect(flow(realm.browserFlow).authenticationExecutions.map((e: Json) => e.flowAlias).filter(Boolean)).toEqual(['phigate browser forms']);
    for (const alias of ['phigate browser forms', realm.directGrantFlow]) {
      const factors = flow(alias).authenticationExecutions.filter((e: Json) => /password|otp/.test(e.authenticator ?? ''));
      expect(factors.map((e: Json) => [e.requirement, configs.get(e.authenticatorConfig)])).toEqual([
        ['REQUIRED', 'pwd'],
        ['REQUIRED', 'otp'],
      ]);
    }
  });
});
