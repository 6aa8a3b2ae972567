import { PHI_FIELDS } from '../src/policy/phi-fields.ts';
import type { Dataset } from '../src/seed/dataset.ts';
import type { BatchActors } from './seed-worker.ts';

export type TargetName = 'phigate' | 'postgraphile' | 'floor';

/** One HTTP request, as autocannon sends it. */
export interface BenchRequest {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string;
}

/** Tokens of the actors a workload plays, and which rows each may see. */
export interface Actors {
  /** Physicians with the ids of the patients on their care team. */
  readonly physicians: { token: string; patientIds: string[] }[];
  /** Registrars with the SSNs of their clinic's patients. */
  readonly registrars: { token: string; ssns: string[] }[];
  /** Partner API keys (one per clinic, every Patient field) with patients of the key's clinic. */
  readonly partners: { key: string; patientIds: string[] }[];
}

export interface Workload {
  /** for --workloads */
  readonly id: string;
  readonly name: string;
  readonly description: string;
  /** A fresh request each call (random actor and row). */
  next(target: TargetName): BenchRequest;
  /** Checks a sample answer, so a run of fast errors is not mistaken for throughput. */
  check(target: TargetName, json: any): string | null;
  /** The targets it means something on; unset, all. */
  readonly only?: readonly TargetName[];
}

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const PHI: readonly string[] = PHI_FIELDS.Patient;
const PATIENT_FIELDS = ['id', 'clinicId', ...PHI].join(' ');
// PostGraphile's amber preset names the primary key rowId (id is its global Node ID).
const PG_FIELDS = PATIENT_FIELDS.replace(/^id /, 'rowId ');

function gql(token: string, query: string, variables: Record<string, unknown>, scheme = 'Bearer'): BenchRequest {
  return {
    method: 'POST',
    path: '/graphql',
    headers: { 'content-type': 'application/json', authorization: `${scheme} ${token}` },
    body: JSON.stringify({ query, variables }),
  };
}
const get = (token: string, path: string): BenchRequest => ({ method: 'GET', path, headers: { authorization: `Bearer ${token}` } });

const Q = {
  phigate: {
    byId: `query PatientById($id: ID!) { patient(id: $id) { ${PATIENT_FIELDS} } }`,
    page: `query PatientPage { patients(first: 100) { edges { node { ${PATIENT_FIELDS} encounters { id occurredAt kind } } } pageInfo { hasNextPage endCursor } } }`,
    bySsn: `query PatientBySsn($ssn: String!) { patientBySsn(ssn: $ssn) { id clinicId mrn ssn givenName familyName } }`,
    update: `mutation UpdatePatient($id: ID!, $phone: String) { updatePatient(id: $id, input: { phone: $phone }) { id phone email } }`,
  },
  postgraphile: {
    byId: `query PatientById($id: UUID!) { patientByRowId(rowId: $id) { ${PG_FIELDS} } }`,
    page: `query PatientPage { allPatients(first: 100) { nodes { ${PG_FIELDS} encountersByPatientId { nodes { rowId occurredAt kind } } } pageInfo { hasNextPage endCursor } } }`,
    bySsn: `query PatientBySsn($ssn: String!) { allPatients(condition: { ssn: $ssn }, first: 1) { nodes { rowId clinicId mrn ssn givenName familyName } } }`,
    update: `mutation UpdatePatient($id: UUID!, $phone: String) { updatePatientByRowId(input: { rowId: $id, patientPatch: { phone: $phone } }) { patient { rowId phone email } } }`,
  },
};

const phone = () => `+1 555 02${String(Math.floor(Math.random() * 100)).padStart(2, '0')}`;

function readById(target: TargetName, a: Actors): BenchRequest {
  const d = pick(a.physicians);
  const id = pick(d.patientIds);
  if (target === 'floor') return get(d.token, `/patient?id=${id}`);
  return gql(d.token, Q[target].byId, { id });
}

function writeOne(target: TargetName, a: Actors): BenchRequest {
  const d = pick(a.physicians);
  const id = pick(d.patientIds);
  const p = phone();
  if (target === 'floor') return { ...get(d.token, `/update-phone?id=${id}&phone=${encodeURIComponent(p)}`), method: 'POST' };
  return gql(d.token, Q[target].update, { id, phone: p });
}

const errorsOf = (json: any): string | null => (json?.errors?.length ? `errors: ${JSON.stringify(json.errors).slice(0, 300)}` : null);

function checkPatient(p: any): string | null {
  if (!p) return 'no patient';
  for (const f of PHI) if (typeof p[f] !== 'string') return `field ${f} missing`;
  return null;
}

