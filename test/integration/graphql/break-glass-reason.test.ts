import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHREDDED_VALUE } from '../../../src/crypto/envelope.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { createPgKeyStore } from '../../../src/db/key-store.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import type { KeyAdmin } from '../../../src/records/key-admin.ts';
import { pendingReencryption, reencryptClinic } from '../../../src/records/reencrypt.ts';
import { retireDataKey } from '../../../src/records/retire-key.ts';
import { shredPatient } from '../../../src/records/shred-patient.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { codesOf } from '../../support/gql-expect.ts';

// A break-glass reason and a review comment are PHI (schema/migrations/066_break_glass_sealed_text.sql):
// sealed under the patient's key and bound to the grant, shredded with the patient, shown only to
// the grant's clinician and the reviewers of its clinic, each value shown an audit row committed
// with the answer; legacy plaintext rows stay readable until `keys rotate --reencrypt` seals them.

const BREAK = `mutation($id: ID!, $reason: String!) { breakGlass(patientId: $id, reason: $reason) { id reason } }`;
const GRANTS = `query { breakGlassGrants { id patientId reason reviewComment } }`;
const REVIEW = `mutation($id: ID!, $o: String!, $c: String) { reviewBreakGlass(id: $id, outcome: $o, comment: $c) { id reviewOutcome reviewComment } }`;
const REASON = 'Unconscious, suspected overdose, family says HIV+ (test reason)';
const COMMENT = 'Confirmed with the ED charge nurse; toxicology pending (test comment)';

let gw: TestGateway;
let adminPool: Pool;
let admin: KeyAdmin;

beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
  adminPool = createPool(gw.db.adminUrl, { max: 2 });
  admin = { pool: adminPool, actor: 'cli:bgreason-test' };
});
afterAll(async () => {
  await adminPool?.end();
  await gw?.close();
});

const inClinic = (clinic: string): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === clinic);
let used = 0;
/** A c-north patient no other test here used (the clinicians breaking the glass here are on no care team). */
const nextPatient = (): SeedPatient => inClinic('c-north')[used++]!;
const stored = (id: string) =>
  gw.admin(async (c) => (await c.query('SELECT reason, reason_sealed, review_comment, review_comment_sealed FROM phigate.break_glass_grants WHERE id = $1', [id])).rows[0]);
const decrypts = (column: string) => gw.cipher.stats.decryptsByColumn.get(`break_glass_grants.${column}`) ?? 0;
const textEvents = (grantId: string) => gw.auditRows("type_name = 'BreakGlassGrant' AND field IS NOT NULL AND record_id = $1", [grantId]);
const compliance = (sub: string, clinics: string[]) => gw.issuer.token({ sub, roles: ['compliance'], clinics, mfa: true });

/** A new clinician (daily limits are per clinician) opens a grant on a fresh patient. */
async function open(reason = REASON): Promise<{ id: string; patient: SeedPatient; actor: string; token: string }> {
  const patient = nextPatient();
  const actor = `dr-reason-${used}`;
  const token = await gw.issuer.token({ sub: actor, roles: ['physician'], clinics: ['c-north'], mfa: true });
  const r = await gw.gql(token, BREAK, { id: patient.id, reason });
  expect(r.body.errors, r.text).toBeUndefined();
  return { id: r.body.data!.breakGlass.id, patient, actor, token };
}

/** A grant as it was written before 066: plaintext reason and comment, inserted by the owner. */
async function legacyGrant(reason: string, comment: string | null): Promise<{ id: string; patient: SeedPatient }> {
  const patient = nextPatient();
  const id = await gw.admin(async (c) => {
    const r = await c.query<{ id: string }>(
      `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, reason, request_id, granted_at, expires_at, reviewed_at, reviewed_by, review_outcome, review_comment)
       VALUES ('dr-legacy', 'physician', $1, false, $2, 'legacy', now() - interval '2 hours', now() - interval '1 hour',
               CASE WHEN $3::text IS NULL THEN NULL ELSE now() END, CASE WHEN $3::text IS NULL THEN NULL ELSE 'compliance-old' END,
               CASE WHEN $3::text IS NULL THEN NULL ELSE 'justified' END, $3)
       RETURNING id`,
      [patient.id, reason, comment],
    );
    return r.rows[0]!.id;
  });
  return { id, patient };
}

