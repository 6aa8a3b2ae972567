import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { createDirectRecorder } from '../../../src/audit/recorder.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

const request: AuditRequest = { requestId: 'req-recorder-1', actor: 'partner-lab', actorKind: 'partner', clientAddr: '127.0.0.1', credentialId: 'k_123' };
const search = (detail: string, grantId: string | null = null): AuditEvent => ({
  action: 'search',
  typeName: 'Query',
  field: 'patientBySsn',
  patientId: null,
  recordId: null,
  role: 'partner',
  purpose: 'TREAT',
  // An event that names a grant happened under it (076).
  breakGlass: grantId !== null,
  detail,
  grantId,
});

describe('the direct audit recorder', () => {
  let db: TestDatabase;
  let pool: Pool;
  beforeAll(async () => {
    db = await createTestDatabase();
    pool = createPool(db.appUrl, { max: 2 });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('commits every event with the request facts, the detail code, the grant and the credential', async () => {
    const grant = randomUUID();
    await createDirectRecorder(pool).record(request, [search('ssn:miss'), search('ssn:hit', grant)]);
    const rows = await withClient(db.adminUrl, async (c) => (await c.query("SELECT * FROM phigate.audit_events WHERE request_id = 'req-recorder-1' ORDER BY id")).rows);
    expect(rows.map((r) => [r.action, r.detail, r.grant_id, r.credential_id, r.actor_kind, r.actor])).toEqual([
      ['search', 'ssn:miss', null, 'k_123', 'partner', 'partner-lab'],
      ['search', 'ssn:hit', grant, 'k_123', 'partner', 'partner-lab'],
    ]);
  });

  it('refuses a detail that is not a code, so no value a client sent can land in the trail', async () => {
    await expect(createDirectRecorder(pool).record(request, [search('123-45-6789 ')])).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
  });

  it('fails closed when a trigger silently drops the record', async () => {
    await withClient(db.adminUrl, async (c) => {
      await c.query(`CREATE FUNCTION phigate.drop_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
      await c.query(`CREATE TRIGGER drop_rows BEFORE INSERT ON phigate.audit_records FOR EACH ROW EXECUTE FUNCTION phigate.drop_rows()`);
    });
    try {
      await expect(createDirectRecorder(pool).record({ ...request, requestId: 'req-recorder-2' }, [search('mrn:hit')])).rejects.toMatchObject({
        code: 'AUDIT_UNAVAILABLE',
        reason: 'audit_rows_mismatch',
      });
    } finally {
      await withClient(db.adminUrl, (c) => c.query('DROP TRIGGER drop_rows ON phigate.audit_records'));
    }
  });
});
