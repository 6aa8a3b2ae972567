import { Kind, type DocumentNode, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql';

/**
 * The schema path a response path stands for: field names where the path has response keys, list
 * indices as they are. A response key is the field's alias when the client gave one: the client's
 * own text, whatever it holds, which a log line or an audit row must not take for a field's name.
 * Null when a key is not in the operation (nothing of the client's is guessed at).
 */
export function schemaPath(document: DocumentNode, operation: OperationDefinitionNode, path: readonly (string | number)[]): (string | number)[] | null {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const named: (string | number)[] = [];
  let sets: readonly SelectionSetNode[] = [operation.selectionSet];
  for (const key of path) {
    if (typeof key === 'number') {
      named.push(key);
      continue;
    }
    // Every field of this response key, through fragments: their sub-selections merge into the next level.
    const fields = sets.flatMap((set) => fieldsOf(set, key, fragments, new Set()));
    const first = fields[0];
    if (first === undefined) return null;
    named.push(first.name.value);
    sets = fields.flatMap((f) => (f.selectionSet === undefined ? [] : [f.selectionSet]));
  }
  return named;
}

function fieldsOf(set: SelectionSetNode, key: string, fragments: ReadonlyMap<string, FragmentDefinitionNode>, spread: Set<string>): FieldNode[] {
  const found: FieldNode[] = [];
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) {
      if ((s.alias ?? s.name).value === key) found.push(s);
      continue;
    }
    let inner: SelectionSetNode | undefined;
    if (s.kind === Kind.INLINE_FRAGMENT) inner = s.selectionSet;
    else if (!spread.has(s.name.value)) {
      spread.add(s.name.value);
      inner = fragments.get(s.name.value)?.selectionSet;
    }
    if (inner !== undefined) found.push(...fieldsOf(inner, key, fragments, spread));
  }
  return found;
}
