import type { GrantRow, QueuePosition, QueueRead } from '../db/break-glass.ts';
import { PhigateError } from '../errors.ts';
import * as v from './validate.ts';

/** Grants a page of the review queue holds when it pages (`after` or `before`) without `first`. */
export const DEFAULT_QUEUE_PAGE = 50;

/**
 * Grants the contract's own call (`breakGlassGrants(unreviewedOnly:)`, no paging argument) answers,
 * as it did before the queue paged: a client written to the contract keeps its list. The page limit
 * bounds `first`, not this: listing grants discloses nothing; each `reason` selected is audited.
 */
export const UNPAGED_LIST = 500;

/** The arguments of `breakGlassGrants`, as they came. */
export interface GrantQueueArgs {
  readonly unreviewedOnly?: boolean | null;
  readonly id?: string | null;
  readonly first?: number | null;
  readonly after?: string | null;
  readonly before?: string | null;
}

/** One grant by id, or one page of the queue. */
export type GrantQueueQuery = { readonly kind: 'one'; readonly id: string; readonly unreviewedOnly: boolean } | ({ readonly kind: 'page' } & QueueRead);

const bad = (message: string) => new PhigateError('BAD_USER_INPUT', message);

// Opaque to clients. It carries the grant's place as it was listed, not only its id: a grant
// reviewed since moves to the reviewed part of the queue, and paging on from where the page
// ended must not follow it there and skip the unreviewed grants in between.
const CURSOR = /^grant:([01]):([0-9]{1,18}):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

export const encodeGrantCursor = (g: Pick<GrantRow, 'reviewed_at' | 'granted_us' | 'id'>): string =>
  Buffer.from(`grant:${g.reviewed_at === null ? 0 : 1}:${g.granted_us}:${g.id}`).toString('base64url');

export function decodeGrantCursor(cursor: string): QueuePosition | null {
  const m = CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  return m ? { reviewed: m[1] === '1', grantedUs: m[2]!, id: m[3]! } : null;
}

function position(name: 'after' | 'before', cursor: string): QueuePosition {
  const p = decodeGrantCursor(cursor);
  if (p === null) throw bad(`${name} must be the cursor of a grant this API listed (BreakGlassGrant.cursor).`);
  return p;
}

/**
 * Checks the arguments where the query starts and says which one is wrong. `first` is bounded by
 * `maxPageSize`: each grant listed with its reason is a disclosure of its patient, and a queue read
 * a page at a time discloses only what the reviewer pages through.
 */
export function grantQueueQuery(args: GrantQueueArgs, maxPageSize: number): GrantQueueQuery {
  const unreviewedOnly = args.unreviewedOnly ?? false;
  if (args.id != null) {
    if (args.first != null || args.after != null || args.before != null) throw bad('id names one grant: give it without first, after or before.');
    return { kind: 'one', id: v.id('id', args.id), unreviewedOnly };
  }
  if (args.first == null && args.after == null && args.before == null) return { kind: 'page', unreviewedOnly, from: null, backward: false, limit: UNPAGED_LIST };
  const first = args.first ?? Math.min(DEFAULT_QUEUE_PAGE, maxPageSize);
  if (!Number.isInteger(first) || first < 1 || first > maxPageSize) throw bad(`first must be between 1 and ${maxPageSize}.`);
  if (args.after != null && args.before != null) throw bad('Give after or before, not both.');
  const from = args.after != null ? position('after', args.after) : args.before != null ? position('before', args.before) : null;
  return { kind: 'page', unreviewedOnly, from, backward: args.before != null, limit: first };
}
