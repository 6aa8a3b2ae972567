import { isObjectType, parse, type GraphQLObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { buildSchema } from '../../src/graphql/schema.ts';
import { qualifies, withViews } from '../../src/graphql/views.ts';

const schema = buildSchema();
const fieldOf = (type: string, field: string) => (schema.getType(type) as GraphQLObjectType).getFields()[field]!;
const ok = (query: string) => qualifies(schema, parse(query));

describe('qualifies', () => {
  it('takes the bench page, a lookup by id, fragments and an alias of a field that keeps its resolver', () => {
    expect(ok('{ patients(first: 100) { edges { node { id clinicId mrn ssn givenName encounters { id occurredAt kind } } } pageInfo { hasNextPage endCursor } } }')).toBe(true);
    expect(ok('query($id: ID!) { patient(id: $id) { ...P e: encounters { ...E } } } fragment P on Patient { id ssn } fragment E on Encounter { notes }')).toBe(true);
    expect(ok('{ me { subject } }')).toBe(true);
  });

  it('refuses what would resolve other values, or the same values in another order, through views', () => {
    // An alias: graphql-jit reads a view by field name, so two keys of one field would be one read.
    expect(ok('{ patients { edges { node { a: ssn b: ssn } } } }')).toBe(false);
    expect(ok('{ patients { edges { node { a: ssn } } } }')).toBe(false);
    // Directives decide per execution whether a field is read.
    expect(ok('query($s: Boolean!) { patients { edges { node { ssn @skip(if: $s) } } } }')).toBe(false);
    expect(ok('{ patients { edges { node { ...on Patient @include(if: true) { ssn } } } } }')).toBe(false);
    // A field with a resolver before a view field: encounters would no longer resolve first.
    expect(ok('{ patients { edges { node { encounters { id } ssn } } } }')).toBe(false);
    expect(ok('{ patients { edges { node { encounters { id } } node { ssn } } } }')).toBe(false);
    expect(ok('mutation { setCareTeam(patientId: "x", subjects: []) { ssn } }')).toBe(false);
  });
});

describe('withViews', () => {
  it('gives graphql-jit views while it compiles, and the schema its own resolvers back after, thrown or not', () => {
    const ssn = fieldOf('Patient', 'ssn').resolve;
    const encounters = fieldOf('Patient', 'encounters').resolve;
    const node = fieldOf('PatientEdge', 'node').resolve;
    const seen = withViews(schema, () => ({ ssn: fieldOf('Patient', 'ssn').resolve, encounters: fieldOf('Patient', 'encounters').resolve, node: fieldOf('PatientEdge', 'node').resolve }));
    expect(seen.ssn).toBeUndefined();
    expect(seen.encounters).not.toBe(encounters);
    expect(seen.node).not.toBe(node);
    expect(() =>
      withViews(schema, () => {
        throw new Error('compile failed');
      }),
    ).toThrow('compile failed');
    expect([fieldOf('Patient', 'ssn').resolve, fieldOf('Patient', 'encounters').resolve, fieldOf('PatientEdge', 'node').resolve]).toEqual([ssn, encounters, node]);
    // Types without PHI keep every resolver.
    for (const type of Object.values(schema.getTypeMap())) {
      if (!isObjectType(type) || ['Patient', 'Encounter', 'PatientEdge', 'Query', 'Mutation'].includes(type.name)) continue;
      const before = Object.values(type.getFields()).map((f) => f.resolve);
      expect(withViews(schema, () => Object.values(type.getFields()).map((f) => f.resolve))).toEqual(before);
    }
  });
});
