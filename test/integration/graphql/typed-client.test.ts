import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeDocument, PatientBySsnDocument, PatientPageDocument, UpdatePatientDocument } from '../../../client/generated/graphql.ts';
import { createPhigateClient, fieldCodes } from '../../../examples/client.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// The typed documents codegen generates, through the example client, against a real gateway.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 9 });
});
afterAll(async () => gw?.close());

const clientFor = (sub: string) => createPhigateClient({ url: gw.url, token: () => gw.tokenFor(sub) });

describe('the example client with generated typed documents', () => {
  it('reads me', async () => {
    const r = await clientFor('reg-north')(MeDocument);
    expect(r.errors).toEqual([]);
    expect(r.data?.me).toEqual({ subject: 'reg-north', kind: 'user', roles: ['registrar'], clinics: ['c-north'], mfa: true });
  });

  it('finds a patient by SSN; a billing clerk, who may not see SSNs, may not search by one either', async () => {
    const patient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
    const registrar = await clientFor('reg-north')(PatientBySsnDocument, { ssn: patient.ssn });
    expect(registrar.data?.patientBySsn).toMatchObject({ id: patient.id, ssn: patient.ssn, familyName: patient.familyName });
    const billing = await clientFor('bill-north')(PatientBySsnDocument, { ssn: patient.ssn });
    expect(billing.data?.patientBySsn).toBeNull();
    expect(fieldCodes(billing, ['patientBySsn'])).toEqual(['FORBIDDEN']);
  });

  it('pages and updates with typed variables', async () => {
    const request = clientFor('reg-north');
    const page = await request(PatientPageDocument, { first: 2 });
    const first = page.data!.patients.edges[0]!.node;
    const updated = await request(UpdatePatientDocument, { id: first.id, input: { phone: '+1 555 0100' } });
    expect(updated.errors).toEqual([]);
    expect(updated.data?.updatePatient.phone).toBe('+1 555 0100');
  });
});