export function workloads(a: Actors): Workload[] {
  return [
    {
      id: 'by-id',
      name: 'patient(id)',
      description: 'physician reads one care-team patient: id, clinicId and the 8 PHI fields',
      next: (t) => readById(t, a),
      check: (t, j) => errorsOf(j) ?? checkPatient(t === 'floor' ? j.patient : t === 'phigate' ? j.data?.patient : j.data?.patientByRowId),
    },
    {
      id: 'page',
      name: 'patients(first: 100)',
      description: "registrar pages 100 of the clinic's patients with their encounters (id, date, kind)",
      next: (t) => {
        const r = pick(a.registrars);
        if (t === 'floor') return get(r.token, '/patients?first=100');
        return gql(r.token, Q[t].page, {});
      },
      check: (t, j) => {
        const e = errorsOf(j);
        if (e) return e;
        const nodes: any[] = t === 'floor' ? j.patients : t === 'phigate' ? j.data?.patients?.edges?.map((x: any) => x.node) : j.data?.allPatients?.nodes;
        if (!nodes || nodes.length !== 100) return `expected 100 patients, got ${nodes?.length}`;
        const encs = nodes.map((n) => (t === 'postgraphile' ? n.encountersByPatientId?.nodes : n.encounters));
        if (encs.some((x) => !Array.isArray(x) || x.length === 0)) return 'a patient without encounters';
        return checkPatient(nodes[0]);
      },
    },
    {
      id: 'by-ssn',
      name: 'patientBySsn',
      description: "registrar finds a patient of the clinic by full SSN (phigate: HMAC blind index)",
      next: (t) => {
        const r = pick(a.registrars);
        const ssn = pick(r.ssns);
        if (t === 'floor') return get(r.token, `/by-ssn?ssn=${encodeURIComponent(ssn)}`);
        return gql(r.token, Q[t].bySsn, { ssn });
      },
      check: (t, j) => {
        const e = errorsOf(j);
        if (e) return e;
        const p = t === 'floor' ? j.patient : t === 'phigate' ? j.data?.patientBySsn : j.data?.allPatients?.nodes?.[0];
        return p && typeof p.ssn === 'string' && typeof p.givenName === 'string' ? null : 'no patient';
      },
    },
    {
      id: 'write-mix',
      name: 'write mix 10%',
      description: 'physician: 90% patient(id), 10% updatePatient(phone) on a care-team patient',
      next: (t) => (Math.random() < 0.1 ? writeOne(t, a) : readById(t, a)),
      check: (t, j) => errorsOf(j),
    },
    {
      id: 'by-id-key',
      name: 'patient(id) by API key',
      description: 'partner reads one patient of its key\'s clinic: the query and fields of by-id, authenticated by `ApiKey` instead of a cached JWT',
      only: ['phigate'],
      next: () => {
        const p = pick(a.partners);
        return gql(p.key, Q.phigate.byId, { id: pick(p.patientIds) }, 'ApiKey');
      },
      check: (_t, j) => errorsOf(j) ?? checkPatient(j.data?.patient),
    },
  ];
}

/**
 * What the workloads need from the data set, collected batch by batch while it is seeded (a
 * million patients are never all in memory): each physician's care-team patient ids, each
 * clinic's SSNs.
 */
export class ActorIndex {
  readonly physicians = new Map<string, { clinic: string; ids: string[] }>();
  readonly ssnsByClinic = new Map<string, string[]>();

  addBatch(b: BatchActors): void {
    for (let i = 0; i < b.ids.length; i++) {
      const clinic = b.clinicIds[i]!;
      for (const sub of b.careTeams[i]!) {
        if (!sub.startsWith('dr-')) continue;
        const e = this.physicians.get(sub) ?? { clinic, ids: [] };
        e.ids.push(b.ids[i]!);
        this.physicians.set(sub, e);
      }
      const l = this.ssnsByClinic.get(clinic) ?? [];
      l.push(b.ssns[i]!);
      this.ssnsByClinic.set(clinic, l);
    }
  }

  static of(data: Dataset): ActorIndex {
    const index = new ActorIndex();
    index.addBatch({ ids: data.patients.map((p) => p.id), clinicIds: data.patients.map((p) => p.clinicId), ssns: data.patients.map((p) => p.ssn), careTeams: data.patients.map((p) => p.careTeam) });
    return index;
  }
}

/**
 * Tokens for the physicians (with their care-team patients) and registrars (with their clinic's
 * SSNs). Every SSN that is unique within its clinic is kept, so `patientBySsn` looks up rows
 * spread over the whole table, not the first few thousand inserted.
 */
export function actorsFrom(
  index: ActorIndex,
  token: (sub: string, roles: string[], clinics: string[]) => Promise<string>,
  keyFor: (clinic: string) => Promise<string>,
): Promise<Actors> {
  const byClinic = new Map<string, string[]>();
  for (const { clinic, ids } of index.physicians.values()) byClinic.set(clinic, [...(byClinic.get(clinic) ?? []), ...ids]);
  return (async () => ({
    physicians: await Promise.all([...index.physicians].map(async ([sub, e]) => ({ token: await token(sub, ['physician'], [e.clinic]), patientIds: e.ids }))),
    registrars: await Promise.all(
      [...index.ssnsByClinic].map(async ([clinic, ssns]) => ({
        token: await token(`reg-${clinic.replace(/^c-/, '')}`, ['registrar'], [clinic]),
        // SSNs that are unique within the clinic: the synthetic generator can repeat one.
        ssns: uniques(ssns),
      })),
    ),
    partners: await Promise.all([...byClinic].map(async ([clinic, ids]) => ({ key: await keyFor(clinic), patientIds: ids }))),
  }))();
}

function uniques(xs: readonly string[]): string[] {
  const n = new Map<string, number>();
  for (const x of xs) n.set(x, (n.get(x) ?? 0) + 1);
  return xs.filter((x) => n.get(x) === 1);
}
