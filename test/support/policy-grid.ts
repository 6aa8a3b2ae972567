import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { TEST_APP_ROLE } from './global-setup.ts';

/**
 * The grid a row-security rewrite is held to (row-security-035, encounter-row-security): six
 * patients over three clinics, a care team, break-glass grants (live, revoked, expired,
 * cross-clinic) and partner keys (live, revoked, expired, covering one clinic or two), asked from
 * every context of ACTORS x ROLE_SETS x CLINIC_SETS.
 */
export const patients = Array.from({ length: 6 }, () => randomUUID());
export const clinicOf = ['c-a', 'c-a', 'c-a', 'c-b', 'c-b', 'c-c'];
export const keys = { liveA: randomUUID(), liveAB: randomUUID(), revoked: randomUUID(), expired: randomUUID() };

export const ROLE_SETS = [
  [],
  ['physician'],
  ['nurse', 'billing'],
  ['registrar'],
  ['compliance'],
  ['no_such_role'],
  ['partner'],
  ['partner', 'physician'],
  ['compliance', 'physician'],
  ['physician', 'registrar'],
];
export const CLINIC_SETS = [[], ['c-a'], ['c-b'], ['c-a', 'c-b'], ['c-c']];
export const ACTORS = ['dr', 'nobody', '', ...Object.values(keys)];

export interface GridContext {
  readonly actor: string;
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
}

/** The grid's rows, as the owner; with `encounters`, one encounter per patient in its clinic. */
export async function seedPolicyGrid(c: pg.Client, opts: { encounters: boolean }): Promise<void> {
  await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A'), ('c-b', 'B'), ('c-c', 'C')`);
  const p = patients;
  for (const [i, id] of p.entries()) {
    await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, $2, $3, '\\x00')`, [id, clinicOf[i], Buffer.from(`p${i}`)]);
    if (opts.encounters) {
      await c.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, $3, now(), '\\x00')`, [randomUUID(), id, clinicOf[i]]);
    }
  }
  await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr', 'c-a'), ($2, 'dr', 'c-b')`, [p[0], p[3]]);
  const grant = `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at, revoked_at)
                 VALUES ('dr', $1, $2, $3, $4, 'test', 'r', $5, $6, $7)`;
  const hour = (h: number) => new Date(Date.now() + h * 3_600_000);
  await c.query(grant, ['physician', p[1], 'c-a', false, hour(-1), hour(1), null]);
  await c.query(grant, ['physician', p[4], 'c-b', true, hour(-1), hour(1), null]);
  await c.query(grant, ['nurse', p[5], 'c-c', true, hour(-1), hour(1), null]);
  await c.query(grant, ['physician', p[2], 'c-a', false, hour(-1), hour(1), hour(-0.5)]);
  await c.query(grant, ['physician', p[5], 'c-c', true, hour(-3), hour(-2), null]);
  await c.query(`INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES (1, '\\x00', 'local', 'test')`);
  const key = `INSERT INTO phigate.api_keys (id, partner, clinics, fields, purpose, secret_hash, pepper_version, rate_per_minute, burst, created_by, expires_at, revoked_at)
               VALUES ($1, 'lab', $2, '{Patient.mrn}', 'TREAT', $3, 1, 60, 10, 'test', $4, $5)`;
  await c.query(key, [keys.liveA, ['c-a'], Buffer.alloc(32), null, null]);
  await c.query(key, [keys.liveAB, ['c-a', 'c-b'], Buffer.alloc(32), hour(1), null]);
  await c.query(key, [keys.revoked, ['c-a'], Buffer.alloc(32), null, hour(-1)]);
  await c.query(key, [keys.expired, ['c-a'], Buffer.alloc(32), hour(-1), null]);
}

/**
 * What the app role sees of `sql` (one text column `v`) under the context, in `c`'s transaction:
 * one round trip (a grid asks hundreds of times), so the context's values go into the text, quoted.
 */
export async function asApp(c: pg.Client, context: GridContext, sql: string): Promise<string> {
  const set = (name: string, value: string) => `set_config('${name}', ${c.escapeLiteral(value)}, true)`;
  const results = (await c.query(
    `SELECT ${set('phigate.actor', context.actor)}, ${set('phigate.roles', context.roles.join(','))}, ${set('phigate.clinics', context.clinics.join(','))};
     SET LOCAL ROLE ${TEST_APP_ROLE}; ${sql}; RESET ROLE`,
  )) as unknown as pg.QueryResult<{ v: string | null }>[];
  return results[2]!.rows[0]!.v ?? '';
}

/** Every context of the grid and what it sees of `sql`, as `actor|roles|clinics -> v` lines. */
export async function visibleGrid(c: pg.Client, sql: string): Promise<string[]> {
  const out: string[] = [];
  for (const actor of ACTORS) {
    for (const roles of ROLE_SETS) {
      for (const clinics of CLINIC_SETS) {
        out.push(`${actor}|${roles.join(',')}|${clinics.join(',')} -> ${await asApp(c, { actor, roles, clinics }, sql)}`);
      }
    }
  }
  return out;
}
