import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Kind, parse, print, visit, type DocumentNode, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode } from 'graphql';
import { documentHash } from '../http/plugins/use-trusted-documents.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
export const OPERATIONS_DIR = path.join(ROOT, 'client/operations');
export const TRUSTED_DOCUMENTS_FILE = path.join(ROOT, 'client/generated/trusted-documents.json');

const TYPENAME: FieldNode = { kind: Kind.FIELD, name: { kind: Kind.NAME, value: '__typename' } };

/**
 * The document as Apollo Client sends it: its cache adds `__typename` to every selection set but
 * the operation's own, unless one there already selects a `__` field (Apollo's
 * addTypenameToDocument), and only then does its persisted-query link hash the printed text.
 */
export const withTypenames = (document: DocumentNode): DocumentNode =>
  visit(document, {
    SelectionSet(node, _key, parent) {
      if (parent && 'kind' in parent && parent.kind === Kind.OPERATION_DEFINITION) return undefined;
      if (node.selections.some((s) => s.kind === Kind.FIELD && s.name.value.startsWith('__'))) return undefined;
      return { ...node, selections: [...node.selections, TYPENAME] };
    },
  });

/**
 * The allow-list of the client's operations: for each, the operation followed by the fragments
 * it spreads (transitively), printed by graphql-js `print`, keyed by the sha256 of that text,
 * twice: as written, the text a client sends for the generated typed documents
 * (`print(PatientPageDocument)`, urql, graphql-request), and with the `__typename` fields Apollo
 * Client adds, the text whose hash its persisted-query link sends. Both ask for the same data.
 */
export function trustedDocumentsOf(sources: readonly string[]): Record<string, string> {
  const documents = sources.map((s) => parse(s, { noLocation: true }));
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of documents.flatMap((doc) => doc.definitions)) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);

  const spreadBy = (root: OperationDefinitionNode): FragmentDefinitionNode[] => {
    const found = new Map<string, FragmentDefinitionNode>();
    const walk = (node: OperationDefinitionNode | FragmentDefinitionNode) =>
      visit(node, {
        FragmentSpread(spread) {
          const fragment = fragments.get(spread.name.value);
          if (!fragment || found.has(fragment.name.value)) return;
          found.set(fragment.name.value, fragment);
          walk(fragment);
        },
      });
    walk(root);
    return [...found.values()];
  };

  const trusted: Record<string, string> = {};
  for (const d of documents.flatMap((doc) => doc.definitions)) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    const document: DocumentNode = { kind: Kind.DOCUMENT, definitions: [d, ...spreadBy(d)] };
    for (const text of [print(document), print(withTypenames(document))]) trusted[documentHash(text)] = text;
  }
  return trusted;
}

/** client/operations/*.graphql, in name order, so that the output is stable. */
export async function readOperations(): Promise<string[]> {
  const files = (await readdir(OPERATIONS_DIR)).filter((f) => f.endsWith('.graphql')).sort();
  return Promise.all(files.map((f) => readFile(path.join(OPERATIONS_DIR, f), 'utf8')));
}

export const renderTrustedDocuments = (trusted: Record<string, string>): string => `${JSON.stringify(trusted, null, 2)}\n`;

// `npm run trusted-documents` (also run by `npm run codegen`): CI regenerates and fails on a diff.
if (process.argv[1] && path.resolve(process.argv[1]) === import.meta.filename) {
  await writeFile(TRUSTED_DOCUMENTS_FILE, renderTrustedDocuments(trustedDocumentsOf(await readOperations())));
}
