import type { FieldNode, GraphQLResolveInfo, SelectionSetNode } from 'graphql';

/**
 * Whether the field being resolved selects, below it, the field at `path` (field names, through
 * inline fragments and fragment spreads, whatever their aliases). Directives are not evaluated: a
 * field under `@skip` counts as selected, so an answer of `true` means "may be asked for".
 */
export function selectsPath(info: Pick<GraphQLResolveInfo, 'fieldNodes' | 'fragments'>, path: readonly string[]): boolean {
  return selectedAt(info, path).length > 0;
}

/** Every node of the field at `path` below the field being resolved (as selectsPath finds them); none when it is not selected. */
export function selectedAt(info: Pick<GraphQLResolveInfo, 'fieldNodes' | 'fragments'>, path: readonly string[]): FieldNode[] {
  let nodes: readonly FieldNode[] = info.fieldNodes;
  for (const name of path) {
    const next: FieldNode[] = [];
    const visit = (set: SelectionSetNode, spread: Set<string>): void => {
      for (const s of set.selections) {
        if (s.kind === 'Field') {
          if (s.name.value === name) next.push(s);
        } else if (s.kind === 'InlineFragment') {
          visit(s.selectionSet, spread);
        } else if (!spread.has(s.name.value)) {
          const fragment = info.fragments[s.name.value];
          if (fragment) visit(fragment.selectionSet, new Set(spread).add(s.name.value));
        }
      }
    };
    for (const node of nodes) if (node.selectionSet) visit(node.selectionSet, new Set());
    if (next.length === 0) return [];
    nodes = next;
  }
  return [...nodes];
}

/**
 * Whether the operation's root selects nothing but the field being resolved (one response key,
 * `__typename` aside), through inline fragments and fragment spreads. Directives are not
 * evaluated: a field under `@skip` counts, so `true` means no other root field can run.
 */
export function isOnlyRootField(info: Pick<GraphQLResolveInfo, 'operation' | 'fragments' | 'path'>): boolean {
  const keys = new Set<string>();
  const visit = (set: SelectionSetNode, spread: Set<string>): void => {
    for (const s of set.selections) {
      if (s.kind === 'Field') {
        if (s.name.value !== '__typename') keys.add(s.alias?.value ?? s.name.value);
      } else if (s.kind === 'InlineFragment') {
        visit(s.selectionSet, spread);
      } else if (!spread.has(s.name.value)) {
        const fragment = info.fragments[s.name.value];
        if (fragment) visit(fragment.selectionSet, new Set(spread).add(s.name.value));
      }
    }
  };
  visit(info.operation.selectionSet, new Set());
  return keys.size === 1 && keys.has(String(info.path.key)) && info.path.prev === undefined;
}
