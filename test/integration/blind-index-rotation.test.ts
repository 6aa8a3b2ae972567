import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blindIndex, normaliseMrn, normaliseSsn } from '../../src/crypto/blind-index.ts';
import { createFieldCipher, type FieldCipher } from '../../src/crypto/field-cipher.ts';
import { createKeyring, type Keyring } from '../../src/crypto/keys/keyring.ts';
import { createPgKeyStore } from '../../src/db/key-store.ts';
import { PhigateError } from '../../src/errors.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import {
  backfillIndex,
  finishIndexRotation,
  indexRotationStates,
  startIndexRotation,
  type IndexRotationDeps,
} from '../../src/records/index-rotation.ts';
import { generateDataset } from '../../src/seed/dataset.ts';
import { writeDataset } from '../../src/seed/write.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// Blind-index key rotation (issue 14, item 4): lookups by SSN and MRN find every patient in every
// phase (before, started, half backfilled, backfilling under a loop of lookups, finished, a second
// rotation), uniqueness holds across versions, a killed backfill resumes, finishing is refused
// early, and afterwards no digest of the old version is left.
//
// Lookups go to a replica whose keyring re-reads the newest index version every 200 ms (the
// default is 60 s); finishing is allowed 500 ms after the start, more than twice that, as
// FINISH_NOT_BEFORE_MS is for the default.

const LATEST_TTL_MS = 200;
const NOT_BEFORE_MS = 500;
const CLINIC = 'c-north';

let gw: TestGateway;
let replica: TestGateway;
let keyPool: Pool;
let jobDb: pg.Client;
let deps: IndexRotationDeps;
let jobKeyring: Keyring;

beforeAll(async () => {
  gw = await startTestGateway({ patients: 40 });
  keyPool = createPool(gw.db.appUrl, { max: 2 });
  const fast = createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(keyPool), latestTtlMs: LATEST_TTL_MS });
  replica = await startTestGateway({ replicaOf: gw, gatewayOptions: { keyring: fast, cipher: createFieldCipher(fast) } });
  jobDb = new pg.Client({ connectionString: gw.db.adminUrl });
  await jobDb.connect();
  jobKeyring = createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(keyPool) });
  deps = { db: jobDb, keyring: jobKeyring, cipher: createFieldCipher(jobKeyring), actor: 'cli:test' };
});
afterAll(async () => {
  await jobDb?.end();
  await replica?.close();
  await keyPool?.end();
  await gw?.close();
});

const BY_SSN = 'query($v: String!) { patientBySsn(ssn: $v) { id } }';
const BY_MRN = 'query($v: String!) { patientByMrn(mrn: $v) { id } }';

interface Person {
  readonly id: string;
  readonly clinicId: string;
  readonly mrn: string;
  readonly ssn: string;
}

/** Patients the tests created, besides the seeded ones. */
const created: Person[] = [];
/** Identifiers the tests changed, by patient id. */
const changed = new Map<string, Person>();
const people = (clinicId = CLINIC): Person[] =>
  [...gw.data.patients, ...created].map((p) => changed.get(p.id) ?? p).filter((p) => p.clinicId === clinicId);

// A fresh registrar each time: one principal doing all these lookups would reach its rows per minute.
const registrar = (clinicId = CLINIC) => gw.tokenFor(`reg-${randomBytes(4).toString('hex')}`, { roles: ['registrar'], clinics: [clinicId] });

/** Looks every patient up by SSN and by MRN; the lookups that did not answer with that patient. */
async function misses(clinicId = CLINIC): Promise<string[]> {
  const token = await registrar(clinicId);
  const wrong: string[] = [];
  await Promise.all(
    people(clinicId).flatMap((p) => [
      replica.gql(token, BY_SSN, { v: p.ssn }).then((r) => r.body.data?.patientBySsn?.id === p.id || wrong.push(`ssn of ${p.id}: ${r.text}`)),
      replica.gql(token, BY_MRN, { v: p.mrn }).then((r) => r.body.data?.patientByMrn?.id === p.id || wrong.push(`mrn of ${p.id}: ${r.text}`)),
    ]),
  );
  return wrong;
}

