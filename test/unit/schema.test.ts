import { readFile } from 'node:fs/promises';
import { buildSchema as parseSdl, isObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { buildSchema, printSdl } from '../../src/graphql/schema.ts';

const SDL_FILE = new URL('../../schema/schema.graphql', import.meta.url);

describe('the GraphQL schema', () => {
  it('schema/schema.graphql is the printed Pothos schema (run `npx phigate print-schema --write`)', async () => {
    expect(await readFile(SDL_FILE, 'utf8')).toBe(printSdl());
  });

  it('has the names the contract makes binding', () => {
    const schema = parseSdl(printSdl());
    const fields = (type: string) => {
      const t = schema.getType(type);
      if (!isObjectType(t)) throw new Error(`${type} is not an object type`);
      return Object.keys(t.getFields());
    };
    expect(fields('Query')).toEqual(expect.arrayContaining(['me', 'patient', 'patients', 'patientByMrn', 'patientBySsn']));
    expect(fields('Mutation')).toEqual(expect.arrayContaining(['createPatient', 'updatePatient', 'addEncounter', 'setCareTeam']));
    expect(fields('Patient').sort()).toEqual(
      ['id', 'clinicId', 'mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address', 'encounters'].sort(),
    );
    expect(fields('Encounter').sort()).toEqual(['id', 'patientId', 'occurredAt', 'kind', 'reason', 'diagnosisCodes', 'notes'].sort());
    const patientType = schema.getQueryType()!.getFields().patient!.type.toString();
    expect(patientType).toBe('Patient');
    expect(schema.getQueryType()!.getFields().me!.type.toString()).toBe('Viewer!');
  });

  it('every PHI field is nullable, so a denial answers null without losing the rest of the result', () => {
    const schema = buildSchema();
    for (const type of ['Patient', 'Encounter']) {
      const t = schema.getType(type);
      if (!isObjectType(t)) throw new Error(type);
      for (const f of Object.values(t.getFields())) {
        if (f.extensions?.phigatePhi) expect(f.type.toString().endsWith('!'), `${type}.${f.name}`).toBe(false);
      }
    }
  });
});
