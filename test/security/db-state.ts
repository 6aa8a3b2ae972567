import { expect } from 'vitest';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import type { GqlResponse, TestGateway } from '../support/gateway.ts';

/**
 * Database state for attack tests: row counts, and a digest of every stored byte of patients,
 * encounters and care teams, leaving out the rows of the patients a case is allowed to change.
 * Two equal states mean nothing else was written (and no table was dropped).
 */
export async function dbState(gw: TestGateway, exceptPatients: readonly string[] = []): Promise<Record<string, string>> {
  return gw.admin(async (c) => {
    const { rows } = await c.query(
      `SELECT (SELECT count(*) FROM phigate.patients)::text AS patients,
              (SELECT count(*) FROM phigate.encounters)::text AS encounters,
              (SELECT count(*) FROM phigate.care_team)::text AS care_team,
              (SELECT count(*) FROM phigate.clinics)::text AS clinics,
              (SELECT string_agg(k.purpose || ':' || k.scope || ':' || k.version, ',' ORDER BY k.purpose, k.scope, k.version) FROM phigate.keyring k) AS keyring,
              (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM phigate.patients t WHERE NOT (t.id = ANY($1::uuid[]))) AS patients_digest,
              (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM phigate.encounters t WHERE NOT (t.patient_id = ANY($1::uuid[]))) AS encounters_digest,
              (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.patient_id, t.subject), '')) FROM phigate.care_team t WHERE NOT (t.patient_id = ANY($1::uuid[]))) AS care_team_digest`,
      [exceptPatients],
    );
    return rows[0] as Record<string, string>;
  });
}

/** Counts only (for cases that are allowed to add a row): patients, encounters, care_team. */
export const counts = async (gw: TestGateway): Promise<{ patients: number; encounters: number; care_team: number }> => {
  const s = await dbState(gw);
  return { patients: Number(s.patients), encounters: Number(s.encounters), care_team: Number(s.care_team) };
};

export const careTeamOf = async (gw: TestGateway, patientId: string): Promise<string[]> =>
  (await gw.admin((c) => c.query<{ subject: string }>('SELECT subject FROM phigate.care_team WHERE patient_id = $1 ORDER BY subject', [patientId]))).rows.map(
    (r) => r.subject,
  );

export const storedPatient = async (gw: TestGateway, id: string): Promise<Record<string, any> | undefined> =>
  (await gw.admin((c) => c.query('SELECT * FROM phigate.patients WHERE id = $1', [id]))).rows[0];

/** Sends, and gives the gateway's X-Request-Id of the answer so the request's audit rows can be found. */
export async function sendTracked(
  gw: TestGateway,
  token: string,
  query: string,
  variables?: Record<string, unknown>,
): Promise<GqlResponse & { requestId: string }> {
  const response = await gw.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry (a client's X-Request-Id never replaces it).
  return { ...response, requestId: response.headers.get('x-request-id') ?? '' };
}

/** Strings that identify one seeded patient and no other: id, MRN, SSN (both forms), email, encounter ids and notes. */
export function identifyingValues(p: SeedPatient): string[] {
  return [p.id, p.mrn, p.ssn, p.ssn.replace(/-/g, ''), p.email, ...p.encounters.flatMap((e) => [e.id, e.notes])];
}

/** None of the identifying values of `patients` is anywhere in the raw text. */
export function expectNoneOf(text: string, patients: readonly SeedPatient[]): void {
  for (const p of patients) for (const v of identifyingValues(p)) expect(text, `leaks a value of patient ${p.id}`).not.toContain(v);
}

/**
 * The raw body carries no SQL, no PostgreSQL error and no stack. `allowed` (a value the case sent
 * and may legitimately get back, such as a stored hostile name) is cut out before looking.
 */
export function expectNoSqlOrStack(text: string, allowed: readonly string[] = []): void {
  let t = text;
  // Longest first: a short value (`_`) must not cut into a longer one before that is removed.
  for (const a of [...allowed].sort((x, y) => y.length - x.length)) {
    if (a.length === 0) continue;
    const encoded = JSON.stringify(a).slice(1, -1);
    t = t.split(encoded).join('');
  }
  expect(t).not.toMatch(/\bSELECT\b|\bINSERT\b|\bUPDATE phigate|\bDROP\b|phigate\.\w+|SQLSTATE|violates|syntax error|invalid byte sequence|unterminated/i);
  expect(t).not.toMatch(/\n\s+at |\bat [\w.<>]+ \(|\.ts:\d+|node_modules|"stack"/);
}
