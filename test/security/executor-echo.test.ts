import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// Errors the executor itself makes while completing a value (a list item its scalar cannot
// represent, a list that is not one) quote the value: "String cannot represent value: [...]".
// graphql-jit makes them without an originalError, which error masking took for one of GraphQL's
// own document errors and answered as it was, value included, as BAD_USER_INPUT. The value here is
// decrypted PHI: an encounter's diagnosis codes sealed in a shape no writer of the gateway makes
// (an import, a past bug, a hand-edited row re-sealed with the clinic's key).

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => gw?.close());

const SSN = '123-45-6789';
const READ = `query($id: ID!) { patient(id: $id) { id encounters { id diagnosisCodes } } }`;

describe('an executor error about a decrypted value', () => {
  it.each([
    ['an object in the list', `[{"ssn":"${SSN}"}]`],
    ['a list in the list', `[["${SSN}"]]`],
    ['a string, not a list', `"${SSN}"`],
  ])('%s: INTERNAL with its path, no byte of the value in the answer or the log', async (_what, plain) => {
    const p = gw.data.patients.find((x) => x.clinicId === 'c-north' && x.careTeam.includes('dr-north-1') && x.encounters.length > 0)!;
    const e = p.encounters[0]!;
    const sealed = await gw.cipher.encrypt('c-north', { table: 'encounters', column: 'diagnosis_codes', rowId: e.id, patientId: p.id }, plain);
    await gw.admin((c) => c.query('UPDATE phigate.encounters SET diagnosis_codes = $2 WHERE id = $1', [e.id, sealed]));
    const logged = gw.logs.length;
    const r = await gw.gql(await gw.tokenFor('dr-north-1'), READ, { id: p.id });
    expect(r.text).not.toContain(SSN);
    expect(r.text).not.toContain('123456789');
    const errors = r.body.errors ?? [];
    expect(errors.map((x) => x.extensions?.code), r.text).toEqual(['INTERNAL']);
    expect(errors[0]!.message).toBe('Unexpected error.');
    expect(errors[0]!.path?.slice(0, 2)).toEqual(['patient', 'encounters']);
    // The rest of the answer stands: the patient and the encounter, without that value.
    expect(r.body.data!.patient.id).toBe(p.id);
    const lines = JSON.stringify(gw.logs.slice(logged));
    expect(lines).not.toContain(SSN);
    expect(lines).toContain('unexpected error');
  });

  it('logs the schema path of the error, not the aliases the client gave its fields', async () => {
    const p = gw.data.patients.find((x) => x.clinicId === 'c-north' && x.careTeam.includes('dr-north-1') && x.encounters.length > 0)!;
    const e = p.encounters[0]!;
    const sealed = await gw.cipher.encrypt('c-north', { table: 'encounters', column: 'diagnosis_codes', rowId: e.id, patientId: p.id }, `"${SSN}"`);
    await gw.admin((c) => c.query('UPDATE phigate.encounters SET diagnosis_codes = $2 WHERE id = $1', [e.id, sealed]));
    const logged = gw.logs.length;
    const aliased = `query($id: ID!) { clientTextA: patient(id: $id) { id ...F } } fragment F on Patient { clientTextB: encounters { id clientTextC: diagnosisCodes } }`;
    const r = await gw.gql(await gw.tokenFor('dr-north-1'), aliased, { id: p.id });
    expect(r.body.errors?.map((x) => x.extensions?.code), r.text).toEqual(['INTERNAL']);
    expect(r.body.errors![0]!.path?.[0]).toBe('clientTextA');
    const lines = gw.logs.slice(logged).filter((l) => l.msg === 'unexpected error');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.path).toEqual(['patient', 'encounters', 0, 'diagnosisCodes']);
    expect(JSON.stringify(gw.logs.slice(logged))).not.toContain('clientText');
  });
});
