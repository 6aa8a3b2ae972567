import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// The last line of defence behind every resolver: PHI counted against the principal's limits with
// no audit event that shows it means some path showed values without recording them, and the
// answer must then be an error with no data, for a read and for a write alike. The request's audit
// buffer is made to lose the events of shown values, as a resolver that forgot to record would.

const lose = vi.hoisted(() => ({ shown: false }));
vi.mock('../../../src/audit/buffer.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../src/audit/buffer.ts')>();
  return {
    ...real,
    createAuditBuffer(request: AuditRequest) {
      const buffer = real.createAuditBuffer(request);
      return Object.assign(Object.create(buffer), {
        add(event: AuditEvent) {
          if (lose.shown && (event.action === 'read' || event.action === 'masked' || event.action === 'search')) return;
          buffer.add(event);
        },
      });
    },
  };
});

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => gw?.close());
afterEach(() => {
  lose.shown = false;
});

const READ = `query($id: ID!) { patient(id: $id) { id givenName phone } }`;
const UPDATE = `mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id phone } }`;
const north = () => gw.data.patients.find((p) => p.clinicId === 'c-north')!;

describe('PHI counted with no audit event that shows it', () => {
  it('the harness loses nothing when told not to: the read answers and is audited', async () => {
    const p = north();
    const r = await gw.gql(await gw.tokenFor('reg-north'), READ, { id: p.id });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.patient).toMatchObject({ givenName: p.givenName });
  });

  it('a read answers AUDIT_UNAVAILABLE with no data and shows no value', async () => {
    const p = north();
    lose.shown = true;
    const r = await gw.gql(await gw.tokenFor('reg-north'), READ, { id: p.id });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => e.extensions?.code)).toEqual(['AUDIT_UNAVAILABLE']);
    expect(r.text).not.toContain(p.givenName);
    expect(gw.lastRequestLog()).toMatchObject({ outcome: 'audit_failed' });
  });

  it('a search whose event is lost answers AUDIT_UNAVAILABLE too', async () => {
    const p = north();
    lose.shown = true;
    const r = await gw.gql(await gw.tokenFor('reg-north'), `query($mrn: String!) { patientByMrn(mrn: $mrn) { id } }`, { mrn: p.mrn });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => e.extensions?.code)).toEqual(['AUDIT_UNAVAILABLE']);
    expect(r.text).not.toContain(p.id);
  });

  it('a write whose answer shows values unrecorded is rolled back whole, though its own update rows were there', async () => {
    const p = north();
    const token = await gw.tokenFor('reg-north');
    lose.shown = true;
    const r = await gw.gql(token, UPDATE, { id: p.id, input: { phone: '+1 555 0199' } });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => e.extensions?.code)).toEqual(['AUDIT_UNAVAILABLE']);
    lose.shown = false;
    const again = await gw.gql(token, READ, { id: p.id });
    expect(again.body.data!.patient.phone).toBe(p.phone);
    expect(await gw.auditRows(`request_id = $1`, [r.headers.get('x-request-id')])).toEqual([]);
  });
});
