import type { GraphQLResolveInfo, SelectionSetNode } from 'graphql';

/**
 * Whether the field being resolved selects, below it, the field at `path` (field names, through
 * inline fragments and fragment spreads, whatever their aliases). Directives are not evaluated: a
 * field under `@skip` counts as selected, so an answer of `true` means "may be asked for".
 */
export function selectsPath(info: Pick<GraphQLResolveInfo, 'fieldNodes' | 'fragments'>, path: readonly string[]): boolean {
  let sets = info.fieldNodes.flatMap((f) => (f.selectionSet ? [f.selectionSet] : []));
  for (const name of path) {
    const next: SelectionSetNode[] = [];
    let found = false;
    const visit = (set: SelectionSetNode, spread: Set<string>): void => {
      for (const s of set.selections) {
        if (s.kind === 'Field') {
          if (s.name.value !== name) continue;
          found = true;
          if (s.selectionSet) next.push(s.selectionSet);
        } else if (s.kind === 'InlineFragment') {
          visit(s.selectionSet, spread);
        } else if (!spread.has(s.name.value)) {
          const fragment = info.fragments[s.name.value];
          if (fragment) visit(fragment.selectionSet, new Set(spread).add(s.name.value));
        }
      }
    };
    for (const set of sets) visit(set, new Set());
    if (!found) return false;
    sets = next;
  }
  return true;
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
