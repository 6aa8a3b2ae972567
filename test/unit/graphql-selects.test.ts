import { parse, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import { isOnlyRootField, selectsPath } from '../../src/graphql/selects.ts';

// What the `patients` resolver sees of its own field: the field nodes and the document's fragments.
function infoOf(document: string) {
  const doc = parse(document);
  const operation = doc.definitions.find((d): d is OperationDefinitionNode => d.kind === 'OperationDefinition')!;
  const fragments = Object.fromEntries(
    doc.definitions.filter((d): d is FragmentDefinitionNode => d.kind === 'FragmentDefinition').map((d) => [d.name.value, d]),
  );
  const fieldNodes = operation.selectionSet.selections.filter((s): s is FieldNode => s.kind === 'Field' && s.name.value === 'patients');
  return { fieldNodes, fragments };
}

const PATH = ['edges', 'node', 'encounters'];

describe('selectsPath', () => {
  it('finds the path spelt out, whatever the aliases', () => {
    expect(selectsPath(infoOf('{ patients { edges { node { id encounters { id } } } } }'), PATH)).toBe(true);
    expect(selectsPath(infoOf('{ patients { e: edges { n: node { visits: encounters { id } } } } }'), PATH)).toBe(true);
  });

  it('finds it through inline fragments and fragment spreads, in any of several field nodes', () => {
    expect(selectsPath(infoOf('{ patients { ... on PatientConnection { edges { node { ...P } } } } } fragment P on Patient { encounters { id } }'), PATH)).toBe(true);
    expect(selectsPath(infoOf('{ patients { edges { node { id } } } patients { edges { node { ... { encounters { kind } } } } } }'), PATH)).toBe(true);
  });

  it('answers false when the path is not selected, or only a field of the same name elsewhere', () => {
    expect(selectsPath(infoOf('{ patients { edges { node { id mrn } } pageInfo { hasNextPage } } }'), PATH)).toBe(false);
    expect(selectsPath(infoOf('{ patients { edges { cursor } } }'), PATH)).toBe(false);
    expect(selectsPath(infoOf('{ patients { encounters { id } edges { node { id } } } }'), PATH)).toBe(false);
    expect(selectsPath(infoOf('{ patients { pageInfo { hasNextPage } } }'), PATH)).toBe(false);
  });

  it('counts a field under @skip as selected: "may be asked for"', () => {
    expect(selectsPath(infoOf('{ patients { edges { node { encounters @skip(if: true) { id } } } } }'), PATH)).toBe(true);
  });
});

// The operation and the path of the root field being resolved, under its response key.
function rootOf(document: string, key = 'patients') {
  const doc = parse(document);
  const operation = doc.definitions.find((d): d is OperationDefinitionNode => d.kind === 'OperationDefinition')!;
  const fragments = Object.fromEntries(
    doc.definitions.filter((d): d is FragmentDefinitionNode => d.kind === 'FragmentDefinition').map((d) => [d.name.value, d]),
  );
  return { operation, fragments, path: { prev: undefined, key, typename: 'Query' } };
}

describe('isOnlyRootField', () => {
  it('answers true for a root field alone, however often it is spelt, beside __typename, through fragments', () => {
    expect(isOnlyRootField(rootOf('{ patients { edges { node { id } } } }'))).toBe(true);
    expect(isOnlyRootField(rootOf('{ patients { edges { node { id } } } patients { pageInfo { hasNextPage } } }'))).toBe(true);
    expect(isOnlyRootField(rootOf('query Q { __typename ... on Query { ...F } } fragment F on Query { patients { edges { cursor } } }'))).toBe(true);
    expect(isOnlyRootField(rootOf('{ p: patients { edges { cursor } } }', 'p'))).toBe(true);
  });

  it('answers false when any other root field may run, under another alias, or under @skip', () => {
    expect(isOnlyRootField(rootOf('{ patients { edges { cursor } } me { subject } }'))).toBe(false);
    expect(isOnlyRootField(rootOf('{ a: patients { edges { cursor } } b: patients { edges { cursor } } }', 'a'))).toBe(false);
    expect(isOnlyRootField(rootOf('{ patients { edges { cursor } } ...F } fragment F on Query { patient(id: "x") { id } }'))).toBe(false);
    expect(isOnlyRootField(rootOf('{ patients { edges { cursor } } me @skip(if: true) { subject } }'))).toBe(false);
  });

  it('answers false below the root', () => {
    const nested = rootOf('{ patients { edges { cursor } } }');
    expect(isOnlyRootField({ ...nested, path: { prev: nested.path, key: 'edges', typename: 'PatientConnection' } })).toBe(false);
  });
});
