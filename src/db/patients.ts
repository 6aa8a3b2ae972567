import type { JoinedPatientKey, RowKey } from '../crypto/keys/keyring.ts';
import { PhigateError } from '../errors.ts';
import type { RowFacts } from '../policy/decide.ts';
import { encryptedColumns } from '../policy/phi-fields.ts';
import { asBase64, checkPacked, PackedRows, packPhi, packedColumn, unpackPhi } from './packed-phi.ts';
import { fromPgBase64 } from './pg-base64.ts';
import type { SearchOwner, SearchQuota } from './search-quota.ts';
import type { RequestTransaction } from './transaction.ts';

/**
 * SQL for the patient aggregate. Every statement runs inside the request transaction, so row
 * security has already narrowed what it can see; these functions never filter by clinic or role
 * themselves. They return raw rows: ciphertext stays ciphertext until a field resolver decides.
 */
/** The principal's live break-glass grant on the row's patient, when row security shows the row through one. */
export interface GrantColumns {
  readonly grant_id: string | null;
  readonly grant_role: string | null;
}

/**
 * What deciding on and recording a row's PHI values needs of the row: the policy's facts and the
 * row's identity. Made once per row as it arrives, since a page asks for it with every value.
 */
export interface PhiRowFacts extends RowFacts {
  readonly rowId: string;
  readonly patientId: string;
  /** The patient key the row's values are opened with: brought by the row's statement, resolved once per row. */
  readonly key: RowKey;
}

export interface PatientRow extends GrantColumns {
  readonly facts: PhiRowFacts;
  readonly id: string;
  readonly clinic_id: string;
  readonly on_care_team: boolean;
  readonly mrn: Buffer;
  readonly ssn: Buffer | null;
  readonly given_name: Buffer | null;
  readonly family_name: Buffer | null;
  readonly birth_date: Buffer | null;
  readonly phone: Buffer | null;
  readonly email: Buffer | null;
  readonly address: Buffer | null;
}

export interface EncounterRow extends GrantColumns {
  readonly facts: PhiRowFacts;
  readonly id: string;
  readonly patient_id: string;
  readonly clinic_id: string;
  readonly on_care_team: boolean;
  /**
   * Plaintext, so that encounters can be ordered by time in the database (README, "Visit dates"):
   * PostgreSQL's text of the timestamptz, which is only ever printed (isoOfTimestamptz), so never made a Date;
   * ERASED_TIME once the patient is shredded.
   */
  readonly occurred_at: string;
  // The PHI columns below are absent (undefined, never null) when the read left them out: see
  // encountersByPatientIds.
  readonly kind?: Buffer | null;
  /** The kind of an encounter written before it was encrypted (schema/migrations/010_disclosures.sql); null once sealed. */
  readonly kind_legacy?: string | null;
  readonly reason?: Buffer | null;
  readonly diagnosis_codes?: Buffer | null;
  readonly notes?: Buffer | null;
}

/**
 * What a shredded patient's times in the clear hold (its encounters' dates among them), as
 * PostgreSQL prints it: no writer can give it (dates are taken from 1880 on), so it reads as
 * erased, never as a date; it sorts below every date, so the indexes stay valid (migration 072).
 */
export const ERASED_TIME = '-infinity';

/**
 * Which of a patient's encounters a read takes: the first `first` of them, or when `after` names an
 * encounter (its id), the first `first` after it. `byDate`: newest first, and `after` must be one
 * of the patient's encounters; otherwise by id (random, v4), for a principal some of whose rows
 * deny it the visit dates, since picking the newest, or paging by date, would tell their order.
 * Every statement applies it in SQL (LIMIT), so a patient's history costs no more than the query
 * limits priced (PHIGATE_MAX_ENCOUNTERS).
 */
export interface EncounterWindow {
  readonly first: number;
  readonly after: string | null;
  readonly byDate: boolean;
}

/** Column name of each encrypted GraphQL field, from the PHI catalogue (src/policy/phi-fields.ts). */
export const PATIENT_COLUMNS = encryptedColumns('Patient');
export const ENCOUNTER_COLUMNS = encryptedColumns('Encounter');

/** An encounter's PHI columns a read may fetch or leave out; `kind` brings `kind_legacy` along. */
export type EncounterPhiColumn = (typeof ENCOUNTER_COLUMNS)[keyof typeof ENCOUNTER_COLUMNS];
export const ENCOUNTER_PHI_COLUMNS: readonly EncounterPhiColumn[] = Object.values(ENCOUNTER_COLUMNS);

// A patient row's ciphertexts in the catalogue's order, then its newest wrapped key: the order the
// statements pack them in (unpackPhi, src/db/packed-phi.ts), one value per row, not one per column.
type PatientPhiColumn = (typeof PATIENT_COLUMNS)[keyof typeof PATIENT_COLUMNS];
const PATIENT_PACKED: readonly PatientPhiColumn[] = Object.values(PATIENT_COLUMNS);
/** The ciphertext columns a patient row packs, in their order. */
export const PATIENT_PACKED_COLUMNS: readonly string[] = PATIENT_PACKED;
const AT = Object.fromEntries(PATIENT_PACKED.map((column, i) => [column, i])) as Readonly<Record<PatientPhiColumn, number>>;
const KEY_AT = PATIENT_PACKED.length;

/** What every read's statement returns beside the packed ciphertexts. */
interface FetchedRow extends GrantColumns {
  readonly id: string;
  readonly clinic_id: string;
  readonly on_care_team: boolean;
}

