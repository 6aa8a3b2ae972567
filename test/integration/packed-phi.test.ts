import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unpackPhi } from '../../src/db/packed-phi.ts';
import { fromPgBase64 } from '../../src/db/pg-base64.ts';
import {
  ENCOUNTER_PHI_COLUMNS,
  PATIENT_COLUMNS,
  encounterById,
  encountersByPatientIds,
  patientPage,
  patientPageWithEncounters,
  patientsByIds,
  searchByBlindIndex,
  type EncounterPhiColumn,
} from '../../src/db/patients.ts';
import { createPool } from '../../src/db/pool.ts';
import { withRequestTransaction, type SecurityContext } from '../../src/db/transaction.ts';
import { GATEWAY_TYPES } from '../../src/db/type-parsers.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../support/db.ts';

// The reads pack a row's ciphertexts as `encode(array_send(ARRAY[...]), 'base64')` (src/db/patients.ts):
// what fromPgBase64 and unpackPhi make of PostgreSQL's own text must be, column for column, what the columns read one
// by one give, through the gateway pools' parsers; for NULL, empty, long and stored (toasted,
// compressed) values alike.
describe('a packed row read from PostgreSQL', () => {
  let db: TestDatabase;
  let c: pg.Client;
  beforeAll(async () => {
    db = await createTestDatabase();
    c = new pg.Client({ connectionString: db.adminUrl, types: GATEWAY_TYPES });
    await c.connect();
  });
  afterAll(async () => {
    await c?.end();
    await db?.drop();
  });

  it("decodes PostgreSQL's base64 of every length around its lines' ends", async () => {
    const { rows } = await c.query<{ n: number; bytes: Buffer; text: string }>(
      "SELECT n, b AS bytes, encode(b, 'base64') AS text FROM (SELECT n, decode(md5(n::text) || repeat(md5((n * 7)::text), n), 'hex') AS b FROM generate_series(0, 130) n) s",
    );
    for (const r of rows) expect(fromPgBase64(r.text)).toEqual(r.bytes);
    expect(rows.some((r) => r.text.endsWith('\n'))).toBe(true);
  });

  it('unpacks to the columns read one by one', async () => {
    const rows: (Buffer | null)[][] = [
      [randomBytes(45), null, Buffer.alloc(0), randomBytes(70)],
      [null, null, null, null],
      [randomBytes(20_000), Buffer.alloc(9000, 7), randomBytes(1), Buffer.from([0, 0x5c, 0x78, 0xff])],
    ];
    await c.query('CREATE TEMP TABLE t (n int, a bytea, b bytea, c bytea, d bytea)');
    for (const [n, row] of rows.entries()) await c.query('INSERT INTO t VALUES ($1, $2, $3, $4, $5)', [n, ...row]);
    const { rows: read } = await c.query<{ a: Buffer | null; b: Buffer | null; c: Buffer | null; d: Buffer | null; phi: string }>(
      "SELECT a, b, c, d, encode(array_send(ARRAY[a, b, c, d]), 'base64') AS phi FROM t ORDER BY n",
    );
    expect(read).toHaveLength(rows.length);
    for (const [n, r] of read.entries()) {
      expect(unpackPhi(fromPgBase64(r.phi), 4)).toEqual([r.a, r.b, r.c, r.d]);
      expect([r.a, r.b, r.c, r.d]).toEqual(rows[n]);
    }
  });
});

