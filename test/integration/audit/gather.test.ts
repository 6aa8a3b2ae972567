import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { withClient } from '../../support/db.ts';

// The gateway tells the audit writer which reads are running (src/http/plugins/use-request-
// transaction.ts, AuditWriter.expect), so that a batch about to leave may wait for their entries.
// A read that never ends its announcement would hold every later batch of its shard back by the
// gathering bound; one that is not announced is simply not waited for.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => gw?.close());

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName ssn } }';
const north = () => gw.data.patients.filter((p) => p.clinicId === 'c-north');

async function until(what: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400 && !(await what()); i++) await new Promise((r) => setTimeout(r, 25));
  expect(await what()).toBe(true);
}

describe('reads announced to the audit writer', () => {
  it('a read is announced while it runs, and its entry ends the announcement', async () => {
    const token = await gw.tokenFor('reg-north');
    const id = north()[0]!.id;
    let answer: Promise<Awaited<ReturnType<TestGateway['gql']>>> | undefined;
    // The read's SELECT waits on the lock the test holds: the read is running, its entry not yet written.
    await withClient(gw.db.adminUrl, async (holder) => {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE phigate.patients IN ACCESS EXCLUSIVE MODE');
      answer = gw.gql(token, BY_ID, { id });
      await until(() => gw.auditWriter.stats.coming === 1);
      await holder.query('ROLLBACK');
    });
    const r = await answer!;
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data?.patient?.id).toBe(id);
    expect(gw.auditWriter.stats.coming).toBe(0);
    expect(await gw.auditRows('request_id = $1', [r.headers.get('x-request-id')])).not.toHaveLength(0);
  });

  it('reads that write no entry end their announcement too: no PHI read, a failed read; a mutation is not announced', async () => {
    const token = await gw.tokenFor('reg-north');
    const me = await gw.gql(token, '{ me { subject } }');
    expect(me.body.data?.me?.subject).toBe('reg-north');
    expect(gw.auditWriter.stats.coming).toBe(0);
    await gw.admin((c) => c.query('REVOKE SELECT ON phigate.patients FROM phigate_app'));
    try {
      const failed = await gw.gql(token, BY_ID, { id: north()[0]!.id });
      expect(failed.body.data?.patient ?? null).toBeNull();
      expect(failed.body.errors?.length).toBeGreaterThan(0);
    } finally {
      await gw.admin((c) => c.query('GRANT SELECT ON phigate.patients TO phigate_app'));
    }
    expect(gw.auditWriter.stats.coming).toBe(0);
    const created = await gw.gql(token, 'mutation ($id: ID!) { updatePatient(id: $id, input: { phone: "+1 555 0100" }) { id } }', { id: north()[1]!.id });
    expect(created.body.errors).toBeUndefined();
    expect(gw.auditWriter.stats.coming).toBe(0);
  });

  it('concurrent reads are each answered with their audit rows committed, and none is left announced', async () => {
    const token = await gw.tokenFor('reg-north');
    const ids = north().map((p) => p.id);
    const answers = await Promise.all(Array.from({ length: 24 }, (_, i) => gw.gql(token, BY_ID, { id: ids[i % ids.length] })));
    for (const r of answers) {
      expect(r.body.errors).toBeUndefined();
      expect(await gw.auditRows('request_id = $1', [r.headers.get('x-request-id')])).not.toHaveLength(0);
    }
    expect(gw.auditWriter.stats.coming).toBe(0);
  });
});
