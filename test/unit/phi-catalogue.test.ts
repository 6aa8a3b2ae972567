import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { buildSchema as buildSdl, isInputObjectType, isObjectType, type GraphQLSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ENCOUNTER_COLUMNS, ENCOUNTER_PHI_COLUMNS, PATIENT_COLUMNS } from '../../src/db/patients.ts';
import { buildSchema } from '../../src/graphql/schema.ts';
import { createLogger, REDACT_PATHS } from '../../src/log.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { MASKERS } from '../../src/policy/mask.ts';
import { inputsOf, PHI_CATALOGUE, PHI_FIELDS, PHI_LOG_KEYS } from '../../src/policy/phi-fields.ts';
import { PATIENT_FIELDS } from '../../src/records/patient-values.ts';

// Every list of PHI fields in the code is derived from src/policy/phi-fields.ts; these fail when
// one drifts from it, or when a PHI field is added in one place and not the catalogue.

const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const names = (type: string) => PHI_CATALOGUE.filter((s) => s.type === type).map((s) => s.field).sort();
const sorted = (xs: Iterable<string>) => [...xs].sort();

// Fields of Patient and Encounter that are not PHI: ids, the clinic and the encounter list.
const NOT_PHI: Readonly<Record<string, readonly string[]>> = { Patient: ['id', 'clinicId', 'encounters'], Encounter: ['id', 'patientId'] };

const printed: GraphQLSchema = buildSdl(await readFile(root('schema/schema.graphql'), 'utf8'));

/**
 * Array literals of a TypeScript source holding `min` or more string literals from `names` as
 * direct elements, wherever they span lines. A small scanner rather than a parser: the installed
 * TypeScript (7, native) has no JavaScript API. It skips comments, and template literals apart from
 * their `${...}` parts (SQL's `$1::uuid[]` is not an array).
 */
