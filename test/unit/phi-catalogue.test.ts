import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema as buildSdl, isInputObjectType, isObjectType, type GraphQLSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ENCOUNTER_COLUMNS, PATIENT_COLUMNS } from '../../src/db/patients.ts';
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
    for (const s of PHI_CATALOGUE) expect(sql, `${s.table}.${s.column}`).toContain(`${s.table === 'patients' ? 'p' : 'e'}.${s.column}`);
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
    const all = new Set<string>(PHI_CATALOGUE.flatMap((s) => [s.field, s.column]));
    const src = root('src');
    const offenders: string[] = [];
    for (const file of (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts'))) {
      if (path.join(src, file) === root('src/policy/phi-fields.ts')) continue;
      (await readFile(path.join(src, file), 'utf8')).split('\n').forEach((line, i) => {
        const quoted = new Set([...line.matchAll(/['"`]([A-Za-z_]+)['"`]/g)].map((m) => m[1]!).filter((w) => all.has(w)));
        if (quoted.size >= 4) offenders.push(`${file}:${i + 1}`);
      });
    }
    expect(offenders).toEqual([]);
  });
});
