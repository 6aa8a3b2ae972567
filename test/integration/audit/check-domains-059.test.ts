import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// 059_audit_check_domains.sql moves the per-column terms of audit_records_valid and phi_usage_valid
// into domains, which PostgreSQL keeps compiled per connection, instead of reading the constraints'
// node text back for every statement. The rules must be the same: every case below is judged by the
// rule as 054 and 051 wrote it (the expression evaluated over the case's values) and by inserting the
// case as the gateway's role, and the two verdicts must agree. The cases break each term alone.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

// 054's audit_records_valid, over $1-$7 instead of the row's columns.
const RECORD_RULE_054 = `
  $1::text = ANY ('{user,partner,system,anonymous}'::text[])
  AND array_ndims($3::text[]) = 1 AND cardinality($3::text[]) BETWEEN 1 AND 65536
  AND cardinality($4::text[]) = cardinality($3::text[]) AND cardinality($5::text[]) = cardinality($3::text[])
  AND cardinality($6::uuid[]) = cardinality($3::text[]) AND cardinality($7::text[]) = cardinality($3::text[])
  AND array_position($3::text[], NULL) IS NULL AND array_position($4::text[], NULL) IS NULL
  AND $3::text[] <@ '{read,masked,denied,create,update,key,limited,search,refused,break_glass,review,api_key,alert,view,retention}'::text[]
  AND $2::text ~ '^[A-Za-z0-9_-]{1,64}$'
  AND (num_nonnulls(VARIADIC $7::text[]) = 0 OR phigate.audit_details_valid($7::text[]))`;

// 051's phi_usage_valid, over $1-$4.
const USAGE_RULE_051 = `$1::text = ANY ('{user,partner}'::text[]) AND $2::timestamptz = date_trunc('minute', $2::timestamptz) AND $3::int >= 0 AND $4::int >= 0`;

interface Record {
  actorKind: string;
  credentialId: string | null;
  actions: string;
  typeNames: string;
  fields: string;
  recordIds: string;
  details: string;
}
const GOOD: Record = {
  actorKind: 'user', credentialId: null, actions: '{read,masked}', typeNames: '{Patient,Patient}', fields: '{ssn,mrn}', recordIds: '{NULL,NULL}', details: '{NULL,NULL}',
};
const RECORD_CASES: ReadonlyArray<[string, Partial<Record>]> = [
  ['valid, no credential', {}],
  ['valid, a credential and details', { credentialId: 'key_01-A', details: '{ssn:hit,NULL}', actorKind: 'partner' }],
  ['valid, every kind and action', { actorKind: 'anonymous', actions: '{search,retention}' }],
  ['unknown actor kind', { actorKind: 'robot' }],
  ['actor kind in another case', { actorKind: 'User' }],
  ['credential with a space', { credentialId: 'key 1' }],
  ['credential of 65 characters', { credentialId: 'k'.repeat(65) }],
  ['credential of 64 characters', { credentialId: 'k'.repeat(64) }],
  ['empty credential', { credentialId: '' }],
  ['no actions', { actions: '{}', typeNames: '{}', fields: '{}', recordIds: '{}', details: '{}' }],
  ['two-dimensional actions', { actions: '{{read},{read}}', typeNames: '{Patient,Patient}' }],
  ['a NULL action', { actions: '{read,NULL}' }],
  ['an action outside the vocabulary', { actions: '{read,write}' }],
  ['a NULL type name', { typeNames: '{Patient,NULL}' }],
  ['a NULL field (allowed)', { fields: '{ssn,NULL}' }],
  ['type names one short', { typeNames: '{Patient}' }],
  ['fields one long', { fields: '{ssn,mrn,phone}' }],
  ['record ids one short', { recordIds: '{NULL}' }],
  ['details one short', { details: '{NULL}' }],
  ['a detail outside the shape', { details: '{NULL,"x;y"}' }],
  ['an upper-case detail', { details: '{Hit,NULL}' }],
  ['an empty detail', { details: '{"",NULL}' }],
];

