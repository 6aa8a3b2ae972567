import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { print, type DocumentNode } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readOperations, renderTrustedDocuments, TRUSTED_DOCUMENTS_FILE, trustedDocumentsOf, withTypenames } from '../../src/cli/trusted-documents.ts';
import { ConfigError } from '../../src/config.ts';
import { documentHash, loadTrustedDocuments } from '../../src/http/plugins/use-trusted-documents.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { codes, expectNoPhi, postJson, reasons, watch, type RawResponse } from './http.ts';

// Trusted documents: with PHIGATE_TRUSTED_DOCUMENTS_FILE set, only the operations of the
// allow-list (client/generated/trusted-documents.json, from client/operations) run, named by the
// sha256 of their text; whatever else a stolen token could ask is refused before it is parsed.

let gw: TestGateway;
let trusted: Record<string, string>;
beforeAll(async () => {
  trusted = JSON.parse(await readFile(TRUSTED_DOCUMENTS_FILE, 'utf8'));
  gw = await startTestGateway({ patients: 8, gatewayOptions: { trustedDocuments: await loadTrustedDocuments(TRUSTED_DOCUMENTS_FILE) } });
});
afterAll(async () => gw?.close());

const hashOf = (operation: string): string => {
  const entry = Object.entries(trusted).find(([, text]) => text.startsWith(`${operation} `) || text.startsWith(`${operation}(`));
  if (!entry) throw new Error(`${operation} is not in the allow-list`);
  return entry[0];
};
const registrar = () => gw.tokenFor('reg-north');

function expectUntrusted(r: RawResponse) {
  expect(codes(r)).toEqual(['FORBIDDEN']);
  expect(reasons(r)).toEqual(['untrusted_document']);
  expect(r.json?.data ?? null).toBeNull();
  expectNoPhi(gw, r.text);
}

describe('trusted documents', () => {
  it('refuses an arbitrary query, before any database work', async () => {
    const seen = await watch(gw);
    expectUntrusted(await postJson(gw, { query: '{ patients(first: 100) { edges { node { ssn givenName } } } }' }, await registrar()));
    await seen.expectUntouched();
  });

  it('runs a trusted document named by extensions.persistedQuery.sha256Hash (Apollo APQ)', async () => {
    const r = await postJson(gw, { extensions: { persistedQuery: { version: 1, sha256Hash: hashOf('query Me') } } }, await registrar());
    expect(r.status).toBe(200);
    expect(r.json?.data?.me.subject).toBe('reg-north');
  });

  it('runs a trusted document named by documentId, with variables, and audits what it read', async () => {
    const patient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
    const before = (await gw.auditRows()).length;
    const r = await postJson(gw, { documentId: hashOf('query PatientBySsn'), variables: { ssn: patient.ssn } }, await registrar());
    expect(r.json?.errors).toBeUndefined();
    expect(r.json?.data?.patientBySsn.id).toBe(patient.id);
    expect((await gw.auditRows()).length).toBeGreaterThan(before);
  });

  it('refuses a hash that is not in the allow-list', async () => {
    const seen = await watch(gw);
    const hash = documentHash('{ patients(first: 100) { edges { node { ssn } } } }');
    expectUntrusted(await postJson(gw, { extensions: { persistedQuery: { version: 1, sha256Hash: hash } } }, await registrar()));
    expectUntrusted(await postJson(gw, { documentId: hash }, await registrar()));
    await seen.expectUntouched();
  });

  it('refuses a trusted hash sent with a different query (no registration of documents at run time)', async () => {
    const seen = await watch(gw);
    const r = await postJson(
      gw,
      { query: '{ patients(first: 100) { edges { node { ssn } } } }', extensions: { persistedQuery: { version: 1, sha256Hash: hashOf('query Me') } } },
      await registrar(),
    );
    expectUntrusted(r);
    await seen.expectUntouched();
  });

  it('runs a trusted hash sent together with its exact text', async () => {
    const hash = hashOf('query Me');
    const r = await postJson(gw, { query: trusted[hash], extensions: { persistedQuery: { version: 1, sha256Hash: hash } } }, await registrar());
    expect(r.json?.data?.me.subject).toBe('reg-north');
  });

  it('refuses a documentId that is not a string without failing', async () => {
    const r = await postJson(gw, { documentId: { $ne: null } }, await registrar());
    expect(r.status).toBeLessThan(500);
    expectUntrusted(r);
  });

  it('client/generated/trusted-documents.json is current (run `npm run trusted-documents`)', async () => {
    expect(await readFile(TRUSTED_DOCUMENTS_FILE, 'utf8')).toBe(renderTrustedDocuments(trustedDocumentsOf(await readOperations())));
  });

  it('every generated typed document, printed as a client sends it, is in the allow-list under its sha256', async () => {
    const generated = await readFile(path.resolve(import.meta.dirname, '../../client/generated/graphql.ts'), 'utf8');
    const documents = [...generated.matchAll(/^export const (\w+)Document = (\{.*\}) as unknown as DocumentNode/gm)];
    // Each as written and with Apollo Client's __typename fields (see clients.test.ts).
    expect(documents.length * 2).toBe(Object.keys(trusted).length);
    for (const [, name, json] of documents) {
      const text = print(JSON.parse(json!) as DocumentNode);
      expect(trusted[documentHash(text)], name).toBe(text);
      const typed = print(withTypenames(JSON.parse(json!) as DocumentNode));
      expect(typed, name).toContain('__typename');
      expect(trusted[documentHash(typed)], name).toBe(typed);
    }
  });

  it('start-up refuses an allow-list whose entry is not the sha256 of its document', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-trusted-'));
    try {
      const file = path.join(dir, 'trusted.json');
      await writeFile(file, JSON.stringify({ [hashOf('query Me')]: '{ patients(first: 100) { edges { node { ssn } } } }' }));
      await expect(loadTrustedDocuments(file)).rejects.toThrow(ConfigError);
      await expect(loadTrustedDocuments(file)).rejects.toThrow(/^PHIGATE_TRUSTED_DOCUMENTS_FILE: /);
      await writeFile(file, 'not json');
      await expect(loadTrustedDocuments(file)).rejects.toThrow(/^PHIGATE_TRUSTED_DOCUMENTS_FILE: cannot be read/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
