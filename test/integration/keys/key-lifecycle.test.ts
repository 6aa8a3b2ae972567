import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { sealField, sealedUnder } from '../../../src/crypto/envelope.ts';
import { createKeyring, type Keyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../../../src/db/key-store.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import type { KeyAdmin } from '../../../src/records/key-admin.ts';
import { pendingReencryption, reencryptClinic } from '../../../src/records/reencrypt.ts';
import { retireDataKey } from '../../../src/records/retire-key.ts';
import { rewrapKeys } from '../../../src/records/rewrap-keys.ts';
import { shredPatient } from '../../../src/records/shred-patient.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// Issue 14 against real PostgreSQL and the real gateway: rotation and online re-encryption under a
// writer and readers, a stopped re-encryption resumed, retirement refused and then done, shredding.

let gw: TestGateway;
let adminPool: Pool;
let admin: KeyAdmin;
let operatorKeyring: Keyring;

beforeAll(async () => {
  gw = await startTestGateway({ patients: 60 });
  adminPool = createPool(gw.db.adminUrl, { max: 3 });
  admin = { pool: adminPool, actor: 'cli:test-operator' };
  operatorKeyring = createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) });
});
afterAll(async () => {
  await adminPool?.end();
  await gw?.close();
});

const READ = `query($id: ID!) { patient(id: $id) { givenName familyName } }`;
const UPDATE = `mutation($id: ID!, $name: String) { updatePatient(id: $id, input: { givenName: $name }) { id } }`;
const BY_MRN = `query($mrn: String!) { patientByMrn(mrn: $mrn) { id givenName } }`;

/** Every sealed value of a clinic, opened by a cold replica's cipher: what a fresh gateway would show. */
async function openAll(clinicId: string): Promise<{ versions: Set<number>; patients: Map<string, string> }> {
  const cipher = createFieldCipher(createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) }));
  const versions = new Set<number>();
  const patients = new Map<string, string>();
  const rows = await gw.admin(async (c) => (await c.query(`SELECT id, given_name, mrn FROM phigate.patients WHERE clinic_id = $1`, [clinicId])).rows);
  for (const r of rows) {
    versions.add(sealedUnder(r.mrn).version);
    versions.add(sealedUnder(r.given_name).version);
    patients.set(r.id, await cipher.decrypt(clinicId, { table: 'patients', column: 'given_name', rowId: r.id, patientId: r.id }, r.given_name));
  }
  const encounters = await gw.admin(async (c) => (await c.query(`SELECT id, patient_id, kind, notes FROM phigate.encounters WHERE clinic_id = $1`, [clinicId])).rows);
  for (const e of encounters) {
    const seeded = gw.data.patients.find((p) => p.id === e.patient_id)!.encounters.find((x) => x.id === e.id)!;
    versions.add(sealedUnder(e.kind).version);
    expect(await cipher.decrypt(clinicId, { table: 'encounters', column: 'kind', rowId: e.id, patientId: e.patient_id }, e.kind)).toBe(seeded.kind);
    expect(await cipher.decrypt(clinicId, { table: 'encounters', column: 'notes', rowId: e.id, patientId: e.patient_id }, e.notes)).toBe(seeded.notes);
  }
  return { versions, patients };
}