/** Bumped before and after a test changes an identifier. */
let edits = 0;

/** Lookups in parallel until stopped; counts them and their misses. */
function lookupLoop(parallel = 4) {
  let stop = false;
  let lookups = 0;
  const wrong: string[] = [];
  const worker = async (n: number) => {
    for (let i = n; !stop; i++) {
      const token = await registrar();
      for (let k = 0; k < 20 && !stop; k++) {
        const all = people();
        const p = all[(i * 7 + k) % all.length]!;
        const bySsn = (i + k) % 2 === 0;
        const seen = edits;
        const r = await replica.gql(token, bySsn ? BY_SSN : BY_MRN, { v: bySsn ? p.ssn : p.mrn });
        const found = bySsn ? r.body.data?.patientBySsn?.id : r.body.data?.patientByMrn?.id;
        // A lookup that overlapped a test's change of an identifier may rightly miss.
        if (edits !== seen) continue;
        lookups++;
        if (found !== p.id) wrong.push(`${bySsn ? 'ssn' : 'mrn'} of ${p.id}: ${r.text}`);
      }
    }
  };
  const running = Promise.all(Array.from({ length: parallel }, (_, n) => worker(n)));
  return {
    get lookups() {
      return lookups;
    },
    /** Resolves once `n` more lookups have answered. */
    async more(n: number) {
      const target = lookups + n;
      while (lookups < target && wrong.length === 0) await new Promise((r) => setTimeout(r, 5));
    },
    async stop() {
      stop = true;
      await running;
      return { lookups, wrong };
    },
  };
}

async function createPatient(ssn: string, mrn: string) {
  const token = await registrar();
  return gw.gql(token, 'mutation($i: CreatePatientInput!) { createPatient(input: $i) { id } }', { i: { clinicId: CLINIC, mrn, ssn, givenName: 'Test' } });
}

const digestColumns = (id: string) =>
  gw.admin(async (c) => (await c.query('SELECT mrn_bidx, ssn_bidx, mrn_bidx_next, ssn_bidx_next FROM phigate.patients WHERE id = $1', [id])).rows[0]);

const keyEvents = (detail: string) =>
  gw.admin(async (c) => (await c.query(`SELECT patient_id, batch_id, actor, actor_kind, field FROM phigate.audit_events WHERE action = 'key' AND detail = $1 ORDER BY id`, [detail])).rows);

