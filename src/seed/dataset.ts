/**
 * A synthetic data set: no real person's data. Names come from short invented lists, SSNs from
 * the 900-999 area (never issued as a Social Security number), MRNs from a counter.
 */
export interface SeedClinic { readonly id: string; readonly name: string }
export interface SeedStaff { readonly sub: string; readonly roles: readonly string[]; readonly clinics: readonly string[] }
export interface SeedEncounter {
  readonly id: string;
  readonly occurredAt: string;
  readonly kind: string;
  readonly reason: string;
  readonly diagnosisCodes: readonly string[];
  readonly notes: string;
}
export interface SeedPatient {
  readonly id: string;
  readonly clinicId: string;
  readonly mrn: string;
  readonly ssn: string;
  readonly givenName: string;
  readonly familyName: string;
  readonly birthDate: string;
  readonly phone: string;
  readonly email: string;
  readonly address: string;
  readonly careTeam: readonly string[];
  readonly encounters: readonly SeedEncounter[];
}
export interface Dataset {
  readonly clinics: readonly SeedClinic[];
  readonly staff: readonly SeedStaff[];
  readonly patients: readonly SeedPatient[];
}

/** The clinics of every generated data set unless `clinics` says otherwise. */
export const CLINICS: readonly SeedClinic[] = [
  { id: 'c-north', name: 'Northside Family Clinic' },
  { id: 'c-south', name: 'Southbank Health Centre' },
  { id: 'c-east', name: 'Eastgate Medical Practice' },
];
const GIVEN = ['Avery', 'Blake', 'Casey', 'Devon', 'Emery', 'Finley', 'Gray', 'Harper', 'Indigo', 'Jules', 'Kai', 'Lane', 'Marlo', 'Nico', 'Oakley', 'Parker', 'Quinn', 'Reese', 'Sage', 'Tatum'];
const FAMILY = ['Ashdown', 'Brightwater', 'Coldbrook', 'Dunmore', 'Elmstead', 'Fairholt', 'Greywell', 'Hollins', 'Ivesdale', 'Juniper', 'Kestrel', 'Larchmont', 'Marwood', 'Northam', 'Oakhurst', 'Pennycross'];
const STREETS = ['Maple Way', 'Harbour Road', 'Linden Close', 'Quarry Lane', 'Willow Street'];
const KINDS = ['visit', 'telehealth', 'follow_up', 'lab', 'vaccination'];
const REASONS = ['Annual check-up', 'Persistent cough', 'Follow-up on blood pressure', 'Sprained ankle', 'Medication review'];
const CODES = ['E11.9', 'I10', 'J06.9', 'S93.401A', 'Z00.00', 'M54.5'];

/** Small deterministic PRNG (mulberry32) so a seed number reproduces a data set. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HEX = '0123456789abcdef';

/** A version-4-shaped UUID from 33 draws of `rand` (the same draws, in the same order, as ever). */
function uuidFrom(rand: () => number): string {
  let hex = '';
  for (let i = 0; i < 32; i++) hex += HEX[Math.floor(rand() * 16)];
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${'89ab'[Math.floor(rand() * 4)]}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

export function staffFor(clinics: readonly SeedClinic[]): SeedStaff[] {
  const staff: SeedStaff[] = [];
  for (const c of clinics) {
    const short = c.id.replace(/^c-/, '');
    staff.push(
      { sub: `dr-${short}-1`, roles: ['physician'], clinics: [c.id] },
      { sub: `dr-${short}-2`, roles: ['physician'], clinics: [c.id] },
      { sub: `rn-${short}-1`, roles: ['nurse'], clinics: [c.id] },
      { sub: `rn-${short}-2`, roles: ['nurse'], clinics: [c.id] },
      { sub: `reg-${short}`, roles: ['registrar'], clinics: [c.id] },
      { sub: `bill-${short}`, roles: ['billing'], clinics: [c.id] },
      { sub: `admin-${short}`, roles: ['clinic_admin'], clinics: [c.id] },
    );
  }
  staff.push({ sub: 'compliance-1', roles: ['compliance'], clinics: clinics.map((c) => c.id) });
  return staff;
}

export interface DatasetOptions {
  readonly patients: number;
  readonly seed: number;
  readonly firstMrn?: number;
  readonly clinics?: readonly SeedClinic[];
}

export function generateDataset(opts: DatasetOptions): Dataset {
  const clinics = opts.clinics ?? CLINICS;
  return { clinics, staff: staffFor(clinics), patients: [...patientsOf(opts)] };
}

/**
 * A distinct SSN for each patient number below 90 million (a clinic may not hold one SSN twice), in
 * the 900-999 area, which is never issued as a Social Security number. 48271 is coprime with 9e7,
 * so the scrambling is a permutation.
 */
function syntheticSsn(n: number): string {
  const k = (n * 48271) % 90_000_000;
  return `${900 + Math.floor(k / 900_000)}-${10 + (Math.floor(k / 10_000) % 90)}-${String(k % 10_000).padStart(4, '0')}`;
}

/**
 * The patients of `generateDataset(opts)`, one at a time, so a million of them can be written
 * without holding them all: the same seed yields the same patients in the same order.
 */
export function* patientsOf(opts: DatasetOptions): Generator<SeedPatient> {
  const rand = prng(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const clinics = opts.clinics ?? CLINICS;
  for (let i = 0; i < opts.patients; i++) {
    const clinic = clinics[i % clinics.length]!;
    const short = clinic.id.replace(/^c-/, '');
    const n = (opts.firstMrn ?? 1) + i;
    const given = pick(GIVEN);
    const family = pick(FAMILY);
    const year = 1940 + Math.floor(rand() * 80);
    const birthDate = `${year}-${String(1 + Math.floor(rand() * 12)).padStart(2, '0')}-${String(1 + Math.floor(rand() * 28)).padStart(2, '0')}`;
    const encounters: SeedEncounter[] = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => ({
      id: uuidFrom(rand),
      occurredAt: new Date(Date.UTC(2024, Math.floor(rand() * 24), 1 + Math.floor(rand() * 28), 8 + Math.floor(rand() * 9))).toISOString(),
      kind: pick(KINDS),
      reason: pick(REASONS),
      diagnosisCodes: [pick(CODES)],
      notes: `Synthetic note ${i}: patient reports feeling ${pick(['better', 'the same', 'tired', 'well'])}.`,
    }));
    yield {
      id: uuidFrom(rand),
      clinicId: clinic.id,
      mrn: `MRN-${short.toUpperCase()}-${String(n).padStart(7, '0')}`,
      ssn: syntheticSsn(n),
      givenName: given,
      familyName: family,
      birthDate,
      phone: `+1 555 01${String(Math.floor(rand() * 100)).padStart(2, '0')}`,
      email: `${given}.${family}.${n}@example.invalid`.toLowerCase(),
      address: `${1 + Math.floor(rand() * 200)} ${pick(STREETS)}, Testville`,
      careTeam: [`dr-${short}-${1 + (i % 2)}`, `rn-${short}-${1 + (Math.floor(i / 2) % 2)}`],
      encounters,
    };
  }
}
