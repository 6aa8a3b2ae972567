import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { GraphQLParams, Plugin } from 'graphql-yoga';
import { ConfigError } from '../../config.ts';
import { PhigateError } from '../../errors.ts';

/** sha256 (lowercase hex) -> the exact document text it is the hash of. */
export type TrustedDocuments = ReadonlyMap<string, string>;

/** The hash a client sends: sha256 over the UTF-8 bytes of the document text, lowercase hex. */
export const documentHash = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

const SETTING = 'PHIGATE_TRUSTED_DOCUMENTS_FILE';
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Reads the allow-list (`{ "<sha256>": "<document>" }`, as `npm run trusted-documents` writes
 * it) and checks that every key is the hash of its document, so a hand-edited entry cannot
 * smuggle in a document under a trusted hash. Any fault stops start-up.
 */
export async function loadTrustedDocuments(file: string): Promise<TrustedDocuments> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    throw new ConfigError(SETTING, 'cannot be read as JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(SETTING, 'must hold a JSON object of sha256 hash -> document');
  }
  const documents = new Map<string, string>();
  for (const [hash, document] of Object.entries(parsed)) {
    if (!SHA256_HEX.test(hash) || typeof document !== 'string' || documentHash(document) !== hash) {
      throw new ConfigError(SETTING, `entry ${hash.slice(0, 64)} is not the sha256 of its document`);
    }
    documents.set(hash, document);
  }
  return documents;
}

type PersistedParams = GraphQLParams & { documentId?: unknown };

/**
 * Only documents of the allow-list run. A request names one by its hash, either as
 * `extensions.persistedQuery.sha256Hash` (Apollo automatic persisted queries, version 1) or as a
 * top-level `documentId` (GraphQL Code Generator's persisted documents), both the plain hex
 * digest. A `query` alone is refused, and so is one sent with a hash but differing from the
 * trusted text: nothing is ever registered at run time. (Yoga's persisted-operations plugin
 * refuses every request that carries a `query`, so a client sending a trusted hash with its exact
 * text would be refused; this plugin is the whole of that behaviour in a dozen lines.)
 */
export function useTrustedDocuments(documents: TrustedDocuments): Plugin {
  return {
    onParams({ params, setParams }) {
      const { documentId, ...rest } = params as PersistedParams;
      const hash = documentId ?? (rest.extensions?.persistedQuery as { sha256Hash?: unknown } | undefined)?.sha256Hash;
      const document = typeof hash === 'string' ? documents.get(hash) : undefined;
      // Thrown, so that no later hook (yoga's parameter checks) looks at the request.
      if (document === undefined || (rest.query != null && rest.query !== document)) {
        throw new PhigateError('FORBIDDEN', 'Only trusted documents are executed.', { reason: 'untrusted_document' });
      }
      // `documentId` is not a parameter yoga knows; it would refuse the request.
      setParams({ ...rest, query: document });
    },
  };
}
