import { describe, expect, it } from 'vitest';
import type { GrantRow } from '../../../src/db/break-glass.ts';
import { SHREDDED_VALUE } from '../../../src/crypto/envelope.ts';
import { grantTextAad, readGrantText } from '../../../src/records/grant-text.ts';
import type { RequestScope } from '../../../src/records/scope.ts';
import { CLINIC } from '../policy/fixtures.ts';
import { readScope } from './read-scope.ts';

// The read path of a grant's texts with no database: the rule decides before any key is asked for.
const GRANT = '20000000-0000-4000-8000-000000000001';
const PATIENT = '00000000-0000-4000-8000-000000000001';
const REASON = 'Unconscious, suspected overdose';

const grantRow = (over: Partial<GrantRow>): GrantRow => ({
  id: GRANT, actor: 'dr-other', role: 'physician', patient_id: PATIENT, clinic_id: CLINIC, cross_clinic: false,
  reason: null, reason_sealed: null, granted_at: new Date(), expires_at: new Date(), revoked_at: null, revoked_by: null,
  reviewed_at: null, reviewed_by: null, review_outcome: null, review_comment: null, review_comment_sealed: null, active: false, granted_us: '0',
  ...over,
});
const seal = (scope: RequestScope, text: string, rowId = GRANT) =>
  scope.cipher.encrypt(CLINIC, grantTextAad(rowId, PATIENT, 'reason'), text);
// A reader of a grant's text is shown the grant's record, under no grant: break_glass false and
// no grant_id, as every event that is not break-glass (docs/audit-log.md).
const events = (scope: RequestScope) =>
  scope.audit.events.map((e) => [e.action, e.typeName, e.field, e.patientId, e.recordId, e.breakGlass, e.grantId ?? null, e.role, e.detail ?? null]);

describe('readGrantText', () => {
  it('opens the sealed reason for a reviewer of the clinic, with one read event', async () => {
    const scope = await readScope(['compliance'], 0);
    const grant = grantRow({ reason_sealed: await seal(scope, REASON) });
    expect(await readGrantText(scope, grant, 'reason')).toBe(REASON);
    expect(events(scope)).toEqual([['read', 'BreakGlassGrant', 'reason', PATIENT, GRANT, false, null, 'compliance', null]]);
    expect(scope.budget.charges.owed.get(PATIENT)).toEqual({ fields: 1 });
  });

  it('never decrypts for anyone else: FIELD_DENIED, a denied event, no decryption attempted', async () => {
    for (const roles of [['physician'], ['registrar'], ['billing'], ['clinic_admin']]) {
      const scope = await readScope(roles, 1000);
      const grant = grantRow({ reason_sealed: await seal(scope, REASON) });
      expect(() => readGrantText(scope, grant, 'reason'), roles.join()).toThrow(expect.objectContaining({ code: 'FIELD_DENIED' }));
      expect(scope.cipher.stats.decrypts).toBe(0);
      expect(events(scope)).toEqual([['denied', 'BreakGlassGrant', 'reason', PATIENT, GRANT, false, null, null, null]]);
      expect(scope.budget.charges.values).toBe(0);
    }
  });

  it('refuses, with the key reason recorded, a reason moved from another grant or shredded', async () => {
    const scope = await readScope(['compliance'], 0);
    const moved = grantRow({ reason_sealed: await seal(scope, REASON, '20000000-0000-4000-8000-000000000002') });
    await expect(async () => readGrantText(scope, moved, 'reason')).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE', reason: 'decrypt_failed' });
    expect(() => readGrantText(scope, grantRow({ reason_sealed: SHREDDED_VALUE }), 'reason')).toThrow(expect.objectContaining({ code: 'KEY_UNAVAILABLE', reason: 'shredded' }));
    expect(scope.audit.events.map((e) => [e.action, e.detail, e.grantId ?? null])).toEqual([['refused', 'key_unavailable:decrypt_failed', null], ['refused', 'key_unavailable:shredded', null]]);
    // A failed value is excused from its read event, not charged as shown.
    expect(scope.budget.charges.failed).toBe(2);
  });

  it('shows a legacy plaintext reason under the same rule, its event marked legacy', async () => {
    const scope = await readScope(['compliance'], 0);
    expect(readGrantText(scope, grantRow({ reason: REASON }), 'reason')).toBe(REASON);
    expect(readGrantText(scope, grantRow({}), 'reviewComment')).toBeNull();
    expect(scope.audit.events.map((e) => [e.action, e.field, e.detail ?? null])).toEqual([['read', 'reason', 'legacy'], ['read', 'reviewComment', null]]);
    const denied = await readScope(['billing'], 1000);
    expect(() => readGrantText(denied, grantRow({ reason: REASON }), 'reason')).toThrow(expect.objectContaining({ code: 'FIELD_DENIED' }));
  });
});
