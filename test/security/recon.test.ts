import { randomBytes } from 'node:crypto';
import { getIntrospectionQuery } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assembleApp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/log.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { codes, postJson, reasons, watch, type RawResponse } from './http.ts';

// No reconnaissance: the schema is not handed to whoever asks. Introspection runs only for the
// roles of PHIGATE_INTROSPECTION_ROLES (none in production, `*` in development), and no error
// message suggests a name the client did not already know ("Did you mean ...?").

let prod: TestGateway; // production's default: nobody introspects
let cfg: TestGateway; // an operator allows one role of the policy (compliance, which requires MFA)
let dev: TestGateway; // development's default: `*`
beforeAll(async () => {
  [prod, cfg, dev] = await Promise.all([
    startTestGateway({ patients: 4, gatewayOptions: { introspectionRoles: [] } }),
    startTestGateway({ patients: 4, gatewayOptions: { introspectionRoles: ['compliance'] } }),
    startTestGateway({ patients: 4 }),
  ]);
});
afterAll(async () => Promise.all([prod?.close(), cfg?.close(), dev?.close()]));

const physician = (gw: TestGateway) => gw.tokenFor('dr-north-1');

function expectIntrospectionRefused(r: RawResponse) {
  expect(codes(r)).toEqual(['FORBIDDEN']);
  expect(reasons(r)).toEqual(['introspection_disabled']);
  expect(r.json?.data ?? null).toBeNull();
  expect(r.text).not.toMatch(/Patient|ssn|__Type/);
}

function expectNoSuggestion(r: RawResponse) {
  expect(r.json?.errors?.length).toBeGreaterThan(0);
  expect(r.text).not.toMatch(/did you mean/i);
}

describe('introspection', () => {
  it('refuses __schema to a physician under production settings, before any database work', async () => {
    const seen = await watch(prod);
    expectIntrospectionRefused(await postJson(prod, { query: getIntrospectionQuery() }, await physician(prod)));
    await seen.expectUntouched();
  });

  it('refuses __type(name:) probing of a single type', async () => {
    expectIntrospectionRefused(await postJson(prod, { query: '{ __type(name: "Patient") { fields { name } } }' }, await physician(prod)));
  });

  it('refuses introspection hidden behind an alias, a fragment and a harmless field', async () => {
    const query = '{ me { subject } ...F } fragment F on Query { s: __schema { types { name } } }';
    expectIntrospectionRefused(await postJson(prod, { query }, await physician(prod)));
  });

  it('still answers __typename, which clients need and which reveals nothing', async () => {
    const r = await postJson(prod, { query: '{ __typename me { __typename subject } }' }, await physician(prod));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ data: { __typename: 'Query', me: { __typename: 'Viewer', subject: 'dr-north-1' } } });
  });

  it('runs the full introspection query for a configured role', async () => {
    const token = await cfg.issuer.token({ sub: 'schema-bot', roles: ['compliance'], clinics: [], mfa: true });
    const r = await postJson(cfg, { query: getIntrospectionQuery() }, token);
    expect(r.status).toBe(200);
    expect(r.json?.errors).toBeUndefined();
    expect(r.json?.data?.__schema.types.map((t: { name: string }) => t.name)).toContain('Patient');
  });

  it('refuses the configured role claimed without the MFA it requires: a role it may not act in', async () => {
    const token = await cfg.issuer.token({ sub: 'schema-bot', roles: ['compliance'], clinics: [], mfa: false });
    expectIntrospectionRefused(await postJson(cfg, { query: '{ __schema { queryType { name } } }' }, token));
  });

  it('stops start-up, naming the variable, when a configured role is not one of the policy (nobody could act in it)', async () => {
    const config = loadConfig({
      PHIGATE_ENV: 'development',
      DATABASE_URL: 'postgres://phigate@127.0.0.1:1/none',
      PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      PHIGATE_INTROSPECTION_ROLES: 'compliance,schema_reader',
    });
    const failure = await assembleApp(config, 'postgres://phigate@127.0.0.1:1/none', createLogger('silent')).then(() => null, (err: unknown) => err as Error);
    expect(failure?.message).toBe('PHIGATE_INTROSPECTION_ROLES: names a role the policy does not define: schema_reader');
  });

  it('refuses a physician where another role is the configured one', async () => {
    expectIntrospectionRefused(await postJson(cfg, { query: '{ __schema { queryType { name } } }' }, await physician(cfg)));
  });

  it('decides by who asks each time the same document comes back: refused, allowed, refused', async () => {
    const query = '{ __schema { queryType { name } } }';
    const reader = await cfg.issuer.token({ sub: 'schema-bot', roles: ['compliance'], clinics: [], mfa: true });
    expectIntrospectionRefused(await postJson(cfg, { query }, await physician(cfg)));
    expect((await postJson(cfg, { query }, reader)).json).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
    expectIntrospectionRefused(await postJson(cfg, { query }, await physician(cfg)));
  });

  it('lets any authenticated principal introspect with `*` (the development default)', async () => {
    const r = await postJson(dev, { query: '{ __schema { queryType { name } } }' }, await physician(dev));
    expect(r.json).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
  });

  it('answers an unauthenticated introspection with 401 even under `*`', async () => {
    const r = await postJson(dev, { query: '{ __schema { queryType { name } } }' }, null);
    expect(r.status).toBe(401);
    expect(codes(r)).toEqual(['UNAUTHENTICATED']);
    expect(r.text).not.toContain('queryType":{');
  });
});

