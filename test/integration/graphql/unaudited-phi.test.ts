import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AuditBuffer } from '../../../src/audit/buffer.ts';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// The last line of defence behind every resolver: PHI counted against the principal's limits with
// no audit event that shows it means some path showed values without recording them, and the
// answer must then be an error with no data, for a read and for a write alike. The request's audit
// buffer is made to lose the events of shown values, as a resolver that forgot to record would.

// shown: every event of a shown value is lost; one: only the request's first (the rest recorded,
// as a path that charges twice and records once); elsewhere: the first names another patient.
const lose = vi.hoisted(() => ({ shown: false, one: false, elsewhere: false }));
vi.mock('../../../src/audit/buffer.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../src/audit/buffer.ts')>();
  return {
    ...real,
    createAuditBuffer(request: AuditRequest) {
      const buffer = real.createAuditBuffer(request);
      let first = true;
      // Every member but add() handed to the real buffer, which keeps its state in private fields.
      const losing: AuditBuffer = {
        add(event: AuditEvent) {
          const shows = event.action === 'read' || event.action === 'masked' || event.action === 'search';
          const isFirst = shows && first;
          if (shows) first = false;
          if (lose.shown && shows) return;
          if (lose.one && isFirst) return;
          if (lose.elsewhere && isFirst) return buffer.add({ ...event, patientId: '00000000-0000-4000-8000-0000000000ff' });
          buffer.add(event);
        },
        get size() {
          return buffer.size;
        },
        get events() {
          return buffer.events;
        },
        get request() {
          return buffer.request;
        },
        seal: () => buffer.seal(),
        close: () => buffer.close(),
      };
      return losing;
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
  lose.one = false;
  lose.elsewhere = false;
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

describe('PHI counted with some of its events missing: exact, not merely some event', () => {
  const PAGE = `{ patients(first: 20) { edges { node { id givenName familyName ssn phone encounters { id reason notes } } } } }`;

  it('a read that charged two values and recorded one is refused whole, and nothing of it is committed', async () => {
    const p = north();
    lose.one = true;
    const r = await gw.gql(await gw.tokenFor('reg-north'), READ, { id: p.id });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['AUDIT_UNAVAILABLE', 'events_missing']]);
    expect(r.text).not.toContain(p.givenName);
    expect(r.text).not.toContain(p.phone);
    expect(gw.lastRequestLog()).toMatchObject({ outcome: 'audit_failed' });
    expect(await gw.auditRows(`request_id = $1`, [r.headers.get('x-request-id')])).toEqual([]);
  });

  it('a page of masked, denied and empty values missing one event of many is refused whole', async () => {
    const token = await gw.tokenFor('dr-north-1');
    const whole = await gw.gql(token, PAGE);
    // As the physician sees it: ssn masked, notes read, some empty values; nothing lost, it answers.
    expect(whole.body.errors, whole.text).toBeUndefined();
    const shown = (await gw.auditRows(`request_id = $1 AND action IN ('read', 'masked')`, [whole.headers.get('x-request-id')])).length;
    expect(shown).toBeGreaterThan(1);
    lose.one = true;
    const r = await gw.gql(token, PAGE);
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['AUDIT_UNAVAILABLE', 'events_missing']]);
    expect(await gw.auditRows(`request_id = $1`, [r.headers.get('x-request-id')])).toEqual([]);
  });

  it('a nurse\'s page with a denied field (notes) answers, its events one per value shown', async () => {
    const r = await gw.gql(await gw.tokenFor('rn-north-1'), PAGE);
    expect((r.body.errors ?? []).every((e) => e.extensions?.code === 'FIELD_DENIED'), r.text).toBe(true);
    expect(r.body.data).not.toBeNull();
    expect(gw.lastRequestLog()).toMatchObject({ outcome: 'committed' });
  });

  it('an event that names another patient than the value it stands for is refused whole', async () => {
    const p = north();
    lose.elsewhere = true;
    const r = await gw.gql(await gw.tokenFor('reg-north'), READ, { id: p.id });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['AUDIT_UNAVAILABLE', 'events_missing']]);
    expect(await gw.auditRows(`request_id = $1`, [r.headers.get('x-request-id')])).toEqual([]);
  });

  it('a write whose answer lost one of its events is rolled back whole', async () => {
    const p = north();
    const token = await gw.tokenFor('reg-north');
    lose.one = true;
    const r = await gw.gql(token, `mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id phone givenName } }`, {
      id: p.id,
      input: { phone: '+1 555 0198' },
    });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['AUDIT_UNAVAILABLE', 'events_missing']]);
    lose.one = false;
    expect((await gw.gql(token, READ, { id: p.id })).body.data!.patient.phone).toBe(p.phone);
    expect(await gw.auditRows(`request_id = $1`, [r.headers.get('x-request-id')])).toEqual([]);
  });
});