describe('rotation and online re-encryption', () => {
  it('re-encrypts a clinic while a writer and readers run: every value decrypts to what was written last, no read fails', async () => {
    const clinic = 'c-north';
    const mine = gw.data.patients.filter((p) => p.clinicId === clinic);
    const writerToken = await gw.tokenFor('reg-north');
    const lastWritten = new Map(mine.map((p) => [p.id, p.givenName]));
    let running = true;
    const failures: unknown[] = [];

    const writer = (async () => {
      for (let n = 0; running; n++) {
        const p = mine[n % mine.length]!;
        const name = `Written${n}`;
        const r = await gw.gql(writerToken, UPDATE, { id: p.id, name });
        if (r.body.errors) failures.push(r.body.errors);
        else lastWritten.set(p.id, name);
      }
    })();
    const reader = (async () => {
      for (let n = 0; running; n++) {
        const p = mine[n % mine.length]!;
        const r = await gw.gql(writerToken, READ, { id: p.id });
        if (r.body.errors || r.status !== 200 || typeof r.body.data?.patient?.givenName !== 'string') failures.push(r.body.errors ?? r.status);
      }
    })();

    const version = await operatorKeyring.rotate('data', clinic);
    expect(version).toBe(2);
    const result = await reencryptClinic({ admin, keyring: operatorKeyring, clinicId: clinic, batchSize: 4 });
    running = false;
    await Promise.all([writer, reader]);
    expect(failures).toEqual([]);
    expect(result.target).toBe(2);
    expect(result.patients).toBeGreaterThanOrEqual(mine.length - result.remaining);

    // The gateway kept writing under version 1 until its 'latest version' cache expired (the
    // stated bound): a second run, with the writer stopped, finishes the job.
    await reencryptClinic({ admin, keyring: operatorKeyring, clinicId: clinic, batchSize: 4 });
    expect((await pendingReencryption(admin, clinic)).patients).toBe(0);
    const { versions, patients } = await openAll(clinic);
    expect([...versions]).toEqual([2]);
    for (const [id, name] of lastWritten) expect(patients.get(id)).toBe(name);
    // Through the gateway too: the rows are read under the new version.
    for (const p of mine.slice(0, 5)) expect((await gw.gql(writerToken, READ, { id: p.id })).body.data!.patient.givenName).toBe(lastWritten.get(p.id));

    // Each rewritten value is a key event, none of them a PHI read.
    const events = await gw.auditRows(`action = 'key' AND detail = 'reencrypted' AND actor = 'cli:test-operator'`);
    expect(events.length).toBeGreaterThan(mine.length);
    expect(events.every((e) => e.actor_kind === 'system' && e.patient_id !== null)).toBe(true);
  });

  it('retiring a version is refused while a row uses it, and done once none does', async () => {
    const clinic = 'c-south';
    // Rows from before per-patient keys and before kinds were encrypted: a value sealed directly
    // under the clinic key (format 1) and an encounter kind in the clear. Re-encryption moves both.
    const legacy = gw.data.patients.find((x) => x.clinicId === clinic && x.encounters.length > 0)!;
    const clinicKey = await operatorKeyring.writeKey(clinic);
    const v1 = sealField(clinicKey, { table: 'patients', column: 'given_name', rowId: legacy.id }, legacy.givenName);
    const encounter = legacy.encounters[0]!;
    await gw.admin(async (c) => {
      await c.query('UPDATE phigate.patients SET given_name = $2 WHERE id = $1', [legacy.id, v1]);
      await c.query('UPDATE phigate.encounters SET kind = NULL, kind_legacy = $2 WHERE id = $1', [encounter.id, encounter.kind]);
    });
    await operatorKeyring.rotate('data', clinic);
    await expect(retireDataKey(admin, clinic, 1, 0)).rejects.toThrow(/still use data key version 1/);
    await expect(retireDataKey(admin, clinic, 2, 0)).rejects.toThrow(/current data key/);
    // Replicas may still write under the old version within the bound.
    await expect(retireDataKey(admin, clinic, 1, 3_600_000)).rejects.toThrow(/may still write/);

    // Stopped after its first batch (Ctrl-C), then run again: it resumes with what is left.
    const stop = new AbortController();
    const first = await reencryptClinic({
      admin,
      keyring: operatorKeyring,
      clinicId: clinic,
      batchSize: 3,
      signal: stop.signal,
      onProgress: (done) => {
        if (done > 0) stop.abort();
      },
    });
    expect(first.patients).toBe(3);
    expect(first.remaining).toBeGreaterThan(0);
    const second = await reencryptClinic({ admin, keyring: operatorKeyring, clinicId: clinic, batchSize: 3 });
    expect(second.patients).toBe(first.remaining);
    expect(second.remaining).toBe(0);

    const { patientKeys } = await retireDataKey(admin, clinic, 1, 0);
    expect(patientKeys).toBeGreaterThan(0);
    expect(await gw.admin(async (c) => (await c.query(`SELECT version FROM phigate.keyring WHERE purpose = 'data' AND scope = $1`, [clinic])).rows)).toEqual([{ version: 2 }]);
    const { versions, patients } = await openAll(clinic);
    expect([...versions]).toEqual([2]);
    for (const p of gw.data.patients.filter((x) => x.clinicId === clinic)) expect(patients.get(p.id)).toBe(p.givenName);
    const moved = await gw.admin(async (c) => (await c.query('SELECT kind, kind_legacy FROM phigate.encounters WHERE id = $1', [encounter.id])).rows[0]);
    expect(moved.kind_legacy).toBeNull();
    expect(sealedUnder(moved.kind)).toEqual({ version: 2, patientVersion: expect.any(Number) });
    expect(await gw.auditRows(`action = 'key' AND detail = 'retired:v1' AND field = $1`, [clinic])).toHaveLength(1);
  });
});

