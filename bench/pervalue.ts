/**
 * The page's per-value path in-process (README, "The page's per-value decryption path"): a
 * registrar's `patients(first: 100)` as its resolvers see it, 100 patients x 8 PHI fields and
 * 200 encounters x date and kind, through the real keyring (patient keys), field cipher, policy,
 * PHI budget and audit buffer, from the text pg receives (hex bytea, timestamptz) to the values a
 * page returns. No HTTP, no SQL, no GraphQL execution.
 *
 *   node --max-semi-space-size=128 --expose-gc --import tsx bench/pervalue.ts ROOT [rounds] [pages]
 *
 * ROOT is the tree whose src/ is measured (this one or a copy of the base), so base and head run
 * the same harness in turns. Prints CPU us per page (process.cpuUsage) per round and the heap
 * bytes allocated per page (used heap before and after a window of pages with no GC in it).
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';

const root = process.argv[2] ?? '.';
const rounds = Number(process.argv[3] ?? 20);
const pagesPerRound = Number(process.argv[4] ?? 50);
const at = (path: string) => new URL(path, `file://${root.endsWith('/') ? root : `${root}/`}`).href;

const { createAuditBuffer } = await import(at('src/audit/buffer.ts'));
const { createFieldCipher } = await import(at('src/crypto/field-cipher.ts'));
const { createKeyring } = await import(at('src/crypto/keys/keyring.ts'));
const { createLocalKeyProvider } = await import(at('src/crypto/keys/local.ts'));
const { loadPolicy } = await import(at('src/policy/load.ts'));
const { PHI_FIELDS, PHI_CATALOGUE } = await import(at('src/policy/phi-fields.ts'));
const { createPhiBudget } = await import(at('src/records/phi-budget.ts'));
const { resolvePatientPhi, resolveEncounterKind, resolveEncounterDate } = await import(at('src/graphql/phi-field.ts'));
const { createMemoryKeyStore } = await import(at('test/unit/crypto/keyring-contract.ts'));
// The request pool's own parsers when the tree has them, else pg's defaults.
const parsers = await import(at('src/db/type-parsers.ts')).catch(() => null);
const pgTypes = createRequire(at('package.json'))('pg-types');
const parseBytea: (text: string) => Buffer = parsers?.parseBytea ?? pgTypes.getTypeParser(17, 'text');
const parseTimestamptz: (text: string) => unknown = parsers?.parseTimestamptz ?? pgTypes.getTypeParser(1184, 'text');
// A tree that prints encounter dates from PostgreSQL's text (isoOfTimestamptz) reads them as text.
const encounterDate: (text: string) => unknown = parsers?.isoOfTimestamptz ? (text) => text : parseTimestamptz;

const CLINIC = 'clinic-a';
const registrar = {
  kind: 'user', subject: 'registrar-1', issuer: 'https://issuer.test', roles: ['registrar'], clinics: [CLINIC],
  mfa: true, authTime: null, expiresAt: 4_102_444_800, tokenId: null,
};
const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store: createMemoryKeyStore() });
const policy = await loadPolicy(new URL('policies/default.yaml', at('')).pathname, PHI_FIELDS);

const PATIENT_VALUES: Record<string, (i: number) => string> = {
  mrn: (i) => `MRN-${String(100000 + i)}`,
  ssn: (i) => `${String(100 + (i % 800))}-${String(10 + (i % 89))}-${String(1000 + i)}`,
  given_name: (i) => ['Alice', 'Bartholomew', 'Chen', 'Dolores'][i % 4]!,
  family_name: (i) => ['Okonkwo', 'Smith', 'Nguyen-Hartley', 'Ivanova'][i % 4]!,
  birth_date: (i) => `19${String(40 + (i % 60))}-0${String(1 + (i % 9))}-1${String(i % 10)}`,
  phone: (i) => `+1 555 01${String(10 + (i % 90))}`,
  email: (i) => `patient.${String(i)}@example.org`,
  address: (i) => `${String(i + 1)} Elm Street, Springfield, IL 6270${String(i % 10)}`,
};
// The GraphQL field of each patient column, from the catalogue (no second list of PHI names).
const FIELD_OF: Record<string, string> = Object.fromEntries(
  (PHI_CATALOGUE as readonly { type: string; field: string; column: string }[]).filter((f) => f.type === 'Patient').map((f) => [f.column, f.field]),
);
const hex = (b: Buffer) => `\\x${b.toString('hex')}`;
const uuid = () => {
  const b = randomBytes(16);
  return `${b.toString('hex', 0, 4)}-${b.toString('hex', 4, 6)}-${b.toString('hex', 6, 8)}-${b.toString('hex', 8, 10)}-${b.toString('hex', 10, 16)}`;
};

// What pg hands the row parser: each column's text.
interface PatientText { id: string; cols: Record<string, string> }
interface EncounterText { id: string; patientId: string; occurredAt: string; kind: string }
const patientTexts: PatientText[] = [];
const encounterTexts: EncounterText[] = [];
for (let i = 0; i < 100; i++) {
  const id = uuid();
  const cols: Record<string, string> = {};
  for (const [column, value] of Object.entries(PATIENT_VALUES)) {
    cols[column] = hex(await createFieldCipher(keyring).encrypt(CLINIC, { table: 'patients', column, rowId: id, patientId: id }, value(i)));
  }
  patientTexts.push({ id, cols });
  for (let e = 0; e < 2; e++) {
    const eid = uuid();
    const micros = String(100000 + ((i * 7 + e * 13) % 900000));
    encounterTexts.push({
      id: eid,
      patientId: id,
      occurredAt: `2025-0${String(1 + (i % 9))}-1${String(e)} 0${String(i % 10)}:1${String(e)}:2${String(i % 10)}.${micros}+00`,
      kind: hex(await createFieldCipher(keyring).encrypt(CLINIC, { table: 'encounters', column: 'kind', rowId: eid, patientId: id }, ['outpatient', 'inpatient', 'telehealth', 'emergency'][e + (i % 3)]!)),
    });
  }
}

// Each patient's row and its encounters share one RowKey, as src/db/patients.ts makes them: the
// row's first value finds its key in the cache, the others use the one it holds.
type RowKey = { joined: null; held: unknown };
const facts = (rowId: string, patientId: string, key: RowKey) => ({ clinicId: CLINIC, onCareTeam: false, grant: null, rowId, patientId, key });

/** One page: parse the rows as pg would, then resolve every value as the page's query asks. */
function page(cipher: ReturnType<typeof createFieldCipher>): number {
  const budget = createPhiBudget();
  budget.allow({ rows: 1000, values: 5000, rowsReason: 'phi_request_cap', valuesReason: 'phi_request_cap' });
  const ctx = {
    principal: registrar, policy, cipher, keyring, budget,
    audit: createAuditBuffer({ requestId: 'r-1', actor: 'registrar-1', actorKind: 'user', clientAddr: null }),
  };
  let out = 0;
  const keys = new Map<string, RowKey>();
  for (const p of patientTexts) {
    const key: RowKey = { joined: null, held: null };
    keys.set(p.id, key);
    const row: Record<string, unknown> = { facts: facts(p.id, p.id, key), id: p.id, clinic_id: CLINIC, on_care_team: false, grant_id: null, grant_role: null };
    for (const column in p.cols) row[column] = parseBytea(p.cols[column]!);
    for (const column in p.cols) {
      const v = resolvePatientPhi(ctx, row, FIELD_OF[column]);
      if (typeof v !== 'string') throw new Error(`${column}: not synchronous`);
      out += v.length;
    }
  }
  for (const e of encounterTexts) {
    const row = {
      facts: facts(e.id, e.patientId, keys.get(e.patientId)!), id: e.id, patient_id: e.patientId, clinic_id: CLINIC, on_care_team: false, grant_id: null, grant_role: null,
      occurred_at: encounterDate(e.occurredAt), kind: parseBytea(e.kind), kind_legacy: null,
    };
    const date = resolveEncounterDate(ctx, row);
    const kind = resolveEncounterKind(ctx, row);
    if (typeof kind !== 'string' || typeof date !== 'string') throw new Error('encounter: not synchronous');
    out += date.length + kind.length;
  }
  if (ctx.audit.size !== 1200) throw new Error(`expected 1200 events, got ${String(ctx.audit.size)}`);
  return out;
}

