import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { createAuditWriter } from '../../../src/audit/writer.ts';
import { createPool } from '../../../src/db/pool.ts';
import { createLogger } from '../../../src/log.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../../support/db.ts';

// 076_audit_grant_is_break_glass.sql: an event that names a grant is a break-glass event, in every
// table the writer writes, whoever writes it. A writer asked to write one that is not fails its
// batch (the request gets no data), as for any event the database refuses.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

const asApp = (sql: string, params: unknown[]) =>
  withClient(db.appUrl, (c) => c.query(sql, params).then(() => null, (e: { code: string }) => e.code));

describe('076: grant_id only on break-glass events', () => {
  it.each([false, true])('a record of one patient with a grant and break_glass %s', async (breakGlass) => {
    const code = await asApp(
      `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, purpose, break_glass, grant_id, patient_id, actions, type_names, fields, record_ids, details)
       VALUES ('c076', 'dr-076', 'user', 'treatment', $1, $2, $3, '{read}', '{Patient}', '{mrn}', '{NULL}', '{NULL}')`,
      [breakGlass, randomUUID(), randomUUID()],
    );
    expect(code).toBe(breakGlass ? null : '23514');
  });

  it.each([false, true])('a record of several patients with a grant and break_glass %s', async (breakGlass) => {
    const code = await asApp(
      `INSERT INTO phigate.audit_records_v3 (request_id, actor, actor_kind, purpose, break_glass, grant_id, patient_ids, actions, type_names, fields, record_ids, details)
       VALUES ('c076', 'dr-076', 'user', 'treatment', $1, $2, ARRAY[$3, $4]::uuid[], '{read}', '{Patient}', '{mrn}', '{NULL,NULL}', '{NULL}')`,
      [breakGlass, randomUUID(), randomUUID(), randomUUID()],
    );
    expect(code).toBe(breakGlass ? null : '23514');
  });

  it('a v1 event with a grant and no break-glass, even from the owner', async () => {
    const code = await withClient(db.adminUrl, (c) =>
      c
        .query(
          `INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, purpose, break_glass, grant_id, action, type_name)
           VALUES ('c076', 'dr-076', 'user', 'treatment', false, $1, 'read', 'Patient')`,
          [randomUUID()],
        )
        .then(() => null, (e: { code: string }) => e.code),
    );
    expect(code).toBe('23514');
  });

  it('the writer refuses the batch of such an event, and keeps nothing of it', async () => {
    const pool = createPool(db.auxUrl, { max: 1 });
    const writer = createAuditWriter({ pool, queueLimit: 10, logger: createLogger('silent'), preparedStatements: preparedStatements() });
    const requestId = `c076-${randomUUID()}`;
    const event: AuditEvent = {
      action: 'read', typeName: 'Patient', field: 'mrn', patientId: randomUUID(), recordId: null, role: 'physician', purpose: 'treatment',
      breakGlass: false, grantId: randomUUID(), detail: null,
    };
    try {
      await expect(writer.record({ requestId, actor: 'dr-076', actorKind: 'user', clientAddr: null }, [event])).rejects.toBeTruthy();
    } finally {
      await writer.close();
      await pool.end();
    }
    const kept = await withClient(db.adminUrl, async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_events WHERE request_id = $1', [requestId])).rows[0].n);
    expect(kept).toBe(0);
  });
});
