import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring, type Keyring, type KeyStore } from '../../../src/crypto/keys/keyring.ts';
import { createPgKeyStore } from '../../../src/db/key-store.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// Patient and encounter statements bring the patient's newest wrapped key (src/db/patients.ts): a
// replica whose key cache misses opens it there, instead of a statement of its own on the key pool.

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName familyName phone email } }';
const PAGE = '{ patients(first: 100) { edges { node { id givenName familyName phone encounters { id reason notes } } } } }';

interface Replica {
  readonly gw: TestGateway;
  /** The replica's own keyring (the test gateway's `keyring` is one it does not use). */
  readonly keyring: Keyring;
  /** Patient-key lookups the replica's keyring made: each is a statement on the key pool. */
  readonly lookups: () => number;
}

describe('a row brings its wrapped patient key', () => {
  let base: TestGateway;
  const pools: Pool[] = [];
  const replicas: TestGateway[] = [];

  /** A fresh replica with a cold key cache, its key store's patient-key lookups counted. */
  async function coldReplica(): Promise<Replica> {
    const pool = createPool(base.db.auxUrl, { max: 2 });
    pools.push(pool);
    const inner = createPgKeyStore(pool);
    let lookups = 0;
    const store: KeyStore = {
      ...inner,
      patientKeys: (refs) => (lookups++, inner.patientKeys(refs)),
      latestPatientKey: (id) => (lookups++, inner.latestPatientKey(id)),
      latestPatientKeys: (ids) => (lookups++, inner.latestPatientKeys(ids)),
    };
    const keyring = createKeyring({ provider: base.keyProvider, store });
    const gw = await startTestGateway({ replicaOf: base, gatewayOptions: { keyring, cipher: createFieldCipher(keyring) } });
    replicas.push(gw);
    return { gw, keyring, lookups: () => lookups };
  }

  beforeAll(async () => {
    base = await startTestGateway({ patients: 12 });
  });
  afterAll(async () => {
    for (const r of replicas) await r.close();
    await Promise.all(pools.map((p) => p.end()));
    await base?.close();
  });

  const north = () => base.data.patients.filter((p) => p.clinicId === 'c-north');

  it('reads by id, pages and encounters on a cold cache cost no patient-key statement', async () => {
    const { gw, keyring, lookups } = await coldReplica();
    const registrar = await gw.tokenFor('reg-north');
    const [first] = north();
    const one = await gw.gql(registrar, BY_ID, { id: first!.id });
    expect(one.body.errors).toBeUndefined();
    expect(one.body.data?.patient).toEqual({ id: first!.id, givenName: first!.givenName, familyName: first!.familyName, phone: first!.phone, email: first!.email });
    const page = await gw.gql(await gw.tokenFor('dr-north-1'), PAGE);
    const nodes = (page.body.data?.patients.edges as { node: { id: string; givenName: string; encounters: { id: string; reason: string }[] } }[]).map((e) => e.node);
    const mine = north().filter((p) => p.careTeam.includes('dr-north-1'));
    expect(nodes.map((n) => n.id).sort()).toEqual(mine.map((p) => p.id).sort());
    for (const n of nodes) {
      const seeded = mine.find((p) => p.id === n.id)!;
      expect(n.givenName).toBe(seeded.givenName);
      expect(n.encounters.map((e) => e.reason).sort()).toEqual(seeded.encounters.map((e) => e.reason).sort());
    }
    expect(page.body.errors).toBeUndefined();
    expect(keyring.stats.cacheMisses).toBeGreaterThan(nodes.length);
    expect(lookups()).toBe(0);
  });

  it("encounters asked without any of their patient's PHI open the key their patient's row brought", async () => {
    const { gw, keyring, lookups } = await coldReplica();
    const res = await gw.gql(await gw.tokenFor('dr-north-2'), '{ patients(first: 100) { edges { node { id encounters { reason notes } } } } }');
    expect(res.body.errors).toBeUndefined();
    const mine = north().filter((p) => p.careTeam.includes('dr-north-2'));
    const got = (res.body.data?.patients.edges as { node: { id: string; encounters: { reason: string }[] } }[]).map((e) => e.node);
    expect(got.map((n) => n.id).sort()).toEqual(mine.map((p) => p.id).sort());
    for (const n of got) expect(n.encounters.map((e) => e.reason).sort()).toEqual(mine.find((p) => p.id === n.id)!.encounters.map((e) => e.reason).sort());
    expect(got.flatMap((n) => n.encounters).length).toBeGreaterThan(got.length);
    expect(keyring.stats.cacheMisses).toBeGreaterThan(0);
    expect(lookups()).toBe(0);
  });

  it('rotation in flight: values under an older patient key than the joined one still decrypt, through one store lookup', async () => {
    const patient = north()[1]!;
    await base.keyring.rotate('data', 'c-north');
    // The newest value is sealed under the patient's new key (clinic key 2, patient key 2); the
    // others stay under version 1 until a re-encryption reaches them.
    const phone = await base.cipher.encrypt('c-north', { table: 'patients', column: 'phone', rowId: patient.id, patientId: patient.id }, '555-0199');
    await base.admin((c) => c.query('UPDATE phigate.patients SET phone = $2 WHERE id = $1', [patient.id, phone]));
    const { gw, lookups } = await coldReplica();
    const res = await gw.gql(await gw.tokenFor('reg-north'), BY_ID, { id: patient.id });
    expect(res.body.errors).toBeUndefined();
    expect(res.body.data?.patient).toEqual({ id: patient.id, givenName: patient.givenName, familyName: patient.familyName, phone: '555-0199', email: patient.email });
    expect(lookups()).toBe(1);
  });

  it("another patient's wrapped key in the row's join is refused: KEY_UNAVAILABLE, no value, no store fallback", async () => {
    const [victim, donor] = north().slice(2, 4);
    const swap = (from: string, to: string) =>
      base.admin((c) =>
        c.query(
          `UPDATE phigate.patient_keys k SET wrapped = o.wrapped FROM phigate.patient_keys o
           WHERE k.patient_id = $1 AND o.patient_id = $2 AND k.version = o.version AND k.clinic_version = o.clinic_version`,
          [to, from],
        ),
      );
    const saved = await base.admin((c) => c.query<{ wrapped: Buffer }>('SELECT wrapped FROM phigate.patient_keys WHERE patient_id = $1', [victim!.id]));
    expect(saved.rows).toHaveLength(1);
    await swap(donor!.id, victim!.id);
    try {
      const { gw, lookups } = await coldReplica();
      // Warm the clinic key with another patient first, so the refusal is the joined key's own.
      await gw.gql(await gw.tokenFor('reg-north'), BY_ID, { id: north()[0]!.id });
      const res = await gw.gql(await gw.tokenFor('reg-north'), BY_ID, { id: victim!.id });
      expect(res.body.data?.patient).toEqual({ id: victim!.id, givenName: null, familyName: null, phone: null, email: null });
      expect(new Set(res.body.errors?.map((e) => e.extensions?.code))).toEqual(new Set(['KEY_UNAVAILABLE']));
      for (const text of [victim!.givenName, victim!.familyName, victim!.phone, donor!.givenName, donor!.phone]) expect(res.text).not.toContain(text);
      expect(lookups()).toBe(0);
    } finally {
      await base.admin((c) => c.query('UPDATE phigate.patient_keys SET wrapped = $2 WHERE patient_id = $1', [victim!.id, saved.rows[0]!.wrapped]));
    }
  });
});