describe('crypto-shredding', () => {
  it("destroys one patient's keys: reads answer KEY_UNAVAILABLE shredded, lookups find nothing, the event is audited, past audit rows stay", async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-east')[0]!;
    const other = gw.data.patients.filter((x) => x.clinicId === 'c-east')[1]!;
    const token = await gw.tokenFor('reg-east');
    expect((await gw.gql(token, READ, { id: p.id })).body.data!.patient.givenName).toBe(p.givenName);
    const pastReads = await gw.auditRows(`patient_id = $1 AND action = 'read'`, [p.id]);
    expect(pastReads.length).toBeGreaterThan(0);
    // A write just before: this replica now holds the patient's write key in its cache.
    expect((await gw.gql(token, UPDATE, { id: p.id, name: p.givenName })).body.errors).toBeUndefined();

    expect(await shredPatient(admin, p.id)).toBe('shredded');

    const read = await gw.gql(token, READ, { id: p.id });
    expect(read.status).toBe(200);
    expect(read.body.data!.patient).toEqual({ givenName: null, familyName: null });
    expect(read.body.errors!.map((e: any) => [e.extensions.code, e.extensions.reason])).toEqual([
      ['KEY_UNAVAILABLE', 'shredded'],
      ['KEY_UNAVAILABLE', 'shredded'],
    ]);
    expect(read.text).not.toContain(p.givenName);
    // Each refused field is on the record of the request that asked for it.
    const refusals = await gw.auditRows('request_id = $1', [read.headers.get('x-request-id')]);
    expect([...refusals].sort((a, b) => a.field.localeCompare(b.field)).map((e) => [e.action, e.field, e.detail])).toEqual([
      ['refused', 'familyName', 'key_unavailable:shredded'],
      ['refused', 'givenName', 'key_unavailable:shredded'],
    ]);
    expect((await gw.gql(token, BY_MRN, { mrn: p.mrn })).body.data!.patientByMrn).toBeNull();
    // Its neighbour is untouched.
    expect((await gw.gql(token, BY_MRN, { mrn: other.mrn })).body.data!.patientByMrn.givenName).toBe(other.givenName);
    // No writer can give it a new key.
    const write = await gw.gql(token, UPDATE, { id: p.id, name: 'Again' });
    expect(write.body.errors![0]!.extensions?.code).toBe('KEY_UNAVAILABLE');

    // Old ciphertext (a backup) put back does not open either: its key is gone.
    const keys = await gw.admin(async (c) => (await c.query(`SELECT wrapped FROM phigate.patient_keys WHERE patient_id = $1`, [p.id])).rows);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((k) => k.wrapped === null)).toBe(true);

    expect(await gw.auditRows(`action = 'key' AND patient_id = $1 AND detail = 'shredded'`, [p.id])).toHaveLength(1);
    const after = await gw.auditRows(`patient_id = $1 AND action = 'read'`, [p.id]);
    expect(after.slice(0, pastReads.length)).toEqual(pastReads);
    expect(await shredPatient(admin, p.id)).toBe('already_shredded');
  });

  it("empties the digests a blind-index rotation in progress computed for the next version", async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-east')[3]!;
    // As a rotation's backfill (019) would have left them: digests of the next index version.
    await gw.admin((c) => c.query(`UPDATE phigate.patients SET mrn_bidx_next = $2, ssn_bidx_next = $3 WHERE id = $1`, [p.id, randomBytes(32), randomBytes(32)]));
    expect(await shredPatient(admin, p.id)).toBe('shredded');
    const row = await gw.admin(async (c) => (await c.query('SELECT mrn_bidx_next, ssn_bidx_next FROM phigate.patients WHERE id = $1', [p.id])).rows[0]);
    expect(row).toEqual({ mrn_bidx_next: null, ssn_bidx_next: null });
  });

  it('a backup of the ciphertext restored into the row after shredding does not open on a cold replica', async () => {
    const p = gw.data.patients.filter((x) => x.clinicId === 'c-east')[2]!;
    const backup = await gw.admin(async (c) => (await c.query(`SELECT given_name FROM phigate.patients WHERE id = $1`, [p.id])).rows[0].given_name as Buffer);
    await shredPatient(admin, p.id);
    const cold = createFieldCipher(createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) }));
    await expect(Promise.resolve().then(() => cold.decrypt('c-east', { table: 'patients', column: 'given_name', rowId: p.id, patientId: p.id }, backup))).rejects.toMatchObject({
      code: 'KEY_UNAVAILABLE',
      reason: 'shredded',
    });
  });
});

