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
  const token = accessToken();
  if (token === null) throw ended();
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  const first = body.errors?.[0];
  if (res.status === 401 || first?.extensions?.code === 'UNAUTHENTICATED') throw ended();
  if (first) throw new ApiError(first.message, first.extensions?.code ?? 'ERROR');
  if (!res.ok) throw new ApiError(`The gateway answered ${res.status}.`, 'ERROR');
  return body.data;
}

function ended() {
  sessionEnded();
  return new ApiError('Your session has ended. Sign in again.', 'UNAUTHENTICATED');
}