describe('a break-glass reason is sealed PHI', () => {
  it('is stored sealed under the patient key, shown to its clinician and its clinic reviewers with an audit row each', async () => {
    const grant = await open();
    const row = await stored(grant.id);
    expect(row.reason).toBeNull();
    expect(Buffer.isBuffer(row.reason_sealed) && row.reason_sealed[0]).toBe(2);
    expect(row.reason_sealed.includes(Buffer.from('overdose'))).toBe(false);

    // The clinician saw it in the answer, and that is on record, committed before the answer left.
    const [actorRead] = await textEvents(grant.id);
    expect(actorRead).toMatchObject({
      actor: grant.actor, action: 'read', type_name: 'BreakGlassGrant', field: 'reason', patient_id: grant.patient.id, record_id: grant.id,
      grant_id: null, role: 'physician', purpose: 'treatment', break_glass: false, detail: null,
    });

    // A reviewer of the clinic: reason and comment, one read event per value.
    const reviewer = await compliance('compliance-north', ['c-north']);
    const reviewed = await gw.gql(reviewer, REVIEW, { id: grant.id, o: 'justified', c: COMMENT });
    expect(reviewed.body.data?.reviewBreakGlass).toMatchObject({ reviewOutcome: 'justified', reviewComment: COMMENT });
    const comment = await stored(grant.id);
    expect(comment.review_comment).toBeNull();
    expect(comment.review_comment_sealed.includes(Buffer.from('toxicology'))).toBe(false);
    const before = decrypts('reason');
    const listed = await gw.gql(reviewer, GRANTS, {});
    expect(listed.body.errors, listed.text).toBeUndefined();
    expect(listed.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === grant.id)).toMatchObject({ reason: REASON, reviewComment: COMMENT });
    expect(decrypts('reason')).toBeGreaterThan(before);
    const reads = (await textEvents(grant.id)).filter((e) => e.actor === 'compliance-north' && e.action === 'read');
    expect(reads.map((e) => e.field).sort()).toEqual(['reason', 'reviewComment', 'reviewComment']);
    for (const e of reads) expect(e).toMatchObject({ role: 'compliance', purpose: 'healthcare_operations', patient_id: grant.patient.id, grant_id: null, break_glass: false, detail: null });

    // Nothing of either text in the audit trail or the logs.
    const everything = JSON.stringify(await gw.auditRows()) + JSON.stringify(gw.logs);
    expect(everything).not.toContain('overdose');
    expect(everything).not.toContain('toxicology');
  });

  it('is never decrypted for a reviewer of another clinic: the grant is not theirs to list or review', async () => {
    const grant = await open();
    const south = await compliance('compliance-south', ['c-south']);
    const before = decrypts('reason') + decrypts('review_comment');
    const listed = await gw.gql(south, GRANTS, {});
    expect(listed.body.errors, listed.text).toBeUndefined();
    expect(listed.body.data!.breakGlassGrants.map((g: { id: string }) => g.id)).not.toContain(grant.id);
    const review = await gw.gql(south, REVIEW, { id: grant.id, o: 'unjustified', c: 'looks wrong' });
    expect(codesOf(review)).toEqual(['BAD_USER_INPUT']);
    expect(decrypts('reason') + decrypts('review_comment')).toBe(before);
    expect((await textEvents(grant.id)).filter((e) => e.actor === 'compliance-south')).toEqual([]);
    expect((await stored(grant.id)).review_comment_sealed).toBeNull();
  });

  it('keeps the bounds: more than 1000 characters is BAD_USER_INPUT, and no grant is left', async () => {
    const patient = nextPatient();
    const token = await gw.issuer.token({ sub: 'dr-reason-long', roles: ['physician'], clinics: ['c-north'], mfa: true });
    const r = await gw.gql(token, BREAK, { id: patient.id, reason: 'x'.repeat(1001) });
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.text).not.toContain('xxxxxxxxxx');
    const n = await gw.admin(async (c) => (await c.query(`SELECT count(*)::int AS n FROM phigate.break_glass_grants WHERE actor = 'dr-reason-long'`)).rows[0].n);
    expect(n).toBe(0);
  });

  it('does not open when moved onto another grant', async () => {
    const a = await open();
    const b = await open('A different emergency entirely, no physician reachable');
    // The owner copies a's sealed reason onto b, the guard trigger off (as an attacker with the database would).
    await gw.admin(async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL session_replication_role = replica');
      await c.query('UPDATE phigate.break_glass_grants SET reason_sealed = (SELECT reason_sealed FROM phigate.break_glass_grants WHERE id = $1) WHERE id = $2', [a.id, b.id]);
      await c.query('COMMIT');
    });
    const r = await gw.gql(b.token, GRANTS, {});
    const shown = r.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === b.id);
    expect(shown.reason).toBeNull();
    expect(JSON.stringify(r.body)).not.toContain('overdose');
    expect(r.body.errors).toContainEqual(expect.objectContaining({ extensions: expect.objectContaining({ code: 'KEY_UNAVAILABLE' }) }));
    const refused = (await textEvents(b.id)).filter((e) => e.action === 'refused');
    expect(refused).toEqual([expect.objectContaining({ field: 'reason', detail: 'key_unavailable:decrypt_failed', actor: b.actor })]);
  });

  it("is unreadable once the patient's key is shredded, as the patient's other fields are", async () => {
    const grant = await open();
    const reviewer = await compliance('compliance-north-2', ['c-north']);
    expect(codesOf(await gw.gql(reviewer, REVIEW, { id: grant.id, o: 'needs_follow_up', c: COMMENT }))).toEqual([]);
    expect(await shredPatient(admin, grant.patient.id)).toBe('shredded');
    const row = await stored(grant.id);
    expect(row).toEqual({ reason: null, reason_sealed: SHREDDED_VALUE, review_comment: null, review_comment_sealed: SHREDDED_VALUE });
    const r = await gw.gql(reviewer, GRANTS, {});
    const shown = r.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === grant.id);
    expect(shown).toMatchObject({ reason: null, reviewComment: null });
    const errors = r.body.errors!.filter((e) => e.path?.[1] === r.body.data!.breakGlassGrants.indexOf(shown));
    expect(errors.map((e) => [e.extensions?.code, e.extensions?.reason]).sort()).toEqual([
      ['KEY_UNAVAILABLE', 'shredded'],
      ['KEY_UNAVAILABLE', 'shredded'],
    ]);
    const refused = (await textEvents(grant.id)).filter((e) => e.action === 'refused' && e.actor === 'compliance-north-2');
    expect(refused.map((e) => [e.field, e.detail]).sort()).toEqual([['reason', 'key_unavailable:shredded'], ['reviewComment', 'key_unavailable:shredded']]);
  });

  it('refuses to open a grant on a shredded patient and leaves nothing of the request', async () => {
    const patient = nextPatient();
    await shredPatient(admin, patient.id);
    const token = await gw.issuer.token({ sub: 'dr-reason-shredded', roles: ['physician'], clinics: ['c-north'], mfa: true });
    const r = await gw.gql(token, BREAK, { id: patient.id, reason: REASON });
    expect(codesOf(r)).toEqual(['KEY_UNAVAILABLE']);
    const n = await gw.admin(async (c) => (await c.query(`SELECT count(*)::int AS n FROM phigate.break_glass_grants WHERE actor = 'dr-reason-shredded'`)).rows[0].n);
    expect(n).toBe(0);
  });
});