describe('059: audit_records_valid and phi_usage_valid through domains', () => {
  it('judges every record case as 054 did', async () => {
    let accepted = 0;
    for (const [name, change] of RECORD_CASES) {
      const r = { ...GOOD, ...change };
      const values = [r.actorKind, r.credentialId, r.actions, r.typeNames, r.fields, r.recordIds, r.details];
      const before = await withClient(db.adminUrl, async (c) => (await c.query<{ ok: boolean | null }>(`SELECT (${RECORD_RULE_054}) AS ok`, values)).rows[0]!.ok);
      const now = await withClient(db.directAppUrl, (c) =>
        c
          .query(
            `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, credential_id, purpose, actions, type_names, fields, record_ids, details)
             VALUES ('c059', 'x', $1, $2, 'p', $3, $4, $5, $6, $7)`,
            values,
          )
          .then(() => 'accepted', (e: { code: string }) => e.code),
      );
      // A CHECK refuses only on false: NULL (a NULL credential) passes, as it did.
      expect(now, name).toBe(before === false ? '23514' : 'accepted');
      if (now === 'accepted') accepted++;
    }
    // The cases exercise both verdicts, and what was accepted is stored.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(RECORD_CASES.length);
    const stored = await withClient(db.adminUrl, async (c) => (await c.query<{ n: string }>(`SELECT count(*) AS n FROM phigate.audit_records WHERE request_id = 'c059'`)).rows[0]!.n);
    expect(Number(stored)).toBe(accepted);
  });

  it('decides a detail and a credential id as the regular expressions of 035 and 028 did, for every character and length', async () => {
    // A value the domain refuses fails its cast; the probe turns that into false.
    const differing = await withClient(db.adminUrl, async (c) => {
      await c.query(`CREATE FUNCTION pg_temp.credential_ok(d text) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN PERFORM d::phigate.audit_credential_id; RETURN true; EXCEPTION WHEN check_violation THEN RETURN false; END $$`);
      return (
        await c.query<{ details: string; credentials: string; valid: string }>(
          `WITH chars AS (SELECT chr(i) AS d FROM generate_series(1, 55295) i UNION ALL SELECT chr(i) FROM generate_series(57344, 1114111, 61) i),
                cases AS (SELECT d FROM chars UNION ALL SELECT 'a' || d || 'b' FROM chars UNION ALL SELECT repeat('a', n) FROM generate_series(0, 70) n
                          UNION ALL SELECT repeat('é', n) FROM generate_series(0, 3) n UNION ALL SELECT E'ab\\n' UNION ALL SELECT E'\\nab')
           SELECT count(*) FILTER (WHERE (d ~ '^[a-z0-9_:.-]{1,64}$') IS DISTINCT FROM phigate.audit_details_valid(ARRAY[d])) AS details,
                  count(*) FILTER (WHERE (d ~ '^[A-Za-z0-9_-]{1,64}$') IS DISTINCT FROM pg_temp.credential_ok(d)) AS credentials,
                  count(*) FILTER (WHERE d ~ '^[A-Za-z0-9_-]{1,64}$') AS valid
           FROM cases`,
        )
      ).rows[0]!;
    });
    expect(Number(differing.valid)).toBeGreaterThan(100);
    expect(differing).toMatchObject({ details: '0', credentials: '0' });
  });

  it('keeps the per-column rules in the domains, which the tables\' CHECKs coerce to', async () => {
    const defs = await withClient(db.adminUrl, async (c) =>
      (await c.query<{ def: string }>(`SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname IN ('audit_records_valid', 'phi_usage_valid') ORDER BY conname`)).rows.map((r) => r.def),
    );
    for (const domain of ['audit_actions', 'audit_type_names', 'audit_details', 'audit_actor_kind', 'audit_credential_id']) expect(defs[0], domain).toContain(`phigate.${domain}`);
    expect(defs[1]).toContain('phigate.phi_usage_valid');
    // The node text PostgreSQL reads back per statement: 8.2 KB and 2.0 KB before 059.
    const sizes = await withClient(db.adminUrl, async (c) =>
      (await c.query<{ n: number }>(`SELECT length(conbin) AS n FROM pg_constraint WHERE conname IN ('audit_records_valid', 'phi_usage_valid') ORDER BY conname`)).rows.map((r) => r.n),
    );
    expect(sizes[0]).toBeLessThan(4_000);
    expect(sizes[1]).toBeLessThan(1_500);
  });

  it('checks the stored rows (060) under a lock the audit writer is not held up by', async () => {
    const validated = await withClient(db.adminUrl, async (c) =>
      (await c.query<{ name: string; ok: boolean }>(`SELECT conname AS name, convalidated AS ok FROM pg_constraint WHERE conname IN ('audit_records_valid', 'phi_usage_valid') ORDER BY conname`)).rows,
    );
    expect(validated).toEqual([
      { name: 'audit_records_valid', ok: true },
      { name: 'phi_usage_valid', ok: true },
    ]);
    // 060's statement held open in one session; a charge as the writer makes it, from another,
    // goes in meanwhile (059's ALTER ... ADD CONSTRAINT would hold ACCESS EXCLUSIVE: lock_timeout).
    await withClient(db.adminUrl, async (validating) => {
      await validating.query('BEGIN');
      try {
        await validating.query('ALTER TABLE phigate.phi_usage VALIDATE CONSTRAINT phi_usage_valid');
        await validating.query('ALTER TABLE phigate.audit_records VALIDATE CONSTRAINT audit_records_valid');
        const charged = await withClient(db.directAppUrl, async (c) => {
          await c.query(`SET lock_timeout = '2s'`);
          return c
            .query(`INSERT INTO phigate.phi_usage (actor_kind, actor, minute, rows_used, values_used) VALUES ('user', 'c060', '2026-12-06 11:00:00+00', 1, 1)`)
            .then(() => 'accepted', (e: { code: string }) => e.code);
        });
        expect(charged).toBe('accepted');
      } finally {
        await validating.query('ROLLBACK');
      }
    });
  });

  it('judges every PHI-minute row as 051 did, on insert and on update', async () => {
    const cases: ReadonlyArray<[string, string, string, number, number]> = [
      ['valid', 'user', '2026-12-06 10:00:00+00', 1, 1],
      ['a partner', 'partner', '2026-12-06 10:01:00+00', 0, 0],
      ['a system actor', 'system', '2026-12-06 10:02:00+00', 1, 1],
      ['a minute with seconds', 'user', '2026-12-06 10:03:30+00', 1, 1],
      ['negative rows', 'user', '2026-12-06 10:04:00+00', -1, 1],
      ['negative values', 'user', '2026-12-06 10:05:00+00', 1, -1],
    ];
    for (const [name, kind, minute, rows, values] of cases) {
      const params = [kind, minute, rows, values];
      const before = await withClient(db.adminUrl, async (c) => (await c.query<{ ok: boolean }>(`SELECT (${USAGE_RULE_051}) AS ok`, params)).rows[0]!.ok);
      const now = await withClient(db.directAppUrl, (c) =>
        c
          .query(`INSERT INTO phigate.phi_usage (actor_kind, actor, minute, rows_used, values_used) VALUES ($1, 'c059', $2, $3, $4)`, params)
          .then(() => 'accepted', (e: { code: string }) => e.code),
      );
      expect(now, name).toBe(before ? 'accepted' : '23514');
    }
    // An update is checked too (the writer's charge is an INSERT ... ON CONFLICT DO UPDATE).
    const update = await withClient(db.directAppUrl, (c) =>
      c
        .query(`UPDATE phigate.phi_usage SET rows_used = rows_used - 5 WHERE actor = 'c059' AND actor_kind = 'user'`)
        .then(() => 'accepted', (e: { code: string }) => e.code),
    );
    expect(update).toBe('23514');
  });
});
