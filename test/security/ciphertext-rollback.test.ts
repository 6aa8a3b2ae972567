import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// Issue 11, item 9: someone with database access puts an older ciphertext back into the same row
// and column. No per-row revision is bound into the AAD (README, "A restored old value"): a value
// moved elsewhere never opens, and within one key version a restore is not detected by the cipher;
// the audit trail of writes is what shows it.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => gw?.close());

const READ = `query($id: ID!) { patient(id: $id) { givenName familyName } }`;
const UPDATE = `mutation($id: ID!, $name: String) { updatePatient(id: $id, input: { givenName: $name }) { id } }`;
const column = (id: string, col: string) =>
  gw.admin(async (c) => (await c.query(`SELECT ${col} AS v FROM phigate.patients WHERE id = $1`, [id])).rows[0].v as Buffer);
const restore = (id: string, col: string, value: Buffer) => gw.admin((c) => c.query(`UPDATE phigate.patients SET ${col} = $2 WHERE id = $1`, [id, value]));

describe('old ciphertext restored into the database', () => {
  it('moved to another column or another patient: refused, never shown', async () => {
    const [a, b] = gw.data.patients.filter((p) => p.clinicId === 'c-north');
    const token = await gw.tokenFor('reg-north');
    await restore(a!.id, 'family_name', await column(a!.id, 'given_name'));
    await restore(b!.id, 'given_name', await column(a!.id, 'given_name'));
    const r1 = await gw.gql(token, READ, { id: a!.id });
    expect(r1.body.data!.patient).toEqual({ givenName: a!.givenName, familyName: null });
    expect(r1.body.errors!.map((e) => e.extensions?.code)).toEqual(['KEY_UNAVAILABLE']);
    const r2 = await gw.gql(token, READ, { id: b!.id });
    expect(r2.body.data!.patient.givenName).toBeNull();
    expect(r2.text).not.toContain(a!.givenName);
  });

  it('restored into the same row and column: it opens (the documented gap), and the audit trail holds the write it undid', async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-south')[0]!;
    const token = await gw.tokenFor('reg-south');
    const old = await column(p.id, 'given_name');
    const update = await gw.gql(token, UPDATE, { id: p.id, name: 'Renamed' });
    expect(update.body.errors).toBeUndefined();
    await restore(p.id, 'given_name', old);
    expect((await gw.gql(token, READ, { id: p.id })).body.data!.patient.givenName).toBe(p.givenName);
    const writes = await gw.auditRows(`patient_id = $1 AND action = 'update' AND field = 'givenName'`, [p.id]);
    expect(writes.map((w) => w.request_id)).toEqual([update.headers.get('x-request-id')]);
  });
});

describe('a value that does not open', () => {
  it('answers KEY_UNAVAILABLE for that field and leaves a committed refusal naming it, with no byte of the value', async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-north')[2]!;
    const token = await gw.tokenFor('reg-north');
    const sealed = await column(p.id, 'given_name');
    // One bit of the tag flipped, as the owner role: the header still names a key this replica has.
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1]! ^= 0x01;
    await restore(p.id, 'given_name', tampered);
    const r = await gw.gql(token, READ, { id: p.id });
    expect(r.body.data!.patient).toEqual({ givenName: null, familyName: p.familyName });
    expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['KEY_UNAVAILABLE', 'decrypt_failed']]);
    const rows = await gw.auditRows('request_id = $1', [r.headers.get('x-request-id')]);
    // In the order the values settled: the replica's key cache is cold, so the refusal may come second.
    const byField = [...rows].sort((a, b) => a.field.localeCompare(b.field));
    expect(byField.map((e) => [e.action, e.type_name, e.field, e.patient_id, e.role, e.detail])).toEqual([
      ['read', 'Patient', 'familyName', p.id, 'registrar', null],
      ['refused', 'Patient', 'givenName', p.id, 'registrar', 'key_unavailable:decrypt_failed'],
    ]);
    const stored = JSON.stringify(rows);
    expect(stored).not.toContain(p.givenName);
    expect(stored).not.toContain(tampered.toString('hex'));
    expect(stored).not.toContain(tampered.toString('base64'));
  });

  it('in the answer of a write: the write rolls back, the refusal of the field is still recorded', async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-north')[3]!;
    const token = await gw.tokenFor('reg-north');
    const tampered = Buffer.from(await column(p.id, 'family_name'));
    tampered[tampered.length - 1]! ^= 0x01;
    await restore(p.id, 'family_name', tampered);
    const r = await gw.gql(token, `mutation($id: ID!) { updatePatient(id: $id, input: { givenName: "Changed" }) { id familyName } }`, { id: p.id });
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors!.map((e) => e.extensions?.code)).toEqual(['KEY_UNAVAILABLE']);
    expect((await gw.gql(token, `query($id: ID!) { patient(id: $id) { givenName } }`, { id: p.id })).body.data!.patient.givenName).toBe(p.givenName);
    const rows = await gw.auditRows('request_id = $1', [r.headers.get('x-request-id')]);
    expect(rows.map((e) => [e.action, e.type_name, e.field, e.patient_id, e.detail])).toEqual([
      ['refused', 'Patient', 'familyName', p.id, 'key_unavailable:decrypt_failed'],
    ]);
  });
});
