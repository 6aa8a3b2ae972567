import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listGrantsStatement } from '../../../src/db/break-glass.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { codesOf } from '../../support/gql-expect.ts';
import { planOfExecute, underRequestContext } from '../../support/statement-plan.ts';

// The review queue a page at a time, and a grant's reason disclosed only when that grant is
// opened: a list that does not select `reason` decrypts nothing and writes no `read` event, and
// `breakGlassGrants(id:)` with `reason` discloses that one grant's reason, audited once.

const BREAK = `mutation($id: ID!, $reason: String!) { breakGlass(patientId: $id, reason: $reason) { id } }`;
const LIST = `query($first: Int, $after: String, $before: String, $u: Boolean) {
  breakGlassGrants(first: $first, after: $after, before: $before, unreviewedOnly: $u) { id cursor reviewedAt }
}`;
const OPEN = `query($id: ID!) { breakGlassGrants(id: $id) { id patientId reason } }`;
const REVIEW = `mutation($id: ID!) { reviewBreakGlass(id: $id, outcome: "justified") { id } }`;
const REASON = 'Found unresponsive in the car park, no care-team physician on site (queue test)';

let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
});
afterAll(async () => {
  await gw?.close();
});

const inClinic = (clinic: string): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === clinic);
const decrypts = () => [...gw.cipher.stats.decryptsByColumn].filter(([k]) => k.startsWith('break_glass_grants.')).reduce((n, [, d]) => n + d, 0);
const compliance = (sub: string, clinics: string[]) => gw.issuer.token({ sub, roles: ['compliance'], clinics, mfa: true });
const textReads = (actor: string) => gw.auditRows("actor = $1 AND type_name = 'BreakGlassGrant' AND field IS NOT NULL", [actor]);

interface Listed {
  id: string;
  cursor: string;
  reviewedAt: string | null;
}

async function list(token: string, vars: Record<string, unknown>): Promise<Listed[]> {
  const r = await gw.gql(token, LIST, vars);
  expect(r.body.errors, r.text).toBeUndefined();
  return r.body.data!.breakGlassGrants;
}

describe('opening the review queue', () => {
  const opened: { id: string; patientId: string }[] = [];

  beforeAll(async () => {
    // Three clinicians (the daily limit is per clinician) each open a grant on a c-north patient.
    for (const [i, patient] of inClinic('c-north').slice(0, 3).entries()) {
      const token = await gw.issuer.token({ sub: `dr-queue-${i}`, roles: ['physician'], clinics: ['c-north'], mfa: true });
      const r = await gw.gql(token, BREAK, { id: patient.id, reason: REASON });
      expect(r.body.errors, r.text).toBeUndefined();
      opened.push({ id: r.body.data!.breakGlass.id, patientId: patient.id });
    }
  });

  it('lists the grants without their reasons: nothing decrypted, no read event, one listing event', async () => {
    const reviewer = await compliance('compliance-queue-list', ['c-north']);
    const before = decrypts();
    const listed = await list(reviewer, { first: 10 });
    expect(listed.map((g) => g.id)).toEqual(expect.arrayContaining(opened.map((g) => g.id)));
    expect(decrypts()).toBe(before);
    expect(await textReads('compliance-queue-list')).toEqual([]);
    const views = await gw.auditRows("actor = 'compliance-queue-list' AND type_name = 'BreakGlassGrant'");
    expect(views.map((e) => [e.action, e.detail, e.patient_id])).toEqual([['view', 'listed', null]]);
  });

  it('opening one grant decrypts and audits that grant\'s reason alone', async () => {
    const reviewer = await compliance('compliance-queue-open', ['c-north']);
    const target = opened[1]!;
    const before = decrypts();
    const r = await gw.gql(reviewer, OPEN, { id: target.id });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.breakGlassGrants).toEqual([{ id: target.id, patientId: target.patientId, reason: REASON }]);
    expect(decrypts()).toBe(before + 1);
    const reads = await textReads('compliance-queue-open');
    expect(reads.map((e) => [e.action, e.field, e.record_id, e.grant_id, e.patient_id])).toEqual([['read', 'reason', target.id, null, target.patientId]]);
  });

  it('an id the reader may not see answers an empty list and decrypts nothing', async () => {
    const south = await compliance('compliance-queue-south', ['c-south']);
    const before = decrypts();
    const r = await gw.gql(south, OPEN, { id: opened[0]!.id });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.breakGlassGrants).toEqual([]);
    expect(decrypts()).toBe(before);
    expect(await textReads('compliance-queue-south')).toEqual([]);
  });
});