describe('no suggestions in errors', () => {
  it('a misspelled field gets no "Did you mean" naming the real one', async () => {
    const r = await postJson(prod, { query: '{ me { subjct } patients(first: 1) { edges { node { snn } } } }' }, await physician(prod));
    expectNoSuggestion(r);
    expect(r.json?.errors?.map((e) => e.message)).toEqual([
      'Cannot query field "subjct" on type "Viewer".',
      'Cannot query field "snn" on type "Patient".',
    ]);
    expect(r.text).not.toMatch(/"subject"|"ssn"/);
  });

  it('the same misspelled document sent again is refused the same way (validation answered from its cache)', async () => {
    const query = '{ me { subjct } }';
    const [first, again] = [await postJson(prod, { query }, await physician(prod)), await postJson(prod, { query }, await physician(prod))];
    for (const r of [first, again]) {
      expectNoSuggestion(r);
      expect(codes(r)).toEqual(['BAD_USER_INPUT']);
      expect(r.json?.data ?? null).toBeNull();
    }
    expect(again.json?.errors).toEqual(first.json?.errors);
  });

  it('a literal of the wrong type is refused as BAD_USER_INPUT without repeating the literal, which may be an SSN', async () => {
    const r = await postJson(prod, { query: '{ patientBySsn(ssn: 900123456) { id } }' }, await physician(prod));
    expect(r.json?.data ?? null).toBeNull();
    expect(r.json?.errors?.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
    expect(r.text).not.toContain('900123456');
  });

  it('a misspelled argument gets no suggestion', async () => {
    const r = await postJson(prod, { query: '{ patients(frist: 1) { edges { cursor } } }' }, await physician(prod));
    expectNoSuggestion(r);
    expect(r.text).not.toContain('"first"');
  });

  it('a misspelled type in a variable definition gets no suggestion', async () => {
    const r = await postJson(prod, { query: 'query($i: CreatePatientInpt!) { me { subject } }' }, await physician(prod));
    expectNoSuggestion(r);
    expect(r.text).not.toContain('"CreatePatientInput"');
  });

  it('a misspelled input field in the variables (checked during execution) gets no suggestion', async () => {
    const query = 'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }';
    const r = await postJson(prod, { query, variables: { input: { clinicId: 'c-north', mrn: 'MRN-X', ssnn: '1' } } }, await prod.tokenFor('reg-north'));
    expectNoSuggestion(r);
    expect(r.json?.errors?.[0]?.message).toMatch(/Field "ssnn" is not defined by type "CreatePatientInput"\.$/);
  });

  it('validation errors of a refused introspection role carry no schema names either', async () => {
    const r = await postJson(prod, { query: '{ __schema { typs { name } } }' }, await physician(prod));
    expectNoSuggestion(r);
    expect(r.text).not.toContain('"types"');
  });
});
