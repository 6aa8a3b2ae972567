import { createHash } from 'node:crypto';
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { Client, cacheExchange, fetchExchange } from '@urql/core';
import { ClientError, GraphQLClient } from 'graphql-request';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeDocument, PatientByMrnDocument, PatientPageDocument } from '../../client/generated/graphql.ts';
import { readOperations, trustedDocumentsOf } from '../../src/cli/trusted-documents.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// The three mainstream clients, each as its README example configures it (and urql with its
// defaults first), against a real gateway: what works, and what is refused with an error that says
// what to change. README, "Clients", shows the same configurations.

let gw: TestGateway;
let trusted: TestGateway; // PHIGATE_TRUSTED_DOCUMENTS_FILE on: the generated allow-list only
let allowList: Record<string, string>;
beforeAll(async () => {
  allowList = trustedDocumentsOf(await readOperations());
  gw = await startTestGateway({ patients: 6 });
  trusted = await startTestGateway({ replicaOf: gw, gatewayOptions: { trustedDocuments: new Map(Object.entries(allowList)) } });
});
afterAll(async () => {
  await trusted?.close();
  await gw?.close();
});

const physician = () => gw.tokenFor('dr-north-1');
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('urql', () => {
  const urql = (url: string, token: string, options: { preferGetMethod?: false } = {}) =>
    new Client({ url, exchanges: [cacheExchange, fetchExchange], fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }), ...options });

  it('with its defaults (queries as GET) is refused with a GraphQL error that says to use POST and how to set urql', async () => {
    const r = await urql(gw.url, await physician()).query(MeDocument, {}).toPromise();
    expect(r.data).toBeUndefined();
    expect(r.error?.response?.status).toBe(405);
    const [error] = r.error?.graphQLErrors ?? [];
    expect(error?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', reason: 'method_not_allowed' });
    expect(error?.message).toMatch(/^Use POST/);
    expect(error?.message).toContain('preferGetMethod: false');
  });

  it('with preferGetMethod: false reads patients', async () => {
    const r = await urql(gw.url, await physician(), { preferGetMethod: false }).query(PatientPageDocument, { first: 3 }).toPromise();
    expect(r.error).toBeUndefined();
    expect(r.data?.patients.edges.length).toBeGreaterThan(0);
    expect(r.data?.patients.edges[0]?.node.ssn).toMatch(/^\*\*\*-\*\*-\d{4}$/);
  });
});

describe('graphql-request', () => {
  it('with its defaults reads patients', async () => {
    const client = new GraphQLClient(gw.url, { headers: { authorization: `Bearer ${await physician()}` } });
    const data = await client.request(PatientPageDocument, { first: 3 });
    expect(data.patients.edges.length).toBeGreaterThan(0);
  });

  it("with errorPolicy 'all' still cannot take MFA_REQUIRED for data: the answer is HTTP 401, which it raises", async () => {
    const token = await gw.tokenFor('dr-north-1', { mfa: false });
    const client = new GraphQLClient(gw.url, { headers: { authorization: `Bearer ${token}` }, errorPolicy: 'all' });
    const mrn = gw.data.patients[0]!.mrn;
    const error = await client.request(PatientByMrnDocument, { mrn }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ClientError);
    const { response } = error as ClientError;
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toContain('error="insufficient_user_authentication"');
    expect(response.errors?.[0]?.extensions?.code).toBe('MFA_REQUIRED');
  });
});

describe('Apollo Client', () => {
  const apollo = (url: string, token: string, persisted: boolean) => {
    const http = new HttpLink({ uri: url, headers: { authorization: `Bearer ${token}` } });
    return new ApolloClient({ link: persisted ? new PersistedQueryLink({ sha256 }).concat(http) : http, cache: new InMemoryCache() });
  };

  it('with its defaults reads patients', async () => {
    const r = await apollo(gw.url, await physician(), false).query({ query: PatientPageDocument, variables: { first: 3 } });
    expect(r.data?.patients.edges.length).toBeGreaterThan(0);
  });

  it("with its persisted-query link runs the trusted documents: the hash it sends is of the text with the cache's __typename fields", async () => {
    const token = await physician();
    const me = await apollo(trusted.url, token, true).query({ query: MeDocument });
    expect(me.data?.me).toMatchObject({ subject: 'dr-north-1', __typename: 'Viewer' });
    const page = await apollo(trusted.url, token, true).query({ query: PatientPageDocument, variables: { first: 2 } });
    expect(page.data?.patients.edges.length).toBeGreaterThan(0);
  });

  it('is refused by an allow-list of the documents as written only (what the generator wrote before), so the __typename variants are what it needs', async () => {
    const asWritten = new Map(Object.entries(allowList).filter(([, text]) => !text.includes('__typename')));
    const strict = await startTestGateway({ replicaOf: gw, gatewayOptions: { trustedDocuments: asWritten } });
    try {
      const error = await apollo(strict.url, await physician(), true)
        .query({ query: MeDocument })
        .then(
          () => null,
          (e: unknown) => e as { errors?: { extensions?: { code?: string; reason?: string } }[] },
        );
      expect(error?.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', reason: 'untrusted_document' });
    } finally {
      await strict.close();
    }
  });
});