/** A patient row as the statements send it: `phi` packs PATIENT_PACKED, then the newest wrapped key (KEY_JOIN), in base64. */
interface FetchedPatient extends FetchedRow {
  readonly phi: string;
  readonly key_version: number | null;
  readonly key_clinic_version: number | null;
}

/** An encounter row as the statements send it: `phi` packs the read's PHI columns in base64, absent when it reads none. */
interface FetchedEncounter extends FetchedRow {
  readonly patient_id: string;
  readonly occurred_at: string;
  readonly kind_legacy?: string | null;
  readonly phi?: string | null;
}

const joinedKey = (r: FetchedPatient, wrapped: Buffer | null): JoinedPatientKey | null =>
  wrapped !== null && r.key_version !== null && r.key_clinic_version !== null
    ? { version: r.key_version, clinicVersion: r.key_clinic_version, wrapped }
    : null;

const factsOf = (row: FetchedRow, patientId: string, key: RowKey): PhiRowFacts => ({
  clinicId: row.clinic_id,
  onCareTeam: row.on_care_team,
  grant: row.grant_id !== null && row.grant_role !== null ? { id: row.grant_id, role: row.grant_role } : null,
  rowId: row.id,
  patientId,
  key,
});

// A row of our own per row pg made, of one shape with its facts: adding a property to pg's row
// objects, or spreading them, cost several microseconds a row (a WeakMap lookup per value, before).
// Its ciphertexts stay in the one packed value the statement sent, checked once here; each is a
// view made when it is read, which dies with the value's decryption. A page's rows live until its
// audit commit and are promoted to the old generation: nine views made up front were ~860 bytes a
// row held there (bench/README.md, branch pagegc).
class PackedPatientRow implements PatientRow {
  readonly facts: PhiRowFacts;
  readonly id: string;
  readonly clinic_id: string;
  readonly on_care_team: boolean;
  readonly grant_id: string | null;
  readonly grant_role: string | null;
  readonly #phi: Buffer;
  constructor(r: FetchedPatient) {
    const phi = fromPgBase64(r.phi);
    checkPacked(phi, KEY_AT + 1);
    this.#phi = phi;
    this.facts = factsOf(r, r.id, { joined: joinedKey(r, packedColumn(phi, KEY_AT)), held: null });
    this.id = r.id;
    this.clinic_id = r.clinic_id;
    this.on_care_team = r.on_care_team;
    this.grant_id = r.grant_id;
    this.grant_role = r.grant_role;
  }
  get mrn(): Buffer {
    return packedColumn(this.#phi, AT.mrn)!;
  }
  get ssn(): Buffer | null {
    return packedColumn(this.#phi, AT.ssn);
  }
  get given_name(): Buffer | null {
    return packedColumn(this.#phi, AT.given_name);
  }
  get family_name(): Buffer | null {
    return packedColumn(this.#phi, AT.family_name);
  }
  get birth_date(): Buffer | null {
    return packedColumn(this.#phi, AT.birth_date);
  }
  get phone(): Buffer | null {
    return packedColumn(this.#phi, AT.phone);
  }
  get email(): Buffer | null {
    return packedColumn(this.#phi, AT.email);
  }
  get address(): Buffer | null {
    return packedColumn(this.#phi, AT.address);
  }
}
const patientRow = (r: FetchedPatient): PatientRow => new PackedPatientRow(r);

/** Where each of an encounter read's PHI columns is in its packed value; -1 for a column it leaves out. */
interface EncounterPacking {
  readonly count: number;
  readonly kind: number;
  readonly reason: number;
  readonly diagnosis_codes: number;
  readonly notes: number;
}
const packingOf = (columns: readonly EncounterPhiColumn[]): EncounterPacking => ({
  count: columns.length,
  kind: columns.indexOf('kind'),
  reason: columns.indexOf('reason'),
  diagnosis_codes: columns.indexOf('diagnosis_codes'),
  notes: columns.indexOf('notes'),
});
const NO_PHI: readonly (Buffer | null)[] = [];
const column = (phi: readonly (Buffer | null)[], at: number): Buffer | null | undefined => (at < 0 ? undefined : phi[at]);

const encounterRow = (r: FetchedEncounter, key: RowKey, packing: EncounterPacking): EncounterRow => {
  const phi = packing.count === 0 ? NO_PHI : unpackPhi(fromPgBase64(r.phi ?? null), packing.count);
  return {
    facts: factsOf(r, r.patient_id, key),
    id: r.id,
    patient_id: r.patient_id,
    clinic_id: r.clinic_id,
    on_care_team: r.on_care_team,
    grant_id: r.grant_id,
    grant_role: r.grant_role,
    occurred_at: r.occurred_at,
    kind: column(phi, packing.kind),
    kind_legacy: r.kind_legacy,
    reason: column(phi, packing.reason),
    diagnosis_codes: column(phi, packing.diagnosis_codes),
    notes: column(phi, packing.notes),
  };
};
const patientRows = (rows: FetchedPatient[]): PatientRow[] => rows.map(patientRow);
/**
 * A patient's encounters share one RowKey, so its several visits ask the key cache once: the
 * patient row's (`keys`) when the caller has it, which also hands them the wrapped key the
 * patient's statement brought; otherwise one of their own.
 */
function encounterRows(rows: FetchedEncounter[], packing: EncounterPacking, keys: ReadonlyMap<string, RowKey> = new Map()): EncounterRow[] {
  const own = new Map<string, RowKey>();
  return rows.map((r) => {
    let key = keys.get(r.patient_id) ?? own.get(r.patient_id);
    if (key === undefined) own.set(r.patient_id, (key = { joined: null, held: null }));
    return encounterRow(r, key, packing);
  });
}

// The live grant, judged like row security judges it (schema/migrations/034_break_glass_clinic.sql).
// Over a page (`gated`) the probe runs only for a patient the actor holds a live grant on at all,
// one InitPlan per statement, made a one-time filter of the probe: probed for every row, the join
// was a fifth of a registrar's page transaction (bench/README.md, branch pagereq), for principals
// who almost never hold a grant. The set is read before the rows, so it holds every grant still
// live when a row's probe reads the clock; the probe alone decides which grant that is.
const LIVE_GRANT_PATIENTS = `SELECT coalesce(array_agg(lg.patient_id), '{}') FROM phigate.break_glass_grants lg
      WHERE lg.actor = phigate.ctx_actor() AND lg.revoked_at IS NULL AND lg.expires_at > clock_timestamp() AND lg.role = ANY (phigate.ctx_roles())`;
const LIVE_GRANT = (patientId: string, clinicId: string, gated: boolean) => `
  LEFT JOIN LATERAL (
    SELECT g.id AS grant_id, g.role AS grant_role FROM phigate.break_glass_grants g
    WHERE ${gated ? `${patientId} = ANY ((${LIVE_GRANT_PATIENTS})::uuid[]) AND ` : ''}g.patient_id = ${patientId} AND g.clinic_id = ${clinicId}
      AND g.actor = phigate.ctx_actor() AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY (phigate.ctx_roles())
    ORDER BY g.expires_at DESC LIMIT 1) g ON true`;

// The patient's newest key: the one its values are sealed under, but while a re-encryption after a
// rotation has not reached them (src/crypto/keys/keyring.ts, rowReadKey). It saves the keyring a
// statement of its own on another pool when its cache misses (a quarter of reads by id, most of a
// page's patients at 100,000 patients). phigate.patient_keys has no row security: it is joined only
// to rows the request's row security let through, and a wrapped key opens only with its clinic key.
// Encounters are read through their patient's row, whose key they share (encountersByPatientIds):
// joined to each encounter as well, it cost a second index probe per visit for a key already in hand.
const KEY_JOIN = (patientId: string) => `
  LEFT JOIN LATERAL (
    SELECT k.version AS key_version, k.clinic_version AS key_clinic_version, k.wrapped AS key_wrapped FROM phigate.patient_keys k
    WHERE k.patient_id = ${patientId} ORDER BY k.version DESC LIMIT 1) k ON true`;

const PATIENT_STORED = 'p.id, p.clinic_id, p.mrn, p.ssn, p.given_name, p.family_name, p.birth_date, p.phone, p.email, p.address';
// Whether the actor is on the patient's care team. As a plain EXISTS, PostgreSQL makes it a hashed
// subplan: the statement first reads the actor's whole care team into a hash table (a physician's
// 3,334 rows at 20,000 patients, 16,667 at the bench's 100,000), then looks each row up in it.
// A page's patients (`probe`) probe the care team per row instead (OFFSET 0 keeps the EXISTS from
// becoming the hash, as in schema/migrations/043_read_plan.sql), by the patient on care_team_pkey:
// the actor compared under COLLATE "C", byte equality as under the column's own collation, which
// no index on the subject can take as its condition (schema/migrations/065), and only when one
// of the request's roles has a care-team row scope: the only roles the answer matters to
// (rolesForRow, src/policy/decide.ts), so a registrar's page probes nothing. Reads by id keep the
// plain EXISTS.
const onCareTeam = (patientId: string, probe: boolean) =>
  probe
    ? `((SELECT phigate.ctx_has_scope('care_team', NULL))
          AND EXISTS (SELECT 1 FROM phigate.care_team ct WHERE ct.patient_id = ${patientId} AND ct.subject = phigate.ctx_actor() COLLATE "C" OFFSET 0))`
    : `EXISTS (SELECT 1 FROM phigate.care_team ct WHERE ct.patient_id = ${patientId} AND ct.subject = phigate.ctx_actor())`;
// The same answer for rows whose patient is one of `ids`: the actor's care-team rows of those
// patients, read once per statement (one index scan of at most as many rows as ids), and each
// row's patient looked up in them. A page's encounters probed the team once per encounter, ~20 K
// instructions each, a sixth of a physician's page transaction (bench/README.md, branch pagereq).
const onCareTeamOf = (patientId: string, ids: string) =>
  `((SELECT phigate.ctx_has_scope('care_team', NULL))
          AND ${patientId} = ANY ((SELECT coalesce(array_agg(ct.patient_id), '{}') FROM phigate.care_team ct
                                    WHERE ct.subject = phigate.ctx_actor() AND ct.patient_id = ANY (${ids}))::uuid[]))`;

// The row's ciphertexts and wrapped key as one value (PATIENT_PACKED, then KEY_JOIN's).
const PATIENT_PHI = packPhi([...PATIENT_PACKED.map((c) => `p.${c}`), 'k.key_wrapped']);

// on_care_team and the grant decide which of the principal's roles apply to the row (src/policy/decide.ts).
const patientSelect = (from: string, probe: boolean, careTeam = onCareTeam('p.id', probe), more = '') => `
  SELECT p.id, p.clinic_id, ${PATIENT_PHI},
         ${careTeam} AS on_care_team,
         g.grant_id, g.grant_role, k.key_version, k.key_clinic_version${more}
  FROM ${from}${LIVE_GRANT('p.id', 'p.clinic_id', probe)}${KEY_JOIN('p.id')}`;
const PATIENT_SELECT = patientSelect('phigate.patients p', false);

// Over a page (`ids`, the parameter holding its patients' ids), the care team and the grants are
// asked once per statement; read by id (null), each as a probe.
// The chosen PHI columns are packed as a patient's are, in their order (packingOf); `kind` brings
// `kind_legacy`, plaintext, as a column of its own.
const encounterSelect = (columns: readonly EncounterPhiColumn[], ids: string | null, from = 'phigate.encounters e') => `
  SELECT e.id, e.patient_id, e.clinic_id, e.occurred_at::text AS occurred_at,${columns.includes('kind') ? ' e.kind_legacy,' : ''}${
    columns.length === 0 ? '' : ` ${packPhi(columns.map((c) => `e.${c}`))},`
  }
         ${ids === null ? onCareTeam('e.patient_id', false) : onCareTeamOf('e.patient_id', ids)} AS on_care_team,
         g.grant_id, g.grant_role
  FROM ${from}${LIVE_GRANT('e.patient_id', 'e.clinic_id', ids !== null)}`;

/**
 * One patient's encounters in a window (EncounterWindow), newest first, as the FROM and WHERE of a
 * read of `phigate.encounters e`: the patient's id is `patientId` (an expression of the enclosing
 * statement), the window's `first` the parameter `first`, its `after` the parameter `after` (null:
 * from the newest). The cursor's time is read from its row, under the same row security and for the
 * same patient, never from the client: a visit's date is PHI, so no cursor carries it. A cursor that
 * is not one of the patient's encounters shown to the request selects nothing. The time bound is
 * the index condition (encounters_patient: patient_id, occurred_at DESC, id), the id the tie-break.
 */
const encounterWindow = (patientId: string, first: string, after: string | null, byDate: boolean) =>
  !byDate
    ? `phigate.encounters e WHERE e.patient_id = ${patientId}${after === null ? '' : ` AND e.id > ${after}::uuid`} ORDER BY e.id LIMIT ${first}`
    : after === null
      ? `phigate.encounters e WHERE e.patient_id = ${patientId} ORDER BY e.occurred_at DESC, e.id LIMIT ${first}`
      : `phigate.encounters e, (SELECT a.occurred_at AS at, a.id FROM phigate.encounters a WHERE a.id = ${after}::uuid AND a.patient_id = ${patientId}) c
       WHERE e.patient_id = ${patientId} AND e.occurred_at <= c.at AND (e.occurred_at < c.at OR e.id > c.id)
       ORDER BY e.occurred_at DESC, e.id LIMIT ${first}`;
/** The order of encounterWindow's rows, for a statement that orders what it gathered from several patients. */
const windowOrder = (byDate: boolean) => (byDate ? 'e.occurred_at DESC, e.id' : 'e.id');
/** What tells two windows' statement texts apart: whether they have a cursor, and their order. */
const windowShape = (window: EncounterWindow) => `${window.after !== null}:${window.byDate}`;
const ENCOUNTER_SELECT = encounterSelect(ENCOUNTER_PHI_COLUMNS, null);
const ENCOUNTER_PACKING = packingOf(ENCOUNTER_PHI_COLUMNS);

// How a read of one patient finds it: by id, or by a blind index (LIMIT 2: a second row is an ambiguous search).
const ONE_PATIENT_BY = {
  id: 'p.id = $1::uuid',
  mrn_bidx: 'p.mrn_bidx = ANY($1::bytea[]) LIMIT 2',
  ssn_bidx: 'p.ssn_bidx = ANY($1::bytea[]) LIMIT 2',
} as const;
// One id, as a read by id asks: `p.id = $1` is planned as one index probe. The generic plan of
// `p.id = ANY($1)` counts on ten ids, so it builds a bitmap for them, and on PostgreSQL 18 with the
// bench's 2,000 patients it read the request's whole clinic through patients_clinic_id (the
// policy's clinic test) to keep one: ~10% of a read's instructions (bench/README.md, abreq).
const PATIENT_BY_ID = `${PATIENT_SELECT} WHERE ${ONE_PATIENT_BY.id}`;
const PATIENTS_BY_IDS = `${PATIENT_SELECT} WHERE p.id = ANY($1::uuid[])`;
// Built once: a text built per search is a new string, which each map that names or wraps the
// statement (src/db/transaction.ts) hashes again in full, a couple of kilobytes each time.
const SEARCH_BY = {
  mrn_bidx: `${PATIENT_SELECT} WHERE ${ONE_PATIENT_BY.mrn_bidx}`,
  ssn_bidx: `${PATIENT_SELECT} WHERE ${ONE_PATIENT_BY.ssn_bidx}`,
} as const;

export async function patientsByIds(tx: RequestTransaction, ids: readonly string[]): Promise<PatientRow[]> {
  const { rows } = ids.length === 1 ? await tx.query<FetchedPatient>(PATIENT_BY_ID, ids) : await tx.query<FetchedPatient>(PATIENTS_BY_IDS, [ids]);
  return patientRows(rows);
}

// The first page starts after the nil UUID, the least of all, which no patient has (ids are random
// v4 UUIDs): one plain `p.id > $1` serves every page under the transaction's generic plans
// (src/db/transaction.ts), where `$1 IS NULL OR p.id > $1` would scan the index from its start.
const BEFORE_ALL_IDS = '00000000-0000-0000-0000-000000000000';

// A page's candidates, by how far the request reaches into its clinics (ctx_patient_reach,
// schema/migrations/035_read_cpu.sql): with a clinic reach, the first $2 rows past the cursor in
// each of the request's clinics, each clinic walked in id order on patients_clinic_id; with a
// care-team reach, the first $2 patients of the actor's care teams, walked in id order on
// care_team_subject (care_team's own row security keeps them to the request's clinics); and the
// patients an unrevoked grant of the actor names (break_glass_live) that neither branch brought.
// Row security judges every candidate as before, so the page holds the same rows: a row it may
// show either is reached through the request's clinics, and then among the first $2 its branch
// brings whenever it is among the first $2 of all (a clinic reach shows every row of a clinic, a
// care-team reach every team row care_team shows), or is shown through a grant. Walking
// patients_pkey, as `WHERE p.id > $1 ORDER BY p.id` did, fetched and judged every other clinic's
// rows between the page's own; walking a physician's clinics judged every patient off its care
// team (half of them in the bench's data) with a probe of the team each.
// The final sort holds at most $2 rows a clinic, and a token's clinics are bounded
// (PHIGATE_MAX_TOKEN_CLINICS), plus the actor's granted patients.
const PAGE_CANDIDATES = `(
    WITH r AS MATERIALIZED (SELECT phigate.ctx_patient_reach() AS reach)
    SELECT q.*, NULL::boolean AS on_team FROM (SELECT DISTINCT c.clinic_id FROM unnest(phigate.ctx_clinics()) AS c(clinic_id)) c
    CROSS JOIN LATERAL (
      SELECT ${PATIENT_STORED} FROM phigate.patients p
      WHERE p.clinic_id = c.clinic_id AND p.id > $1::uuid ORDER BY p.id LIMIT $2) q
    WHERE (SELECT r.reach FROM r) = 'clinic'
    UNION ALL
    (SELECT ${PATIENT_STORED}, true FROM phigate.care_team ct JOIN phigate.patients p ON p.id = ct.patient_id
     WHERE ct.subject = phigate.ctx_actor() AND ct.patient_id > $1::uuid AND (SELECT r.reach FROM r) = 'care_team'
     ORDER BY ct.patient_id LIMIT $2)
    UNION ALL
    SELECT ${PATIENT_STORED}, NULL FROM phigate.patients p
    WHERE p.id IN (SELECT bg.patient_id FROM phigate.break_glass_grants bg WHERE bg.actor = phigate.ctx_actor() AND bg.revoked_at IS NULL)
      AND p.id > $1::uuid
      AND NOT CASE (SELECT r.reach FROM r)
                WHEN 'clinic' THEN p.clinic_id = ANY (phigate.ctx_clinics())
                WHEN 'care_team' THEN EXISTS (SELECT 1 FROM phigate.care_team ct WHERE ct.patient_id = p.id AND ct.subject = phigate.ctx_actor() COLLATE "C" OFFSET 0)
                ELSE false
              END
  ) p`;
// The same page walked through the request's clinics alone, whatever its reach: each clinic's
// first $2 rows past the cursor that row security shows, and the granted patients outside those
// clinics. It holds the same rows for every principal, since every row row security shows is either
// in one of the request's clinics, and then among its clinic's first $2 whenever it is among the
// first $2 of all, or outside them and shown through a grant (an unrevoked grant of the actor's).
// For a care-team reach it walks and judges every patient of the clinics, which the reach's own
// branch avoids; for a clinic reach (a registrar's, billing's, a partner's page) it leaves out the
// care-team branch, the reach's test and their policies' plan nodes, which a generic plan sets up
// on every execution though none runs: -0.41 M instructions of a registrar's 8.17 M page
// (bench/README.md, branch pgpage). The walk the gateway picks changes the cost, never the rows.
const PAGE_CANDIDATES_BY_CLINIC = `(
    SELECT q.*, NULL::boolean AS on_team FROM (SELECT DISTINCT c.clinic_id FROM unnest(phigate.ctx_clinics()) AS c(clinic_id)) c
    CROSS JOIN LATERAL (
      SELECT ${PATIENT_STORED} FROM phigate.patients p
      WHERE p.clinic_id = c.clinic_id AND p.id > $1::uuid ORDER BY p.id LIMIT $2) q
    UNION ALL
    SELECT ${PATIENT_STORED}, NULL FROM phigate.patients p
    WHERE p.id IN (SELECT bg.patient_id FROM phigate.break_glass_grants bg WHERE bg.actor = phigate.ctx_actor() AND bg.revoked_at IS NULL)
      AND p.id > $1::uuid
      AND NOT p.clinic_id = ANY (phigate.ctx_clinics())
  ) p`;

/**
 * How a page finds its candidates: `reach` by how far the request reaches (PAGE_CANDIDATES), `clinics`
 * through the request's clinics alone (PAGE_CANDIDATES_BY_CLINIC), cheaper where the reach is its
 * clinics. Both give the rows row security shows, in the same order.
 */
export type PageWalk = 'reach' | 'clinics';
const CANDIDATES: Readonly<Record<PageWalk, string>> = { reach: PAGE_CANDIDATES, clinics: PAGE_CANDIDATES_BY_CLINIC };

// A care-team candidate is on the actor's care team: its branch read that row, in the same
// statement, under the same row security. The probe is left to the others' rows.
const pageSelect = (walk: PageWalk, more = '') =>
  `${patientSelect(CANDIDATES[walk], true, `coalesce(p.on_team, ${onCareTeam('p.id', true)})`, more)} ORDER BY p.id LIMIT $2`;
const PATIENT_PAGE: Readonly<Record<PageWalk, string>> = { reach: pageSelect('reach'), clinics: pageSelect('clinics') };

/** Keyset page ordered by id; asks for one extra row to know whether there is a next page. */
export async function patientPage(tx: RequestTransaction, after: string | null, limit: number, walk: PageWalk = 'reach'): Promise<PatientRow[]> {
  return patientRows((await tx.query<FetchedPatient>(PATIENT_PAGE[walk], [after ?? BEFORE_ALL_IDS, limit])).rows);
}

/** A page's rows and, for each, a way to its encounters. */
export interface PatientPageRead {
  readonly rows: PatientRow[];
  /**
   * The encounters of `rows[i]`, newest first, as encountersByPatientIds gives them; throws
   * (INTERNAL, reason `packed_phi_*`) when their value is malformed, for that patient alone.
   */
  encountersOf(i: number): EncounterRow[];
}

/** How a page statement sends each row's encounters (pageEncounters), for one set of PHI columns. */
interface PageEncounters {
  readonly text: string;
  readonly width: number;
  /** Where `kind_legacy` is, -1 when `kind` is not read. */
  readonly legacy: number;
  /** Where each PHI column is among the read's PHI columns, which come last. */
  readonly packing: EncounterPacking;
}

// A page's encounters as one more value of each patient row, read by a subquery of the same
// statement under the same row security (encounters_select), in the order encountersByPatientIds
// reads them: one statement and one round trip for the page instead of two, and PostgreSQL no
// longer parses the page's ids back as a uuid[] parameter (bench/README.md, branch pagesql).
// Each encounter is a row of a two-dimensional bytea array (PackedRows), sent in base64 as a
// patient row's `phi` is (packPhi): its id (uuid_send's 16 bytes), its time as text,
// `kind_legacy` when `kind` is read, then the read's PHI columns. The
// texts by textsend, the bytes a text column sends (convert_to looked its encoding's name up per
// value: 0.16 M instructions a registrar's page on PostgreSQL 18).
// The encounter's clinic, care team and grant are its patient's: 053's key makes an encounter's
// clinic its patient's, and the care team and grants are judged by patient and clinic.
// A read of one patient, by id or by a search, that asks for its encounters takes them the same
// way (patientWithEncounters, searchByBlindIndex).
// The window's parameters follow the statement's own (`params` of them): its `first`, then its `after` when it has one.
const withEncounters = (columns: readonly EncounterPhiColumn[], select: (more: string) => string, params: number, window: EncounterWindow): PageEncounters => {
  const legacy = columns.includes('kind');
  const values = ['uuid_send(e.id)', 'textsend(e.occurred_at::text)', ...(legacy ? ['textsend(e.kind_legacy)'] : []), ...columns.map((c) => `e.${c}`)];
  const more = `,
         ${asBase64(`array_send(ARRAY(SELECT ARRAY[${values.join(', ')}] FROM ${encounterWindow('p.id', `$${params + 1}::int`, window.after !== null ? `$${params + 2}` : null, window.byDate)}))`)} AS encounters`;
  return { text: select(more), width: values.length, legacy: legacy ? 2 : -1, packing: packingOf(columns) };
};
// One statement text per walk (or read by id), set of columns (at most 16) and window shape (a
// cursor or not, by date or by id), so each is prepared once per connection.
const readsWithEncounters = new Map<string, PageEncounters>();
const withEncountersOf = (columns: readonly EncounterPhiColumn[], walk: PageWalk | keyof typeof ONE_PATIENT_BY, window: EncounterWindow): PageEncounters => {
  const chosen = ENCOUNTER_PHI_COLUMNS.filter((c) => columns.includes(c));
  const key = `${walk}:${chosen.join(',')}:${windowShape(window)}`;
  let read = readsWithEncounters.get(key);
  if (read === undefined) {
    const page = walk === 'reach' || walk === 'clinics';
    const select = page ? (more: string) => pageSelect(walk, more) : (more: string) => `${patientSelect('phigate.patients p', false, undefined, more)} WHERE ${ONE_PATIENT_BY[walk]}`;
    readsWithEncounters.set(key, (read = withEncounters(chosen, select, page ? 2 : 1, window)));
  }
  return read;
};
const windowParams = (window: EncounterWindow): unknown[] => (window.after === null ? [window.first] : [window.first, window.after]);

// Read in the packing's order: the id, the time, `kind_legacy` when `kind` is read, then the PHI
// columns (pageEncounters). The id and texts are made straight from the packed value; only the
// ciphertexts are views, as their decryption takes them (PackedRows, src/db/packed-phi.ts).
function pageEncounterRows(patient: PatientRow, packed: Buffer | null, read: PageEncounters): EncounterRow[] {
  const { packing } = read;
  const values = new PackedRows(packed, read.width);
  const rows = new Array<EncounterRow>(values.count);
  for (let r = 0; r < values.count; r++) {
    const id = values.nextUuid();
    const occurredAt = values.nextText();
    if (occurredAt === null) throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'packed_phi_null' });
    const legacy = read.legacy < 0 ? undefined : values.nextText();
    let kind: Buffer | null | undefined;
    let reason: Buffer | null | undefined;
    let diagnosisCodes: Buffer | null | undefined;
    let notes: Buffer | null | undefined;
    for (let i = 0; i < packing.count; i++) {
      const value = values.nextView();
      if (i === packing.kind) kind = value;
      else if (i === packing.reason) reason = value;
      else if (i === packing.diagnosis_codes) diagnosisCodes = value;
      else if (i === packing.notes) notes = value;
    }
    rows[r] = {
      facts: { clinicId: patient.clinic_id, onCareTeam: patient.on_care_team, grant: patient.facts.grant, rowId: id, patientId: patient.id, key: patient.facts.key },
      id,
      patient_id: patient.id,
      clinic_id: patient.clinic_id,
      on_care_team: patient.on_care_team,
      grant_id: patient.grant_id,
      grant_role: patient.grant_role,
      occurred_at: occurredAt,
      kind,
      kind_legacy: legacy,
      reason,
      diagnosis_codes: diagnosisCodes,
      notes,
    };
  }
  return rows;
}

/**
 * patientPage with each row's encounters, `columns` of their PHI columns (as encountersByPatientIds
 * reads them), in the same statement. Each row's encounters are unpacked when asked for, so that
 * a malformed value fails that patient's encounters only.
 */
export async function patientPageWithEncounters(
  tx: RequestTransaction,
  after: string | null,
  limit: number,
  columns: readonly EncounterPhiColumn[],
  window: EncounterWindow,
  walk: PageWalk = 'reach',
): Promise<PatientPageRead> {
  const read = withEncountersOf(columns, walk, window);
  const fetched = (await tx.query<FetchedPatient & { readonly encounters: string | null }>(read.text, [after ?? BEFORE_ALL_IDS, limit, ...windowParams(window)])).rows;
  const rows = patientRows(fetched);
  return { rows, encountersOf: (i) => pageEncounterRows(rows[i]!, fromPgBase64(fetched[i]!.encounters), read) };
}

/**
 * A patient by id (as patientsByIds reads it) with its encounters, `columns` of their PHI columns,
 * in one statement: a read by id that asks for them costs one round trip, not two. No row (it does
 * not exist, or row security hides it) is an empty page.
 */
export async function patientWithEncounters(tx: RequestTransaction, id: string, columns: readonly EncounterPhiColumn[], window: EncounterWindow): Promise<PatientPageRead> {
  const read = withEncountersOf(columns, 'id', window);
  const fetched = (await tx.query<FetchedPatient & { readonly encounters: string | null }>(read.text, [id, ...windowParams(window)])).rows;
  const rows = patientRows(fetched);
  return { rows, encountersOf: (i) => pageEncounterRows(rows[i]!, fromPgBase64(fetched[i]!.encounters), read) };
}

/**
 * What a search found, or that the principal's searches of this minute are used up. `encountersOf`
 * is there when the search read the rows' encounters with them (as patientPageWithEncounters does).
 */
export type SearchResult =
  | { readonly allowed: true; readonly rows: PatientRow[]; readonly encountersOf: PatientPageRead['encountersOf'] | null }
  | { readonly allowed: false; readonly retryAfterSeconds: number };

/**
 * Counts the search against the owner's minute and looks the indexes up, side by side: the count
 * runs on its own connection (reads are read-only), and rows found past the quota are dropped
 * unseen, so a search still costs one round trip of the request's. With `encounters`, the rows'
 * encounters (those of their PHI columns) come in the same statement, as a page's do.
 */
export async function searchByBlindIndex(
  tx: RequestTransaction,
  column: 'mrn_bidx' | 'ssn_bidx',
  indexes: readonly Buffer[],
  quota: SearchQuota,
  owner: SearchOwner,
  perMinute: number,
  encounters: { readonly columns: readonly EncounterPhiColumn[]; readonly window: EncounterWindow } | null = null,
): Promise<SearchResult> {
  const read = encounters === null ? null : withEncountersOf(encounters.columns, column, encounters.window);
  const [allowance, found] = await Promise.all([
    quota.take(owner, perMinute),
    tx.query<FetchedPatient & { readonly encounters?: string | null }>(read === null ? SEARCH_BY[column] : read.text, encounters === null ? [indexes] : [indexes, ...windowParams(encounters.window)]),
  ]);
  if (!allowance.allowed) return allowance;
  const rows = patientRows(found.rows);
  return { allowed: true, rows, encountersOf: read === null ? null : (i) => pageEncounterRows(rows[i]!, fromPgBase64(found.rows[i]!.encounters ?? null), read) };
}

// One statement text per set of columns (at most 16) and whether the window has a cursor, so each is prepared once per connection.
const encountersOfPatients = new Map<string, { readonly text: string; readonly packing: EncounterPacking }>();

/**
 * The patients' encounters with only `columns` of their PHI columns, in the order given by
 * ENCOUNTER_PHI_COLUMNS, each patient's in `window` (at most its `first`, read with LIMIT per
 * patient). A column the request cannot show in any row is worth neither its output in PostgreSQL
 * nor its parsing here: a registrar's page of 100 patients left 600 ciphertexts of clinical fields unread.
 */
export async function encountersByPatientIds(
  tx: RequestTransaction,
  patientIds: readonly string[],
  window: EncounterWindow,
  columns: readonly EncounterPhiColumn[] = ENCOUNTER_PHI_COLUMNS,
  keys?: ReadonlyMap<string, RowKey>,
): Promise<EncounterRow[]> {
  const chosen = ENCOUNTER_PHI_COLUMNS.filter((c) => columns.includes(c));
  const key = `${chosen.join(',')}:${windowShape(window)}`;
  let read = encountersOfPatients.get(key);
  if (read === undefined) {
    const from = `unnest($1::uuid[]) AS q(patient_id)
    CROSS JOIN LATERAL (SELECT e.* FROM ${encounterWindow('q.patient_id', '$2::int', window.after === null ? null : '$3', window.byDate)}) e`;
    read = { text: `${encounterSelect(chosen, '$1::uuid[]', from)} ORDER BY e.patient_id, ${windowOrder(window.byDate)}`, packing: packingOf(chosen) };
    encountersOfPatients.set(key, read);
  }
  return encounterRows((await tx.query<FetchedEncounter>(read.text, [patientIds, ...windowParams(window)])).rows, read.packing, keys);
}

export async function encounterById(tx: RequestTransaction, id: string): Promise<EncounterRow | null> {
  const { rows } = await tx.query<FetchedEncounter>(`${ENCOUNTER_SELECT} WHERE e.id = $1`, [id]);
  return encounterRows(rows, ENCOUNTER_PACKING)[0] ?? null;
}

const INSERTABLE = ['mrn_bidx', 'ssn_bidx', 'mrn_bidx_next', 'ssn_bidx_next', ...Object.values(PATIENT_COLUMNS)];

/**
 * The patient and its first key, in one statement of the request's transaction: a request that
 * fails after it, or a statement that fails on either row, leaves neither. `columns` keys are
 * column names produced by our code (PATIENT_COLUMNS and the blind indexes).
 */
export async function insertPatient(
  tx: RequestTransaction,
  id: string,
  clinicId: string,
  key: { readonly version: number; readonly clinicVersion: number; readonly wrapped: Buffer },
  columns: Readonly<Record<string, Buffer | null>>,
): Promise<void> {
  const names = INSERTABLE.filter((c) => c in columns);
  await tx.query(
    `WITH key AS (INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped) VALUES ($1, $3, $2, $4, $5))
     INSERT INTO phigate.patients (id, clinic_id, ${names.join(', ')}) VALUES ($1, $2, ${names.map((_, i) => `$${i + 6}`).join(', ')})`,
    [id, clinicId, key.version, key.clinicVersion, key.wrapped, ...names.map((n) => columns[n])],
  );
}

/** Updates the given columns (names come from PATIENT_COLUMNS / blind-index names, never from input). */
export async function updatePatientColumns(
  tx: RequestTransaction,
  id: string,
  set: Readonly<Record<string, Buffer | null>>,
): Promise<boolean> {
  const names = INSERTABLE.filter((c) => c in set);
  const assignments = names.map((n, i) => `${n} = $${i + 2}`);
  const res = await tx.query(
    `UPDATE phigate.patients SET ${[...assignments, 'updated_at = now()'].join(', ')} WHERE id = $1`,
    [id, ...names.map((n) => set[n])],
  );
  return res.rowCount === 1;
}

export interface EncounterInsert {
  readonly id: string;
  readonly patientId: string;
  readonly clinicId: string;
  readonly occurredAt: Date;
  readonly kind: Buffer;
  readonly reason: Buffer | null;
  readonly diagnosisCodes: Buffer | null;
  readonly notes: Buffer | null;
}

export async function insertEncounter(tx: RequestTransaction, e: EncounterInsert): Promise<void> {
  await tx.query(
    `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind, reason, diagnosis_codes, notes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [e.id, e.patientId, e.clinicId, e.occurredAt, e.kind, e.reason, e.diagnosisCodes, e.notes],
  );
}

/**
 * Makes the care team exactly `subjects`, touching only the rows that change: a member who stays
 * keeps its row (and its added_at), and is not inserted again, which row security would refuse
 * when that member is the caller (schema/migrations/010_disclosures.sql).
 */
export async function replaceCareTeam(tx: RequestTransaction, patientId: string, clinicId: string, subjects: readonly string[]): Promise<void> {
  await tx.query('DELETE FROM phigate.care_team WHERE patient_id = $1 AND subject <> ALL ($2::text[])', [patientId, subjects]);
  if (subjects.length === 0) return;
  await tx.query(
    `INSERT INTO phigate.care_team (patient_id, subject, clinic_id)
     SELECT $1, s, $2 FROM unnest($3::text[]) AS s
     WHERE NOT EXISTS (SELECT 1 FROM phigate.care_team ct WHERE ct.patient_id = $1 AND ct.subject = s)`,
    [patientId, clinicId, subjects],
  );
}

export async function careTeamOf(tx: RequestTransaction, patientId: string): Promise<string[]> {
  const { rows } = await tx.query<{ subject: string }>('SELECT subject FROM phigate.care_team WHERE patient_id = $1 ORDER BY subject', [patientId]);
  return rows.map((r) => r.subject);
}