describe('paging the review queue', () => {
  // c-east's queue, written by the owner with chosen times: ties on granted_at (the id decides),
  // times a microsecond apart (a Date would round them together), reviewed grants among them.
  const expected: string[] = [];

  beforeAll(async () => {
    const patients = inClinic('c-east').slice(0, 9);
    const times = ['00:00:00.000001', '00:00:00.000002', '00:00:00.000002', '00:00:00.000002', '00:00:01', '00:00:01.5', '00:00:01.5', '00:00:03', '00:00:04'];
    await gw.admin(async (c) => {
      for (const [i, p] of patients.entries()) {
        const at = `2026-01-05T${times[i]}Z`;
        const reviewed = i % 3 === 0;
        await c.query(
          `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, reason, request_id, granted_at, expires_at, reviewed_at, reviewed_by, review_outcome)
           VALUES ($1, 'physician', $2, false, 'legacy reason (queue test)', 'queue-test', $3::timestamptz, $3::timestamptz + interval '1 hour',
                   CASE WHEN $4 THEN $3::timestamptz + interval '2 hours' END, CASE WHEN $4 THEN 'compliance-old' END, CASE WHEN $4 THEN 'justified' END)`,
          [`dr-east-${i}`, p.id, at, reviewed],
        );
      }
      const { rows } = await c.query<{ id: string }>(
        `SELECT id FROM phigate.break_glass_grants WHERE clinic_id = 'c-east' ORDER BY reviewed_at IS NOT NULL, granted_at, id`,
      );
      expected.push(...rows.map((r) => r.id));
    });
  });

  it('forward with after, every grant once in queue order, unreviewed first', async () => {
    const reviewer = await compliance('compliance-queue-east', ['c-east']);
    const seen: Listed[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 20; pages++) {
      const page = await list(reviewer, { first: 2, after });
      seen.push(...page);
      if (page.length < 2) break;
      after = page.at(-1)!.cursor;
    }
    expect(seen.map((g) => g.id)).toEqual(expected);
    const reviewedFrom = seen.findIndex((g) => g.reviewedAt !== null);
    expect(seen.slice(reviewedFrom).every((g) => g.reviewedAt !== null)).toBe(true);
    expect(await list(reviewer, {})).toHaveLength(expected.length);
  });

  it('backward with before, the same grants in the same order', async () => {
    const reviewer = await compliance('compliance-queue-east', ['c-east']);
    const all = await list(reviewer, { first: 100 });
    const pages: Listed[][] = [];
    let before: string | null = all.at(-1)!.cursor;
    for (let n = 0; n < 20 && before !== null; n++) {
      const page = await list(reviewer, { first: 3, before });
      if (page.length === 0) break;
      pages.unshift(page);
      before = page[0]!.cursor;
    }
    expect([...pages.flat(), all.at(-1)!].map((g) => g.id)).toEqual(expected);
  });

  it('a grant reviewed between pages does not make the next page skip the unreviewed grants after it', async () => {
    const reviewer = await compliance('compliance-queue-east-2', ['c-east']);
    const first = await list(reviewer, { first: 2, u: true });
    expect(codesOf(await gw.gql(reviewer, REVIEW, { id: first[1]!.id }))).toEqual([]);
    const unreviewed = expected.slice(0, 6);
    const next = await list(reviewer, { first: 10, after: first[1]!.cursor, u: true });
    expect(next.map((g) => g.id)).toEqual(unreviewed.slice(2));
  });
});