// Every read of src/db/patients.ts packs its ciphertexts: each must still give, column for column,
// the bytes the table holds (NULLs as null, a column the read leaves out as undefined), and the
// newest wrapped key.
describe('the reads of src/db/patients.ts', () => {
  let db: TestDatabase;
  const ids = [randomUUID(), randomUUID(), randomUUID()];
  const PATIENT_PHI = Object.values(PATIENT_COLUMNS);
  const physician: SecurityContext = { actor: 'dr', actorKind: 'user', roles: ['physician'], clinics: ['c-a'], requestId: randomUUID(), purpose: 'test' };
  const random = () => randomBytes(20 + Math.floor(Math.random() * 60));
  beforeAll(async () => {
    db = await createTestDatabase();
    await withClient(db.adminUrl, async (c) => {
      await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A')`);
      for (const [n, id] of ids.entries()) {
        // The second patient has only its MRN; the third an empty SSN.
        const values = PATIENT_PHI.map((column) => (column === 'mrn' ? random() : n === 1 ? null : n === 2 && column === 'ssn' ? Buffer.alloc(0) : random()));
        await c.query(
          `INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, ssn_bidx, ${PATIENT_PHI.join(', ')}) VALUES ($1, 'c-a', $2, $3, ${PATIENT_PHI.map((_, i) => `$${i + 4}`).join(', ')})`,
          [id, Buffer.from(`mrn-${n}`), Buffer.from(`ssn-${n}`), ...values],
        );
        await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr', 'c-a')`, [id]);
        for (const [k, kind] of [random(), null].entries()) {
          const clinical = ENCOUNTER_PHI_COLUMNS.filter((col) => col !== 'kind').map(() => (k === 0 && n !== 1 ? random() : null));
          await c.query(
            `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind, kind_legacy, reason, diagnosis_codes, notes)
             VALUES ($1, $2, 'c-a', now() - make_interval(days => $3), $4, $5, $6, $7, $8)`,
            [randomUUID(), id, k + 1, kind, kind === null ? 'checkup' : null, ...clinical],
          );
        }
      }
      // The first patient's key was rotated; the third has none.
      await c.query(`INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped) VALUES ($1, 1, 'c-a', 1, $3), ($1, 2, 'c-a', 1, $4), ($2, 1, 'c-a', 1, $5)`, [
        ids[0],
        ids[1],
        random(),
        random(),
        random(),
      ]);
    });
  });
  afterAll(async () => {
    await db?.drop();
  });

  const stored = () =>
    withClient(db.adminUrl, async (c) => ({
      patients: new Map(
        (await c.query<Record<string, unknown>>(`SELECT p.*, (SELECT k.wrapped FROM phigate.patient_keys k WHERE k.patient_id = p.id ORDER BY k.version DESC LIMIT 1) AS newest_key FROM phigate.patients p`)).rows.map(
          (r) => [r.id as string, r],
        ),
      ),
      encounters: (await c.query<Record<string, unknown>>('SELECT * FROM phigate.encounters')).rows,
    }));

  it('give every patient column and the newest key, by page, by ids, by one id and by blind index', async () => {
    const { patients } = await stored();
    const pool = createPool(db.appUrl, { max: 1 });
    try {
      const reads = await withRequestTransaction(
        pool,
        physician,
        async (tx) => {
          const quota = { take: async () => ({ allowed: true as const }) };
          const found = await searchByBlindIndex(tx, 'ssn_bidx', [Buffer.from('ssn-2')], quota, { kind: 'user', subject: 'dr' }, 30);
          return [await patientPage(tx, null, 10), await patientsByIds(tx, ids), await patientsByIds(tx, [ids[1]!]), found.allowed ? found.rows : []];
        },
        { preparedStatements: preparedStatements() },
      );
      expect(reads.map((rows) => rows.length)).toEqual([3, 3, 1, 1]);
      for (const row of reads.flat()) {
        const table = patients.get(row.id)!;
        for (const column of PATIENT_PHI) expect(row[column as keyof typeof row], column).toEqual(table[column]);
        expect(row.facts.key.joined?.wrapped ?? null).toEqual(table.newest_key);
      }
      expect(reads[3]![0]!.ssn).toEqual(Buffer.alloc(0));
      expect(reads[2]![0]!.ssn).toBeNull();
    } finally {
      await pool.end();
    }
  });

  it('give the encounter columns read, for every subset, by patients and by id', async () => {
    const { encounters } = await stored();
    const pool = createPool(db.appUrl, { max: 1 });
    const subsets = Array.from({ length: 16 }, (_, mask) => ENCOUNTER_PHI_COLUMNS.filter((_, i) => mask & (1 << i)));
    try {
      await withRequestTransaction(
        pool,
        physician,
        async (tx) => {
          for (const columns of subsets) {
            const rows = await encountersByPatientIds(tx, ids, { first: 10, after: null, byDate: true }, columns);
            expect(rows).toHaveLength(encounters.length);
            for (const row of rows) {
              const table = encounters.find((e) => e.id === row.id)!;
              for (const column of ENCOUNTER_PHI_COLUMNS) {
                expect(row[column], `${column} of [${columns.join(', ')}]`).toEqual(columns.includes(column as EncounterPhiColumn) ? table[column] : undefined);
              }
              expect(row.kind_legacy).toEqual(columns.includes('kind') ? table.kind_legacy : undefined);
            }
          }
          // A page's encounters, read in the page's statement: every subset gives each patient the
          // rows, in the order, with the columns and facts the statement by patients gives.
          for (const columns of subsets) {
            const page = await patientPageWithEncounters(tx, null, 10, columns, { first: 10, after: null, byDate: true });
            const keys = new Map(page.rows.map((r) => [r.id, r.facts.key]));
            const byPatients = await encountersByPatientIds(tx, ids, { first: 10, after: null, byDate: true }, columns, keys);
            expect(page.rows).toHaveLength(ids.length);
            page.rows.forEach((patient, i) => {
              const own = byPatients.filter((e) => e.patient_id === patient.id);
              expect(own).toHaveLength(2);
              const read = page.encountersOf(i);
              // Strict: a column left out is undefined in both, never null.
              expect(read, `encounters of [${columns.join(', ')}]`).toStrictEqual(own);
            });
          }
          for (const table of encounters) {
            const row = await encounterById(tx, table.id as string);
            for (const column of [...ENCOUNTER_PHI_COLUMNS, 'kind_legacy'] as const) expect(row?.[column], column).toEqual(table[column]);
          }
        },
        { preparedStatements: preparedStatements() },
      );
    } finally {
      await pool.end();
    }
  });
});