describe('grants from before reasons were sealed', () => {
  it('are shown as legacy until keys rotate --reencrypt seals them; then the plaintext columns hold nothing', async () => {
    const legacy = await legacyGrant('Legacy reason: collapsed in the waiting room', 'Legacy comment: fine');
    const reviewer = await compliance('compliance-legacy', ['c-north']);
    const before = await gw.gql(reviewer, GRANTS, {});
    expect(before.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === legacy.id)).toMatchObject({
      reason: 'Legacy reason: collapsed in the waiting room',
      reviewComment: 'Legacy comment: fine',
    });
    expect((await textEvents(legacy.id)).map((e) => [e.field, e.action, e.detail]).sort()).toEqual([
      ['reason', 'read', 'legacy'],
      ['reviewComment', 'read', 'legacy'],
    ]);
    // A shredded patient's legacy text is not sealed but marked: its plaintext must not outlive the key.
    const shreddedLegacy = await legacyGrant('Legacy reason of a patient since erased', null);
    await gw.admin((c) => c.query(`UPDATE phigate.patient_keys SET wrapped = NULL, shredded_at = now() WHERE patient_id = $1`, [shreddedLegacy.patient.id]));

    const pending = await pendingReencryption(admin, 'c-north');
    expect(pending.grants).toBeGreaterThanOrEqual(2);
    const progress: [number, number][] = [];
    const keyring = createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) });
    const result = await reencryptClinic({ admin, keyring, clinicId: 'c-north', batchSize: 1, onProgress: (d, t) => progress.push([d, t]) });
    expect(result.remainingGrants).toBe(0);
    expect(result.grants).toBeGreaterThanOrEqual(2);
    expect(progress.at(-1)![0]).toBe(progress.at(-1)![1]);
    expect((await pendingReencryption(admin, 'c-north')).grants).toBe(0);

    const sealed = await stored(legacy.id);
    expect(sealed.reason).toBeNull();
    expect(sealed.review_comment).toBeNull();
    expect(sealed.reason_sealed[0]).toBe(2);
    expect(sealed.reason_sealed.includes(Buffer.from('waiting room'))).toBe(false);
    expect(await stored(shreddedLegacy.id)).toMatchObject({ reason: null, reason_sealed: SHREDDED_VALUE });
    const keyEvents = await gw.auditRows("action = 'key' AND type_name = 'BreakGlassGrant' AND record_id = $1", [legacy.id]);
    expect(keyEvents.map((e) => [e.field, e.detail, e.grant_id, e.break_glass]).sort()).toEqual([['reason', 'sealed', null, false], ['reviewComment', 'sealed', null, false]]);

    // The same text, now from the ciphertext, not marked legacy.
    const after = await gw.gql(reviewer, GRANTS, {});
    expect(after.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === legacy.id)).toMatchObject({
      reason: 'Legacy reason: collapsed in the waiting room',
      reviewComment: 'Legacy comment: fine',
    });
    const reads = (await textEvents(legacy.id)).filter((e) => e.action === 'read');
    expect(reads.filter((e) => e.detail === null).map((e) => e.field).sort()).toEqual(['reason', 'reviewComment']);
  });

  it('after a clinic key rotation, re-encryption moves a sealed reason onto the new version, and retiring the old waits for it', async () => {
    const clinic = 'c-south';
    const patient = inClinic(clinic)[0]!;
    const token = await gw.issuer.token({ sub: 'dr-reason-rotate', roles: ['physician'], clinics: [clinic], mfa: true });
    const r = await gw.gql(token, BREAK, { id: patient.id, reason: REASON });
    expect(r.body.errors, r.text).toBeUndefined();
    const id: string = r.body.data!.breakGlass.id;
    const keyring = createKeyring({ provider: gw.keyProvider, store: createPgKeyStore(adminPool) });
    const sealedBefore: Buffer = (await stored(id)).reason_sealed;
    const version = sealedBefore.readUInt32BE(1);
    expect(await keyring.rotate('data', clinic)).toBe(version + 1);
    expect((await pendingReencryption(admin, clinic)).grants).toBe(1);
    await reencryptClinic({ admin, keyring, clinicId: clinic, batchSize: 50 });
    expect((await pendingReencryption(admin, clinic)).grants).toBe(0);

    // Every patient value moved and the grant's old reason put back (a restore, say): retiring the old version is refused for it alone.
    await gw.admin((c) => c.query(`UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1`, [id, sealedBefore]));
    await expect(retireDataKey(admin, clinic, version, 0)).rejects.toThrow(/1 rows of c-south still use data key version/);
    await reencryptClinic({ admin, keyring, clinicId: clinic, batchSize: 50 });
    expect((await stored(id)).reason_sealed.readUInt32BE(1)).toBe(version + 1);
    const keyEvents = await gw.auditRows("action = 'key' AND type_name = 'BreakGlassGrant' AND record_id = $1", [id]);
    expect(keyEvents.map((e) => e.detail)).toContain('reencrypted');
    const listed = await gw.gql(token, GRANTS, {});
    expect(listed.body.data!.breakGlassGrants.find((g: { id: string }) => g.id === id)).toMatchObject({ reason: REASON });
    await retireDataKey(admin, clinic, version, 0);
    expect((await gw.gql(token, GRANTS, {})).body.data!.breakGlassGrants.find((g: { id: string }) => g.id === id)).toMatchObject({ reason: REASON });
  });
});
