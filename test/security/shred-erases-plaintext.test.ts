import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHREDDED_VALUE } from '../../src/crypto/envelope.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import type { KeyAdmin } from '../../src/records/key-admin.ts';
import { SHRED_TABLES } from '../../src/records/shred-columns.ts';
import { shredPatient } from '../../src/records/shred-patient.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// A shredded patient leaves nothing of its own readable: not in the sealed columns (the shredded
// marker), and not in the columns the database holds in the clear, where destroying a key erases
// nothing: an encounter's date (PHI, README "Visit dates and kinds"), and the times rows were
// written. An outside tester found the visit dates left and still served (pentest probe
// shred-dates); the first test is theirs, kept as they wrote it.

let gw: TestGateway;
let adminPool: Pool;
let admin: KeyAdmin;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
  adminPool = createPool(gw.db.adminUrl, { max: 2 });
  admin = { pool: adminPool, actor: 'cli:shred-test' };
});
afterAll(async () => {
  await adminPool?.end();
  await gw?.close();
});

const used = new Set<string>();
/** A patient of `clinic` with a care team and encounters no other test has shredded. */
function freshPatient(clinic?: string): SeedPatient {
  const p = gw.data.patients.find((x) => !used.has(x.id) && x.careTeam.length > 0 && x.encounters.length > 0 && (clinic === undefined || x.clinicId === clinic))!;
  used.add(p.id);
  return p;
}
const physicianOf = (p: SeedPatient) => p.careTeam.find((s) => gw.staff(s).roles.includes('physician')) ?? p.careTeam[0]!;

it('a shredded patient has no visit date left to show', async () => {
  const patient = freshPatient();
  const physician = physicianOf(patient);
  const query = `query($id: ID!) { patient(id: $id) { birthDate encounters { occurredAt } } }`;
  const before = await gw.gql(await gw.tokenFor(physician), query, { id: patient.id });
  const dates = (before.body.data?.patient?.encounters ?? []).map((e: { occurredAt: string | null }) => e.occurredAt);
  expect(dates.length).toBeGreaterThan(0);

  expect(await shredPatient(admin, patient.id)).toBe('shredded');
  const after = await gw.gql(await gw.tokenFor(physician), query, { id: patient.id });
  // The sealed birth date is gone ...
  expect(after.body.data?.patient?.birthDate ?? null).toBeNull();
  // ... and so must the visit dates be.
  const left = (after.body.data?.patient?.encounters ?? []).map((e: { occurredAt: string | null }) => e.occurredAt).filter((d: string | null) => d !== null);
  expect(left).toEqual([]);
});

describe('a shredded encounter date', () => {
  it('answers KEY_UNAVAILABLE `shredded` as the sealed fields do, each refusal audited, by id and in a page', async () => {
    const p = freshPatient('c-east');
    const token = await gw.tokenFor(physicianOf(p));
    expect(await shredPatient(admin, p.id)).toBe('shredded');

    const byId = await gw.gql(token, `query($id: ID!) { patient(id: $id) { id encounters { id occurredAt kind } } }`, { id: p.id });
    expect(byId.status).toBe(200);
    const encounters = byId.body.data!.patient.encounters as { id: string; occurredAt: string | null; kind: string | null }[];
    expect(encounters.map((e) => e.id).sort()).toEqual(p.encounters.map((e) => e.id).sort());
    expect(encounters.every((e) => e.occurredAt === null && e.kind === null)).toBe(true);
    const dateErrors = byId.body.errors!.filter((e) => e.path?.at(-1) === 'occurredAt');
    expect(dateErrors).toHaveLength(p.encounters.length);
    expect(dateErrors.every((e) => e.extensions?.code === 'KEY_UNAVAILABLE' && e.extensions?.reason === 'shredded')).toBe(true);
    for (const e of p.encounters) expect(byId.text).not.toContain(e.occurredAt.slice(0, 10));
    const refused = await gw.auditRows(`request_id = $1 AND field = 'occurredAt'`, [byId.headers.get('x-request-id')]);
    expect(refused.map((e) => [e.action, e.detail, e.patient_id])).toEqual(p.encounters.map(() => ['refused', 'key_unavailable:shredded', p.id]));
    expect(refused.map((e) => e.record_id).sort()).toEqual(p.encounters.map((e) => e.id).sort());

    // A page packs its encounters in another statement: the same answer there.
    const page = await gw.gql(await gw.tokenFor('reg-east'), `{ patients(first: 50) { edges { node { id encounters { occurredAt } } } } }`);
    const nodes = page.body.data!.patients.edges.map((e: any) => e.node) as { id: string; encounters: { occurredAt: string | null }[] }[];
    const shredded = nodes.find((n) => n.id === p.id)!;
    expect(shredded.encounters.map((e) => e.occurredAt)).toEqual(p.encounters.map(() => null));
    // Its neighbours keep their dates.
    const others = nodes.filter((n) => n.id !== p.id && !used.has(n.id)).flatMap((n) => n.encounters);
    expect(others.length).toBeGreaterThan(0);
    expect(others.every((e) => typeof e.occurredAt === 'string')).toBe(true);
    const pageRefusals = page.body.errors!.filter((e) => e.path?.at(-1) === 'occurredAt' && e.path?.[2] === nodes.indexOf(shredded));
    expect(pageRefusals.map((e) => e.extensions?.reason)).toEqual(p.encounters.map(() => 'shredded'));
  });

  it('is still denied before anything else to a role that may not see dates', async () => {
    const p = freshPatient('c-east');
    expect(await shredPatient(admin, p.id)).toBe('shredded');
    const r = await gw.gql(await gw.tokenFor('admin-east'), `query($id: ID!) { patient(id: $id) { encounters { occurredAt } } }`, { id: p.id });
    const codes = r.body.errors!.filter((e) => e.path?.at(-1) === 'occurredAt').map((e) => e.extensions?.code);
    expect(codes).toEqual(p.encounters.map(() => 'FIELD_DENIED'));
    const events = await gw.auditRows(`request_id = $1 AND field = 'occurredAt'`, [r.headers.get('x-request-id')]);
    expect(events.map((e) => e.action)).toEqual(p.encounters.map(() => 'denied'));
  });
});

