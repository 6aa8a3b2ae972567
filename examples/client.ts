import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';

/**
 * A minimal typed phigate client a front-end team can copy: results and variables are typed by
 * the documents codegen generates from client/operations/*.graphql (npm run codegen). Errors are
 * returned, not thrown, because a PHI answer is often partial on purpose: a denied field is null
 * with an error whose extensions.code is FIELD_DENIED while the rest of the data stands.
 */
export interface PhigateError {
  readonly message: string;
  readonly path?: readonly (string | number)[];
  readonly extensions?: { readonly code?: string; readonly reason?: string };
}

export interface PhigateResult<T> {
  readonly status: number;
  readonly data: T | null;
  readonly errors: readonly PhigateError[];
}

export interface PhigateClientOptions {
  /** e.g. http://127.0.0.1:4000/graphql */
  readonly url: string;
  /** Returns a current access token (refresh it in here). */
  readonly token: () => Promise<string> | string;
  readonly fetch?: typeof globalThis.fetch;
}

export function createPhigateClient(opts: PhigateClientOptions) {
  const doFetch = opts.fetch ?? globalThis.fetch;
  return async function request<T, V extends Record<string, unknown>>(document: TypedDocumentNode<T, V>, variables?: V): Promise<PhigateResult<T>> {
    const res = await doFetch(opts.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await opts.token()}` },
      body: JSON.stringify({ query: print(document), variables }),
    });
    const body = (await res.json()) as { data?: T | null; errors?: PhigateError[] };
    return { status: res.status, data: body.data ?? null, errors: body.errors ?? [] };
  };
}

/** The codes of a result's errors at one field, e.g. fieldCodes(r, ['patientBySsn', 'ssn']). */
export const fieldCodes = (result: PhigateResult<unknown>, path: readonly (string | number)[]): string[] =>
  result.errors.filter((e) => e.path?.join('.') === path.join('.')).map((e) => e.extensions?.code ?? 'UNKNOWN');