describe('master-key rotation', () => {
  it('re-wraps every data key (and the partner-key pepper) under the new master key without touching a row', async () => {
    const next = createLocalKeyProvider(randomBytes(32));
    const rowsBefore = await gw.admin(async (c) => (await c.query(`SELECT id, mrn, given_name FROM phigate.patients ORDER BY id`)).rows);
    const first = await rewrapKeys(admin, gw.keyProvider, next);
    expect(first.rewrapped).toBeGreaterThanOrEqual(4);
    // Repeated (a run stopped and started again): nothing left to do.
    expect(await rewrapKeys(admin, gw.keyProvider, next)).toEqual({ rewrapped: 0, alreadyDone: first.rewrapped });
    expect(await gw.admin(async (c) => (await c.query(`SELECT id, mrn, given_name FROM phigate.patients ORDER BY id`)).rows)).toEqual(rowsBefore);
    expect(await gw.admin(async (c) => (await c.query(`SELECT DISTINCT key_ref FROM phigate.keyring`)).rows)).toEqual([{ key_ref: next.keyRef }]);

    // A replica with the new master key reads everything; one with the old key is refused, never shown garbage.
    const fresh = createFieldCipher(createKeyring({ provider: next, store: createPgKeyStore(adminPool) }));
    const stale = createFieldCipher(createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) }));
    const p = gw.data.patients.find((x) => x.clinicId === 'c-south')!;
    const sealed = rowsBefore.find((r) => r.id === p.id)!.given_name as Buffer;
    const at = { table: 'patients', column: 'given_name', rowId: p.id, patientId: p.id };
    expect(await fresh.decrypt('c-south', at, sealed)).toBe(p.givenName);
    await expect(Promise.resolve().then(() => stale.decrypt('c-south', at, sealed))).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE', reason: 'wrong_master_key' });
    expect((await gw.auditRows(`action = 'key' AND type_name = 'MasterKey'`)).length).toBe(first.rewrapped);
  });
});