/** Every row of the non-audit tables of SHRED_TABLES that names `patientId`, as the superuser sees it. */
async function rowsOf(patientId: string): Promise<Record<string, Record<string, unknown>[]>> {
  const out: Record<string, Record<string, unknown>[]> = {};
  await gw.admin(async (c) => {
    for (const [table, t] of Object.entries(SHRED_TABLES)) {
      if (Object.values(t.columns).every((col) => col.fate === 'kept')) continue;
      const select = Object.keys(t.columns).map((col) => `${col}::text AS ${col}`).join(', ');
      out[table] = (await c.query(`SELECT ${select} FROM phigate.${table} WHERE ${t.patientColumn} = $1 ORDER BY 1, 2`, [patientId])).rows;
    }
  });
  return out;
}

const MARKER = `\\x${SHREDDED_VALUE.toString('hex')}`;

describe('in the database', () => {
  it('every table naming a patient, and every column of it, says what a shred does to it', async () => {
    const listed = await gw.admin(async (c) =>
      (
        await c.query<{ table_name: string; columns: string[] }>(
          `SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.column_name) AS columns
             FROM information_schema.columns c JOIN pg_tables t ON t.schemaname = c.table_schema AND t.tablename = c.table_name
            WHERE c.table_schema = 'phigate'
              AND (c.table_name = 'patients' OR c.table_name IN (SELECT table_name FROM information_schema.columns
                     WHERE table_schema = 'phigate' AND column_name IN ('patient_id', 'patient_ids')))
            GROUP BY 1 ORDER BY 1`,
        )
      ).rows,
    );
    expect(Object.fromEntries(listed.map((r) => [r.table_name, r.columns]))).toEqual(
      Object.fromEntries(
        Object.entries(SHRED_TABLES)
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([table, t]) => [table, Object.keys(t.columns).sort()]),
      ),
    );
  });

  it('after a shred, no column of the patient\'s rows holds what it held but those kept, and nothing of its dates is left', async () => {
    const p = freshPatient('c-east');
    // A legacy break-glass grant (plaintext reason, before 066) and a sealed one: both the patient's.
    await gw.admin((c) =>
      c.query(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, reason, request_id, granted_at, expires_at)
         VALUES ('dr-legacy', 'physician', $1, false, 'Legacy reason: collapsed', 'legacy', now() - interval '2 hours', now() - interval '1 hour')`,
        [p.id],
      ),
    );
    const stranger = gw.data.staff.find((s) => s.roles.includes('physician') && s.clinics.includes('c-east') && !p.careTeam.includes(s.sub))!;
    const opened = await gw.gql(await gw.tokenFor(stranger.sub), `mutation($id: ID!) { breakGlass(patientId: $id, reason: "Unconscious in the ER") { id } }`, { id: p.id });
    expect(opened.body.errors, opened.text).toBeUndefined();
    const before = await rowsOf(p.id);
    expect(before.break_glass_grants).toHaveLength(2);

    expect(await shredPatient(admin, p.id)).toBe('shredded');
    const after = await rowsOf(p.id);

    for (const [table, t] of Object.entries(SHRED_TABLES)) {
      const rows = after[table];
      if (rows === undefined) continue;
      // patient_keys gains its tombstone; every other table keeps its rows, in the same order.
      expect(rows.length, table).toBe(table === 'patient_keys' ? before[table]!.length + 1 : before[table]!.length);
      rows.forEach((row, i) => {
        const was = before[table]![i];
        for (const [name, { fate }] of Object.entries(t.columns)) {
          const value = row[name];
          const where = `${table}.${name}`;
          if (fate === 'kept') {
            if (was !== undefined && name !== 'shredded_at') expect(value, where).toEqual(was[name]);
          } else if (fate === 'erased') expect(value, where).toBe('-infinity');
          else if (fate === 'sealed') expect([MARKER, null], where).toContain(value);
          else if (fate === 'emptied' || fate === 'destroyed') expect(value, where).toBeNull();
          else expect(value === null || value !== was?.[name], where).toBe(true);
        }
      });
    }
    const text = JSON.stringify(after);
    for (const e of p.encounters) expect(text).not.toContain(e.occurredAt.slice(0, 10));
    expect(text).not.toContain('collapsed');
  });

  it('the key role may erase a time in the clear, never write one, and erase it only once the patient\'s keys are destroyed', async () => {
    const p = freshPatient('c-east');
    const asKeys = async (...sql: string[]) =>
      gw.admin(async (c) => {
        await c.query('BEGIN');
        try {
          await c.query('SET LOCAL ROLE phigate_keys');
          let last;
          for (const statement of sql) last = await c.query(statement, [p.id]);
          return last!;
        } finally {
          await c.query('ROLLBACK');
        }
      });
    await expect(asKeys(`UPDATE phigate.encounters SET occurred_at = '2020-01-01T00:00:00Z' WHERE patient_id = $1`)).rejects.toMatchObject({ code: '42501' });
    await expect(asKeys(`UPDATE phigate.care_team SET added_at = now() WHERE patient_id = $1`)).rejects.toMatchObject({ code: '42501' });
    await expect(asKeys(`UPDATE phigate.patients SET updated_at = now() WHERE id = $1`)).rejects.toMatchObject({ code: '42501' });
    // A live patient's visit dates: erasing them is no shred (075).
    for (const erase of [
      `UPDATE phigate.encounters SET occurred_at = '-infinity' WHERE patient_id = $1`,
      `UPDATE phigate.encounters SET created_at = '-infinity' WHERE patient_id = $1`,
      `UPDATE phigate.patients SET updated_at = '-infinity' WHERE id = $1`,
      `UPDATE phigate.care_team SET added_at = '-infinity' WHERE patient_id = $1`,
      `UPDATE phigate.patient_keys SET created_at = '-infinity' WHERE patient_id = $1`,
    ]) {
      await expect(asKeys(erase), erase).rejects.toMatchObject({ code: '42501' });
    }
    const destroyKeys = `UPDATE phigate.patient_keys SET wrapped = NULL, shredded_at = now() WHERE patient_id = $1`;
    const erased = await asKeys(destroyKeys, `UPDATE phigate.encounters SET occurred_at = '-infinity' WHERE patient_id = $1`);
    expect(erased.rowCount).toBe(p.encounters.length);
  });

  it('migration 072 erases the times of patients shredded before it', async () => {
    const p = freshPatient('c-east');
    expect(await shredPatient(admin, p.id)).toBe('shredded');
    // As a shred before 072 left them.
    await gw.admin(async (c) => {
      for (const e of p.encounters) await c.query(`UPDATE phigate.encounters SET occurred_at = $2, created_at = now() WHERE id = $1`, [e.id, e.occurredAt]);
      await c.query(`UPDATE phigate.patients SET created_at = now(), updated_at = now() WHERE id = $1`, [p.id]);
      await c.query(`UPDATE phigate.care_team SET added_at = now() WHERE patient_id = $1`, [p.id]);
      await c.query(`UPDATE phigate.patient_keys SET created_at = now() WHERE patient_id = $1`, [p.id]);
    });
    const migration = await readFile(new URL('../../schema/migrations/072_shred_plaintext_times.sql', import.meta.url), 'utf8');
    const backfill = migration.slice(migration.indexOf('-- Patients shredded before this migration'));
    await gw.admin(async (c) => {
      await c.query('BEGIN');
      await c.query(backfill);
      await c.query('COMMIT');
    });
    const after = await rowsOf(p.id);
    const times = [
      ...after.encounters!.flatMap((r) => [r.occurred_at, r.created_at]),
      ...after.patients!.flatMap((r) => [r.created_at, r.updated_at]),
      ...after.care_team!.map((r) => r.added_at),
      ...after.patient_keys!.map((r) => r.created_at),
    ];
    expect(new Set(times)).toEqual(new Set(['-infinity']));
  });
});