function arraysOfNames(source: string, names: ReadonlySet<string>, min: number): { line: number; names: string[] }[] {
  const found: { line: number; names: string[] }[] = [];
  // Open brackets; '[' carries the names met directly inside it; '${' marks a template's expression.
  const stack: { open: string; line: number; names: string[] }[] = [];
  let line = 1;
  let i = 0;
  let inTemplate = false;
  const n = source.length;
  while (i < n) {
    const c = source[i]!;
    if (c === '\n') line++;
    if (inTemplate) {
      if (c === '\\') i += 2;
      else if (c === '`') (inTemplate = false), i++;
      else if (c === '$' && source[i + 1] === '{') stack.push({ open: '${', line, names: [] }), (inTemplate = false), (i += 2);
      else i++;
      continue;
    }
    if (c === '/' && source[i + 1] === '/') {
      while (i < n && source[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && source[i + 1] === '*') {
      const end = source.indexOf('*/', i + 2);
      const stop = end < 0 ? n : end + 2;
      for (let j = i; j < stop; j++) if (source[j] === '\n') line++;
      i = stop;
      continue;
    }
    if (c === "'" || c === '"') {
      let j = i + 1;
      let text = '';
      while (j < n && source[j] !== c && source[j] !== '\n') {
        if (source[j] === '\\') j++;
        else text += source[j];
        j++;
      }
      const top = stack.at(-1);
      if (top?.open === '[' && names.has(text)) top.names.push(text);
      i = j + 1;
      continue;
    }
    if (c === '`') {
      inTemplate = true;
      i++;
      continue;
    }
    if (c === '[' || c === '(' || c === '{') stack.push({ open: c, line, names: [] });
    else if (c === '}' && stack.at(-1)?.open === '${') (stack.pop(), (inTemplate = true));
    else if (c === ']' || c === ')' || c === '}') {
      const top = stack.pop();
      if (top?.open === '[' && top.names.length >= min) found.push({ line: top.line, names: top.names });
    }
    i++;
  }
  return found;
}

const PHI_NAMES = new Set<string>(PHI_CATALOGUE.flatMap((s) => [s.field, s.column]));
const PHI_COLUMN = `(?:[a-z]\\.)?(?:${PHI_CATALOGUE.map((s) => s.column).join('|')})\\b`;
/** Three or more PHI columns in a row of an SQL list (`kind, reason, notes`, `p.mrn, p.ssn, ...`). */
const SQL_RUN = new RegExp(`\\b${PHI_COLUMN}(?:\\s*,\\s*${PHI_COLUMN}){2,}`, 'g');

/** The TypeScript sources of src/ and bench/ but the catalogue itself, with their text. */
async function sources(): Promise<{ file: string; text: string }[]> {
  const out: { file: string; text: string }[] = [];
  for (const dir of ['src', 'bench']) {
    for (const file of (await readdir(root(dir), { recursive: true })).filter((f) => f.endsWith('.ts') && !f.includes('node_modules'))) {
      const rel = `${dir}/${file}`;
      if (rel !== 'src/policy/phi-fields.ts') out.push({ file: rel, text: await readFile(root(rel), 'utf8') });
    }
  }
  return out;
}

function fieldsOf(schema: GraphQLSchema, type: string): string[] {
  const t = schema.getType(type);
  if (!isObjectType(t) && !isInputObjectType(t)) throw new Error(`${type} is not an object or input type`);
  return sorted(Object.keys(t.getFields()));
}

describe('the PHI catalogue is the one list', () => {
  it('names each Type.field once, with a column of its table', () => {
    const keys = PHI_CATALOGUE.map((s) => `${s.type}.${s.field}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const s of PHI_CATALOGUE) expect(s.table, `${s.type}.${s.field}`).toBe({ Patient: 'patients', Encounter: 'encounters' }[s.type]);
  });

  it.each(['Patient', 'Encounter'])('the printed schema (schema/schema.graphql): %s has exactly the catalogue’s PHI fields besides its ids', (type) => {
    expect(fieldsOf(printed, type).filter((f) => !NOT_PHI[type]!.includes(f))).toEqual(names(type));
  });

  it('the built schema marks exactly the catalogue’s fields as PHI, on no other type', () => {
    const marked: string[] = [];
    for (const t of Object.values(buildSchema().getTypeMap())) {
      if (!isObjectType(t)) continue;
      for (const f of Object.values(t.getFields())) if (f.extensions?.phigatePhi) marked.push(`${t.name}.${f.name}`);
    }
    expect(sorted(marked)).toEqual(sorted(PHI_CATALOGUE.map((s) => `${s.type}.${s.field}`)));
  });

  it('mutation inputs take exactly the catalogue’s input names', () => {
    expect(fieldsOf(printed, 'CreatePatientInput').filter((f) => f !== 'clinicId')).toEqual(sorted(inputsOf('Patient')));
    expect(fieldsOf(printed, 'UpdatePatientInput')).toEqual(sorted(inputsOf('Patient')));
    expect(fieldsOf(printed, 'AddEncounterInput')).toEqual(sorted(inputsOf('Encounter')));
  });

  it('the policy catalogue, the patient values a write checks and the masked fields come from it', async () => {
    expect(sorted(PHI_FIELDS.Patient)).toEqual(names('Patient'));
    expect(sorted(PHI_FIELDS.Encounter)).toEqual(names('Encounter'));
    expect(sorted(PATIENT_FIELDS)).toEqual(names('Patient'));
    const policy = await loadPolicy(root('policies/default.yaml'), PHI_FIELDS);
    for (const role of policy.roles.values()) expect(sorted(role.fields.keys()), role.name).toEqual(sorted(PHI_CATALOGUE.map((s) => `${s.type}.${s.field}`)));
    for (const masked of Object.keys(MASKERS)) expect(PHI_CATALOGUE.map((s) => `${s.type}.${s.field}`)).toContain(masked);
  });

  it('the SQL columns: one per encrypted field, and every catalogue column read by the row queries', async () => {
    const encrypted = (table: string) => Object.fromEntries(PHI_CATALOGUE.filter((s) => s.table === table && s.encrypted).map((s) => [s.field, s.column]));
    expect(PATIENT_COLUMNS).toEqual(encrypted('patients'));
    expect(ENCOUNTER_COLUMNS).toEqual(encrypted('encounters'));
    const sql = await readFile(root('src/db/patients.ts'), 'utf8');
    // The encounters' encrypted columns are fetched as many as the request may show, from ENCOUNTER_PHI_COLUMNS.
    const literal = PHI_CATALOGUE.filter((s) => s.table === 'patients' || !s.encrypted);
    for (const s of literal) expect(sql, `${s.table}.${s.column}`).toContain(`${s.table === 'patients' ? 'p' : 'e'}.${s.column}`);
    expect([...ENCOUNTER_PHI_COLUMNS].sort()).toEqual(Object.values(encrypted('encounters')).sort());
  });

  it('log redaction covers every field, input and column name, at the top level and one level down', () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) });
    const values = Object.fromEntries(PHI_LOG_KEYS.map((k) => [k, `secret-${k}`]));
    logger.info(values, 'top');
    logger.info({ nested: values }, 'nested');
    const text = JSON.stringify(lines);
    for (const s of PHI_CATALOGUE) {
      for (const key of [s.field, s.column, s.input] as const) {
        if (key === null) continue;
        expect(REDACT_PATHS).toContain(key);
        expect(text).not.toContain(`secret-${key}`);
      }
    }
  });

  it('no other module spells the list out again (four or more PHI names quoted on one line)', async () => {
    const offenders: string[] = [];
    for (const { file, text } of await sources()) {
      text.split('\n').forEach((line, i) => {
        const quoted = new Set([...line.matchAll(/['"`]([A-Za-z_]+)['"`]/g)].map((m) => m[1]!).filter((w) => PHI_NAMES.has(w)));
        if (quoted.size >= 4) offenders.push(`${file}:${i + 1}`);
      });
    }
    expect(offenders).toEqual([]);
  });

  it('nor as an array literal over several lines (three or more PHI names as its elements)', async () => {
    const offenders = (await sources()).flatMap(({ file, text }) => arraysOfNames(text, PHI_NAMES, 3).map((a) => `${file}:${a.line} ${a.names.join(',')}`));
    expect(offenders).toEqual([]);
  });

  it('nor as an SQL column list (three or more PHI columns in a row) outside src/db/patients.ts, whose SQL is checked above', async () => {
    const offenders = (await sources())
      .filter(({ file }) => file !== 'src/db/patients.ts')
      .flatMap(({ file, text }) => [...text.matchAll(SQL_RUN)].map((m) => `${file}:${text.slice(0, m.index).split('\n').length} ${m[0]}`));
    expect(offenders).toEqual([]);
  });

  it('the scans catch what they look for, wherever it spans lines, and skip comments and SQL array types', () => {
    const multi = "const columns = [\n  'given_name',\n  'family_name', // a comment\n  /* 'ssn', */ 'birth_date',\n];";
    expect(arraysOfNames(multi, PHI_NAMES, 3)).toEqual([{ line: 1, names: ['given_name', 'family_name', 'birth_date'] }]);
    expect(arraysOfNames("const q = `SELECT $1::uuid[] ${['kind', 'reason', 'notes'].join()}`;", PHI_NAMES, 3)).toEqual([{ line: 1, names: ['kind', 'reason', 'notes'] }]);
    expect(arraysOfNames("const q = `unnest($1::text[], $2::bytea[])`; f(['id', 'mrn', 'ssn'], 'notes');", PHI_NAMES, 3)).toEqual([]);
    expect('INSERT INTO t (id, occurred_at, kind,\n  reason) VALUES'.match(SQL_RUN)).toEqual(['occurred_at, kind,\n  reason']);
    expect('SELECT p.mrn, p.ssn, p.given_name FROM'.match(SQL_RUN)).toEqual(['p.mrn, p.ssn, p.given_name']);
    expect('SELECT p.mrn, p.mrn_bidx, p.ssn'.match(SQL_RUN)).toBeNull();
  });
});
