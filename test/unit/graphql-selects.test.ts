import { parse, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import { selectsPath } from '../../src/graphql/selects.ts';

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
