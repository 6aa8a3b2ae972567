import { describe, expect, it } from 'vitest';
import { decodeGrantCursor, encodeGrantCursor, grantQueueQuery } from '../../../src/records/grant-queue.ts';

const ID = '20000000-0000-4000-8000-00000000000a';
const message = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return [(err as { code?: string }).code, (err as Error).message];
  }
  return null;
};

describe('the review queue arguments', () => {
  it('a cursor carries the place the grant was listed at, to the microsecond', () => {
    const cursor = encodeGrantCursor({ reviewed_at: null, granted_us: '1767571200000001', id: ID });
    expect(decodeGrantCursor(cursor)).toEqual({ reviewed: false, grantedUs: '1767571200000001', id: ID });
    expect(decodeGrantCursor(encodeGrantCursor({ reviewed_at: new Date(), granted_us: '1', id: ID }))?.reviewed).toBe(true);
  });

  it("answers the contract's unpaged call as before paging (500 from the start), and pages of 50 or the page limit if lower", () => {
    expect(grantQueueQuery({}, 100)).toEqual({ kind: 'page', unreviewedOnly: false, from: null, backward: false, limit: 500 });
    expect(grantQueueQuery({ unreviewedOnly: true }, 20)).toMatchObject({ unreviewedOnly: true, limit: 500 });
    const after = encodeGrantCursor({ reviewed_at: null, granted_us: '5', id: ID });
    expect(grantQueueQuery({ after }, 100)).toMatchObject({ from: { id: ID }, limit: 50 });
    expect(grantQueueQuery({ after, unreviewedOnly: true }, 20)).toMatchObject({ unreviewedOnly: true, limit: 20 });
  });

  it('before reads backward from the cursor; id reads one grant', () => {
    const before = encodeGrantCursor({ reviewed_at: null, granted_us: '5', id: ID });
    expect(grantQueueQuery({ before, first: 3 }, 100)).toMatchObject({ kind: 'page', backward: true, limit: 3, from: { id: ID } });
    expect(grantQueueQuery({ id: ID.toUpperCase(), unreviewedOnly: true }, 100)).toEqual({ kind: 'one', id: ID, unreviewedOnly: true });
  });

  it.each([
    [{ first: 0 }, 'first must be between 1 and 100.'],
    [{ first: 101 }, 'first must be between 1 and 100.'],
    [{ after: 'x' }, 'after must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
    [{ before: Buffer.from(`grant:0:-1:${ID}`).toString('base64url') }, 'before must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
    [{ after: Buffer.from(`grant:0:1:${ID}x`).toString('base64url') }, 'after must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
    [{ id: ID, after: 'x' }, 'id names one grant: give it without first, after or before.'],
    [{ id: 'nope' }, 'id must be an id (a UUID).'],
  ])('%j is BAD_USER_INPUT naming the argument', (args, text) => {
    expect(message(() => grantQueueQuery(args, 100))).toEqual(['BAD_USER_INPUT', text]);
  });

  it('refuses after with before', () => {
    const c = encodeGrantCursor({ reviewed_at: null, granted_us: '5', id: ID });
    expect(message(() => grantQueueQuery({ after: c, before: c }, 100))).toEqual(['BAD_USER_INPUT', 'Give after or before, not both.']);
  });
});