describe('a reviewer of many clinics', () => {
  // 20 clinics of 5 grants, their times interleaved clinic by clinic, every third reviewed, and two
  // grants of the reviewer's own in a clinic outside its token; its token names the 20, one of them twice.
  const sub = 'compliance-queue-many';
  const clinics = Array.from({ length: 20 }, (_, i) => `c-qm-${i}`);
  const token = () => compliance(sub, [...clinics, clinics[7]!]);
  const expected = async (unreviewedOnly: boolean) =>
    gw.admin(async (c) =>
      (await c.query<{ id: string }>(
        `SELECT id FROM phigate.break_glass_grants WHERE (clinic_id = ANY ($1) OR actor = $2) AND ($3 IS FALSE OR reviewed_at IS NULL)
         ORDER BY reviewed_at IS NOT NULL, granted_at, id`,
        [clinics, sub, unreviewedOnly],
      )).rows.map((r) => r.id),
    );

  beforeAll(async () => {
    await gw.admin(async (c) => {
      await c.query('BEGIN');
      // As the bench writes grants: with their clinic, no patient row needed.
      await c.query('SET LOCAL session_replication_role = replica');
      await c.query(`INSERT INTO phigate.clinics (id, name) SELECT 'c-qm-' || i, 'Queue clinic ' || i FROM generate_series(0, 19) i`);
      await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-qm-own', 'Queue clinic of the reviewer''s own grants')`);
      await c.query(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at, reviewed_at, reviewed_by, review_outcome)
         SELECT 'dr-qm-' || i, 'physician', gen_random_uuid(), 'c-qm-' || i, false, 'legacy reason (queue test)', 'queue-test', t, t + interval '1 hour',
                CASE WHEN (j * 20 + i) % 3 = 0 THEN t + interval '2 hours' END, CASE WHEN (j * 20 + i) % 3 = 0 THEN 'compliance-old' END,
                CASE WHEN (j * 20 + i) % 3 = 0 THEN 'justified' END
         FROM generate_series(0, 19) i, generate_series(0, 4) j, LATERAL (SELECT timestamptz '2026-01-07T00:00:00Z' + (j * 20 + i) * interval '1 second' AS t) x`,
      );
      await c.query(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at)
         SELECT $1, 'physician', gen_random_uuid(), 'c-qm-own', false, 'legacy reason (queue test)', 'queue-test', t, t + interval '1 hour'
         FROM (VALUES (timestamptz '2026-01-07T00:00:10.5Z'), (timestamptz '2026-01-07T00:01:10.5Z')) v(t)`,
        [sub],
      );
      await c.query('COMMIT');
    });
  });

  it('pages forward, backward and unreviewed only through the same queue as its whole, each grant once', async () => {
    const reviewer = await token();
    // The gateway learns of clinics created since it loaded their list within 5 s (src/db/clinics.ts).
    await expect.poll(async () => (await list(reviewer, { first: 100 })).length, { timeout: 15_000, interval: 500 }).toBe(100);
    for (const unreviewedOnly of [false, true]) {
      const all = await expected(unreviewedOnly);
      expect(all.length).toBeGreaterThan(40);
      const forward: Listed[] = [];
      let after: string | null = null;
      for (let n = 0; n < 100; n++) {
        const page = await list(reviewer, { first: 4, after, u: unreviewedOnly });
        forward.push(...page);
        if (page.length < 4) break;
        after = page.at(-1)!.cursor;
      }
      expect(forward.map((g) => g.id)).toEqual(all);
      const last = forward.at(-1)!;
      const backward: string[] = [];
      let before: string | null = last.cursor;
      for (let n = 0; n < 100 && before !== null; n++) {
        const page = await list(reviewer, { first: 3, before, u: unreviewedOnly });
        if (page.length === 0) break;
        backward.unshift(...page.map((g) => g.id));
        before = page[0]!.cursor;
      }
      expect([...backward, last.id]).toEqual(all);
    }
  });

  it('reads one grant a clinic and then only the clinics and grants up to the page\'s bound, not a page of every clinic', async () => {
    const { text, params } = listGrantsStatement({ unreviewedOnly: false, from: null, backward: false, limit: 4 });
    const plan = await gw.admin(async (c) => {
      await c.query('BEGIN READ ONLY');
      try {
        await underRequestContext(c, { actor: sub, roles: 'compliance', clinics: [...clinics, clinics[7]!].join(',') });
        // The plan a table of production size gets: with these few rows PostgreSQL 18 prefers a
        // bitmap scan of each clinic's grants and a sort to the ordered read of index 068.
        await c.query("SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)");
        await c.query(`PREPARE many_clinics AS ${text}`);
        return await planOfExecute(c, `many_clinics(${params.join(', ')})`);
      } finally {
        await c.query('ROLLBACK');
      }
    });
    // Every row a scan of the grants returned: the 20 clinics' first grants, then the grants up to
    // the 4th of those (clinics 0 to 3, one each), and the reviewer's own: at most 20 + 4 x 4 + 4.
    // Reading 4 grants of each clinic named, as before, returned 84.
    const scanned = [...plan.matchAll(/Scan (?:using \S+ )?on break_glass_grants.*actual rows=(\d+(?:\.\d+)?) loops=(\d+)/g)].reduce((n, m) => n + Number(m[1]) * Number(m[2]), 0);
    expect(scanned, plan).toBeGreaterThanOrEqual(20);
    expect(scanned, plan).toBeLessThanOrEqual(20 + 4 * 4 + 4);
  });
});

