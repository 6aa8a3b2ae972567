// Every console action is an ordinary GraphQL request to the gateway, audited like any other.
import { accessToken } from './auth.js';

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

let sessionEnded = () => {};

/** What to do when the gateway no longer accepts the token (expired, revoked, signed out elsewhere). */
export function onSessionEnd(handler) {
  sessionEnded = handler;
}

/** Runs one operation; throws an ApiError with the gateway's extensions.code on any error. */
export async function gql(endpoint, query, variables = {}) {
  return (await gqlPartial(endpoint, query, variables, false)).data;
}

/**
 * Runs one operation whose answer may stand with some fields withheld (null, with an error naming
 * the field's path: a value denied, or whose key was destroyed): gives the data and those errors.
 * Any other error throws as gql() does.
 */
export async function gqlPartial(endpoint, query, variables = {}, partial = true) {
  const token = accessToken();
  if (token === null) throw ended();
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  const errors = body.errors ?? [];
  const first = errors[0];
  if (res.status === 401 || first?.extensions?.code === 'UNAUTHENTICATED') throw ended();
  const withheld = partial && body.data != null && errors.every((e) => Array.isArray(e.path) && e.path.length > 1);
  if (first && !withheld) throw new ApiError(first.message, first.extensions?.code ?? 'ERROR');
  if (!res.ok) throw new ApiError(`The gateway answered ${res.status}.`, 'ERROR');
  return { data: body.data, errors };
}

function ended() {
  sessionEnded();
  return new ApiError('Your session has ended. Sign in again.', 'UNAUTHENTICATED');
}