const state = async () => (await indexRotationStates(jobDb, [CLINIC]))[0]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// One rotation walked through in steps (before, start, backfill, finish, a second rotation): each
// test starts from the state the ones before it left. Its order is the test: never shuffled.
describe('blind-index rotation', { shuffle: false }, () => {
  it('before any rotation: every patient is found by SSN and MRN, at version 1', async () => {
    expect(await misses()).toEqual([]);
    expect(await state()).toEqual({ clinicId: CLINIC, version: 1, next: null, lacking: 0 });
  });

  it('finish before any start is refused', async () => {
    await expect(finishIndexRotation(deps, CLINIC, { notBeforeMs: 0 })).rejects.toMatchObject({ extensions: { reason: 'no_rotation' } });
  });

  it('start: a new key version, every row still to backfill, lookups unaffected; starting again resumes', async () => {
    expect(await startIndexRotation(deps, CLINIC)).toEqual({ from: 1, to: 2, resumed: false });
    expect(await startIndexRotation(deps, CLINIC)).toEqual({ from: 1, to: 2, resumed: true });
    expect(await state()).toEqual({ clinicId: CLINIC, version: 1, next: 2, lacking: people().length });
    expect(await misses()).toEqual([]);
    // Other clinics are not rotating.
    expect((await indexRotationStates(jobDb, ['c-south']))[0]).toMatchObject({ version: 1, next: null });
    expect(await misses('c-south')).toEqual([]);
    expect(await keyEvents('index_rotation_start:v2')).toHaveLength(1);
  });

  it('a write during the rotation carries both digests, and is found', async () => {
    const r = await createPatient('555-01-0001', 'ROT-0001');
    expect(r.body.errors).toBeUndefined();
    const id = r.body.data!.createPatient.id as string;
    created.push({ id, clinicId: CLINIC, mrn: 'ROT-0001', ssn: '555-01-0001' });
    const row = await digestColumns(id);
    expect(row.mrn_bidx_next).toBeInstanceOf(Buffer);
    expect(row.ssn_bidx_next).toBeInstanceOf(Buffer);
    expect(row.mrn_bidx_next.equals(row.mrn_bidx)).toBe(false);
    expect(await misses()).toEqual([]);
  });

  it('one SSN and one MRN per clinic hold across versions', async () => {
    const old = people().find((p) => !created.includes(p))!;
    const dupSsn = await createPatient(old.ssn, 'ROT-0002');
    expect(dupSsn.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const dupMrn = await createPatient('555-01-0003', old.mrn);
    expect(dupMrn.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('a backfill killed after two batches leaves a consistent half, which lookups still find', async () => {
    let batches = 0;
    const killed = backfillIndex(deps, CLINIC, {
      batchSize: 5,
      afterBatch: () => {
        if (++batches === 2) throw new Error('killed');
      },
    });
    await expect(killed).rejects.toThrow('killed');
    // The written patient had both digests already; ten more were backfilled.
    expect((await state()).lacking).toBe(people().length - 1 - 10);
    expect(await misses()).toEqual([]);
  });

  it('finish is refused while rows lack the new index, and sooner than the replicas could have noticed the start', async () => {
    await expect(finishIndexRotation(deps, CLINIC, { notBeforeMs: 0 })).rejects.toMatchObject({ extensions: { reason: 'not_backfilled' } });
    await expect(finishIndexRotation(deps, CLINIC)).rejects.toMatchObject({ extensions: { reason: 'too_early' } });
    expect((await state()).next).toBe(2);
  });

  it('the resumed backfill finishes under a loop of concurrent lookups, with zero misses', async () => {
    const before = (await state()).lacking;
    const loop = lookupLoop();
    let progress: [number, number] = [0, 0];
    const result = await backfillIndex(deps, CLINIC, {
      batchSize: 3,
      onProgress: (done, total) => void (progress = [done, total]),
      // Every batch waits for lookups to answer in between, so they run at every step of the backfill.
      afterBatch: () => loop.more(8),
    });
    const { lookups, wrong } = await loop.stop();
    expect(wrong).toEqual([]);
    expect(lookups).toBeGreaterThanOrEqual(result.batches * 8);
    expect(result.rows).toBe(before);
    expect(progress).toEqual([before, before]);
    expect((await state()).lacking).toBe(0);
  });

  it('an audit key event per patient backfilled, one audit batch per backfill batch, never a read', async () => {
    const events = await keyEvents('index_backfill:v2');
    const seeded = people().length - 1;
    expect(events).toHaveLength(seeded);
    expect(new Set(events.map((e) => e.patient_id)).size).toBe(seeded);
    // 2 batches of 5 before the kill, then batches of 3.
    expect(new Set(events.map((e) => e.batch_id)).size).toBe(2 + Math.ceil((seeded - 10) / 3));
    expect(events.every((e) => e.actor === 'cli:test' && e.actor_kind === 'system' && e.field === null)).toBe(true);
    expect(await gw.auditRows(`actor = 'cli:test' AND action <> 'key'`)).toEqual([]);
  });

  it('finish, under concurrent lookups and writes: zero misses, uniqueness holds, no digest of version 1 is left', async () => {
    const loop = lookupLoop();
    await loop.more(20);
    await sleep(NOT_BEFORE_MS);
    // The patient with the lowest id is in the first batch: its digests have moved when it is rewritten.
    const first = people().reduce((a, b) => (a.id < b.id ? a : b));
    const other = people().find((p) => p.id !== first.id)!;
    const during: string[] = [];
    const done = await finishIndexRotation(deps, CLINIC, {
      notBeforeMs: NOT_BEFORE_MS,
      batchSize: 10,
      afterBatch: async () => {
        await loop.more(8);
        if (during.length > 0) return;
        const token = await registrar();
        edits++;
        const upd = await gw.gql(token, 'mutation($id: ID!, $i: UpdatePatientInput!) { updatePatient(id: $id, input: $i) { id } }', {
          id: first.id,
          i: { mrn: 'ROT-0100' },
        });
        during.push(upd.body.errors ? `update: ${upd.text}` : 'updated');
        changed.set(first.id, { ...first, mrn: 'ROT-0100' });
        edits++;
        const dup = await createPatient(other.ssn, 'ROT-0101');
        during.push(dup.body.errors?.[0]?.extensions?.code ?? 'created');
      },
    });
    await loop.more(40);
    const { wrong } = await loop.stop();
    expect(wrong).toEqual([]);
    expect(during).toEqual(['updated', 'BAD_USER_INPUT']);
    // Every row once in the batches, and the rewritten one again at the switch.
    expect(done).toEqual({ version: 2, rows: people().length + 1 });
    expect(await state()).toEqual({ clinicId: CLINIC, version: 2, next: null, lacking: 0 });
    expect(await keyEvents('index_rotation_finish:v2')).toHaveLength(1);

    const mrnV1 = await jobKeyring.blindIndexKeyAt('patients.mrn', CLINIC, 1);
    const ssnV1 = await jobKeyring.blindIndexKeyAt('patients.ssn', CLINIC, 1);
    const oldDigests = people().flatMap((p) => [blindIndex(mrnV1, normaliseMrn(p.mrn)), blindIndex(ssnV1, normaliseSsn(p.ssn))]);
    const left = await gw.admin(async (c) =>
      (
        await c.query<{ n: number; next: number }>(
          `SELECT count(*) FILTER (WHERE mrn_bidx = ANY($1) OR ssn_bidx = ANY($1) OR mrn_bidx_next = ANY($1) OR ssn_bidx_next = ANY($1))::int AS n,
                  count(*) FILTER (WHERE mrn_bidx_next IS NOT NULL OR ssn_bidx_next IS NOT NULL)::int AS next
           FROM phigate.patients`,
          [oldDigests],
        )
      ).rows[0]!,
    );
    expect(left).toEqual({ n: 0, next: 0 });
    expect(await misses()).toEqual([]);
    expect(await misses('c-south')).toEqual([]);
  });

  it('after finishing, writes use version 2 only and are found; uniqueness still holds', async () => {
    const r = await createPatient('555-01-0004', 'ROT-0004');
    expect(r.body.errors).toBeUndefined();
    const id = r.body.data!.createPatient.id as string;
    created.push({ id, clinicId: CLINIC, mrn: 'ROT-0004', ssn: '555-01-0004' });
    const row = await digestColumns(id);
    expect(row.mrn_bidx_next).toBeNull();
    const mrnV2 = await jobKeyring.blindIndexKeyAt('patients.mrn', CLINIC, 2);
    expect(row.mrn_bidx.equals(blindIndex(mrnV2, 'ROT-0004'))).toBe(true);
    expect((await createPatient('555-01-0004', 'ROT-0005')).body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await misses()).toEqual([]);
  });

  it('a second rotation (2 -> 3, keys of the clinic itself on both sides) keeps every lookup working', async () => {
    expect(await startIndexRotation(deps, CLINIC)).toMatchObject({ from: 2, to: 3 });
    // An SSN changed mid-rotation is found by its new value, and no longer by the old one.
    const moved = changed.get(created[0]!.id) ?? created[0]!;
    const token = await registrar();
    const upd = await gw.gql(token, 'mutation($id: ID!, $i: UpdatePatientInput!) { updatePatient(id: $id, input: $i) { id } }', {
      id: moved.id,
      i: { ssn: '555-01-0099' },
    });
    expect(upd.body.errors).toBeUndefined();
    changed.set(moved.id, { ...moved, ssn: '555-01-0099' });
    expect(await misses()).toEqual([]);
    await backfillIndex(deps, CLINIC, { batchSize: 50 });
    await sleep(NOT_BEFORE_MS);
    await finishIndexRotation(deps, CLINIC, { notBeforeMs: NOT_BEFORE_MS });
    expect(await misses()).toEqual([]);
    const stale = await replica.gql(await registrar(), BY_SSN, { v: moved.ssn });
    expect(stale.body.data?.patientBySsn).toBeNull();
  });

  it('the seed, which writes version-1 indexes only, refuses a clinic whose index keys were rotated', async () => {
    const more = generateDataset({ patients: 3, seed: 7, firstMrn: 900_000 });
    await expect(gw.admin((c) => writeDataset(c, jobKeyring, more))).rejects.toThrow(/cannot seed clinic c-[a-z]+: its blind-index keys have been rotated/);
  });

  it('the job also runs as a login role of phigate_owner that is not a superuser, which sees the rows only as the job', async () => {
    const role = `bidx_owner_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    await gw.admin((c) => c.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${password}' IN ROLE phigate_owner`));
    const owner = new pg.Client({ connectionString: gw.db.urlAs(role, password) });
    await owner.connect();
    try {
      const asOwner = { ...deps, db: owner };
      expect((await owner.query('SELECT count(*)::int AS n FROM phigate.patients')).rows[0].n).toBe(0);
      expect(await startIndexRotation(asOwner, 'c-south')).toMatchObject({ from: 1, to: 2 });
      const { rows } = await backfillIndex(asOwner, 'c-south', { batchSize: 4 });
      expect(rows).toBe(people('c-south').length);
      expect((await indexRotationStates(owner, ['c-south']))[0]).toMatchObject({ next: 2, lacking: 0 });
      await sleep(NOT_BEFORE_MS);
      await finishIndexRotation(asOwner, 'c-south', { notBeforeMs: NOT_BEFORE_MS });
      expect(await misses('c-south')).toEqual([]);
    } finally {
      await owner.end();
      await gw.admin((c) => c.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`));
    }
  });

  it('a shredded patient (its key gone) gets digests that match nothing, and the rotation completes around it', async () => {
    const gone = people()[3]!;
    const real = deps.cipher;
    const cipher: FieldCipher = {
      ...real,
      decrypt: (scope, aad, ciphertext) => {
        if (aad.rowId === gone.id) throw new PhigateError('KEY_UNAVAILABLE', 'The key of this patient was destroyed.', { reason: 'shredded' });
        return real.decrypt(scope, aad, ciphertext);
      },
    };
    const other = { ...deps, cipher };
    const { to } = await startIndexRotation(other, CLINIC);
    await backfillIndex(other, CLINIC, { batchSize: 10 });
    const mrnNext = await jobKeyring.blindIndexKeyAt('patients.mrn', CLINIC, to);
    const row = await digestColumns(gone.id);
    expect(row.mrn_bidx_next).toBeInstanceOf(Buffer);
    expect(row.mrn_bidx_next.equals(blindIndex(mrnNext, normaliseMrn(gone.mrn)))).toBe(false);
    await sleep(NOT_BEFORE_MS);
    await finishIndexRotation(other, CLINIC, { notBeforeMs: NOT_BEFORE_MS });
    changed.set(gone.id, { ...gone, clinicId: 'shredded' });
    expect(await misses()).toEqual([]);
    const token = await registrar();
    expect((await replica.gql(token, BY_MRN, { v: gone.mrn })).body.data?.patientByMrn).toBeNull();
    expect((await replica.gql(token, BY_SSN, { v: gone.ssn })).body.data?.patientBySsn).toBeNull();
    // Any other failure to decrypt stops the backfill instead.
    await startIndexRotation(deps, CLINIC);
    const unreachable: FieldCipher = {
      ...real,
      decrypt: () => {
        throw new PhigateError('KEY_UNAVAILABLE', 'The key service is unreachable.', { reason: 'kms_error' });
      },
    };
    const broken = { ...deps, cipher: unreachable };
    await expect(backfillIndex(broken, CLINIC)).rejects.toMatchObject({ extensions: { reason: 'kms_error' } });
  });
});