describe("the contract's call and another clinic's cursor", () => {
  // c-south's queue: more grants than a page, so the unpaged call shows it answers past 50.
  const south: string[] = [];

  beforeAll(async () => {
    const [patient] = inClinic('c-south');
    await gw.admin(async (c) => {
      const { rows } = await c.query<{ id: string }>(
        `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, reason, request_id, granted_at, expires_at)
         SELECT 'dr-south-' || g, 'physician', $1, false, 'legacy reason (queue test)', 'queue-test',
                timestamptz '2026-01-06T00:00:00Z' + g * interval '1 second', timestamptz '2026-01-06T01:00:00Z'
         FROM generate_series(1, 60) g ORDER BY g RETURNING id`,
        [patient!.id],
      );
      south.push(...rows.map((r) => r.id));
    });
  });

  it('without paging arguments answers the whole queue up to 500, as before the queue paged', async () => {
    const reviewer = await compliance('compliance-queue-south-all', ['c-south']);
    const r = await gw.gql(reviewer, `{ breakGlassGrants { id } }`);
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.breakGlassGrants.map((g: { id: string }) => g.id)).toEqual(south);
    const [head] = await list(reviewer, { first: 1 });
    expect((await list(reviewer, { after: head!.cursor })).map((g) => g.id)).toEqual(south.slice(1, 51));
  });

  it("a cursor of another clinic's grant reaches none of that clinic's grants", async () => {
    const east = await compliance('compliance-queue-east-3', ['c-east']);
    const [eastGrant] = await list(east, { first: 1 });
    const reviewer = await compliance('compliance-queue-south-cursor', ['c-south']);
    for (const vars of [{ first: 100, after: eastGrant!.cursor }, { first: 100, before: eastGrant!.cursor }]) {
      const ids = (await list(reviewer, vars)).map((g) => g.id);
      expect(ids.every((id) => south.includes(id)), JSON.stringify(vars)).toBe(true);
    }
    expect((await list(reviewer, { first: 100, after: eastGrant!.cursor })).map((g) => g.id)).toEqual(south);
  });
});

describe('the arguments', () => {
  it.each([
    [{ first: 0 }, 'first must be between 1 and 100.'],
    [{ first: -3 }, 'first must be between 1 and 100.'],
    [{ first: 101 }, 'first must be between 1 and 100.'],
    [{ after: 'not-a-cursor' }, 'after must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
    [{ before: Buffer.from('grant:2:1:x').toString('base64url') }, 'before must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
    [{ after: Buffer.from('patient:00000000-0000-4000-8000-000000000001').toString('base64url') }, 'after must be the cursor of a grant this API listed (BreakGlassGrant.cursor).'],
  ])('%j is BAD_USER_INPUT naming the argument', async (vars, message) => {
    const reviewer = await compliance('compliance-queue-args', ['c-north']);
    const r = await gw.gql(reviewer, LIST, vars);
    expect(r.body.errors?.map((e) => [e.extensions?.code, e.message])).toEqual([['BAD_USER_INPUT', message]]);
  });

  it('refuses after with before, a malformed id, and id with paging arguments', async () => {
    const reviewer = await compliance('compliance-queue-args', ['c-north']);
    const [g] = await list(reviewer, { first: 1 });
    const both = await gw.gql(reviewer, LIST, { after: g!.cursor, before: g!.cursor });
    expect(both.body.errors?.map((e) => [e.extensions?.code, e.message])).toEqual([['BAD_USER_INPUT', 'Give after or before, not both.']]);
    const badId = await gw.gql(reviewer, OPEN, { id: 'nope' });
    expect(badId.body.errors?.map((e) => [e.extensions?.code, e.message])).toEqual([['BAD_USER_INPUT', 'id must be an id (a UUID).']]);
    const mixed = await gw.gql(reviewer, `query($id: ID!) { breakGlassGrants(id: $id, first: 1) { id } }`, { id: g!.id });
    expect(mixed.body.errors?.map((e) => [e.extensions?.code, e.message])).toEqual([['BAD_USER_INPUT', 'id names one grant: give it without first, after or before.']]);
  });
});