const cipher = createFieldCipher(keyring);
// Keys into the cache (the first page fetches them), then the JIT warmed.
for (let i = 0; i < 200; i++) page(cipher);
let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ['gc'] });

const cpu: number[] = [];
const bytes: number[] = [];
let sink = 0;
for (let r = 0; r < rounds; r++) {
  const start = process.cpuUsage();
  for (let i = 0; i < pagesPerRound; i++) sink += page(cipher);
  const used = process.cpuUsage(start);
  cpu.push((used.user + used.system) / pagesPerRound);
  // Allocation: 10 pages with no GC in between (a 128 MB semi-space holds them).
  (globalThis as { gc?: () => void }).gc?.();
  // The observer hears of a GC a tick or two after it.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const gcBefore = gcs;
  const heapBefore = getHeapStatistics().used_heap_size;
  for (let i = 0; i < 10; i++) sink += page(cipher);
  const heapAfter = getHeapStatistics().used_heap_size;
  await new Promise((resolve) => setTimeout(resolve, 5));
  if (gcs === gcBefore) bytes.push((heapAfter - heapBefore) / 10);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
console.log(JSON.stringify({
  root, rounds, pagesPerRound, cpuUsPerPage: Math.round(median(cpu)), cpuMinUsPerPage: Math.round(Math.min(...cpu)),
  heapBytesPerPage: Math.round(median(bytes)), windowsWithoutGc: bytes.length, sink: sink > 0,
}));
