import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { createAuditWriter } from '../../../src/audit/writer.ts';
import { MIGRATIONS_DIR } from '../../../src/db/migrate.ts';
import { createPool } from '../../../src/db/pool.ts';
import { createLogger } from '../../../src/log.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../../support/db.ts';

// 054_audit_details_check.sql replaces audit_records_valid with the same rule, num_nonnulls asked
// before the PL/pgSQL details check. Replacing it re-checks every stored record: applied again to
// a trail that holds records with and without details, it must pass and leave every event as it was.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

const admin = <T>(fn: (c: import('pg').Client) => Promise<T>) => withClient(db.adminUrl, fn);
const read = (field: string, detail: string | null, recordId: string | null = null): AuditEvent => ({
  action: 'read', typeName: 'Patient', field, patientId: randomUUID(), recordId, role: 'registrar', purpose: 'treatment', breakGlass: false, detail,
});

describe('054: audit_records_valid with num_nonnulls first', () => {
  it('re-validates a trail of records with and without details, and every event reads as before', async () => {
    const pool = createPool(db.auxUrl, { max: 1 });
    const writer = createAuditWriter({ pool, queueLimit: 10, logger: createLogger('silent'), preparedStatements: preparedStatements() });
    const request = { requestId: `c054-${randomUUID()}`, actor: 'reg-054', actorKind: 'user' as const, clientAddr: null };
    await writer.record(request, [read('ssn', null), read('mrn', 'ssn:hit', randomUUID()), read('phone', null)]);
    await writer.close();
    await pool.end();
    await admin((c) => c.query(`INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail) VALUES ($1, 'reg-054', 'user', 'treatment', 'key', 'Key', 'rotate')`, [request.requestId]));
    const events = () => admin(async (c) => (await c.query('SELECT * FROM phigate.audit_events WHERE request_id = $1 ORDER BY id', [request.requestId])).rows);
    const before = await events();
    expect(before.map((e) => e.detail)).toEqual([null, 'ssn:hit', null, 'rotate']);
    const sql = await readFile(path.join(MIGRATIONS_DIR, '054_audit_details_check.sql'), 'utf8');
    await admin((c) => c.query(sql));
    expect(await events()).toEqual(before);
  });

  it('still refuses a detail outside the vocabulary among NULLs, and accepts details of only NULLs', async () => {
    const record = (details: string) =>
      withClient(db.appUrl, (c) =>
        c.query(
          `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, purpose, actions, type_names, fields, record_ids, details)
           VALUES ('c054', 'x', 'user', 'p', '{read,read}', '{Patient,Patient}', '{ssn,mrn}', '{NULL,NULL}', $1)`,
          [details],
        ).then(() => null, (e: { code: string }) => e.code),
      );
    expect(await record('{NULL,NULL}')).toBeNull();
    expect(await record('{NULL,"x;y"}')).toBe('23514');
    expect(await record('{Hit,NULL}')).toBe('23514');
  });
});
