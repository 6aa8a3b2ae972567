import type { AuditEvent } from '../audit/event.ts';
import type { PatientFieldAad } from '../crypto/field-cipher.ts';
import type { GrantRow } from '../db/break-glass.ts';
import { PhigateError } from '../errors.ts';
import { grantTextVerdict } from '../policy/grant-text.ts';
import { refusalDetail } from './read-phi.ts';
import type { RequestScope } from './scope.ts';

/** The table a grant's texts are sealed in, as their AAD names it. */
const GRANT_TABLE = 'break_glass_grants';

/** A grant's free-text fields: each PHI, sealed under the grant's patient's key. */
export const GRANT_TEXTS = {
  reason: { column: 'reason', sealed: 'reason_sealed' },
  reviewComment: { column: 'review_comment', sealed: 'review_comment_sealed' },
} as const satisfies Record<string, { column: keyof GrantRow; sealed: keyof GrantRow }>;

export type GrantTextField = keyof typeof GRANT_TEXTS;

/** What a grant's text is bound to when sealed (AAD): this table, the text's column, the grant's row and its patient. */
export const grantTextAad = (grantId: string, patientId: string, column: (typeof GRANT_TEXTS)[GrantTextField]['column']): PatientFieldAad => ({
  table: GRANT_TABLE,
  column,
  rowId: grantId,
  patientId,
});

/**
 * A grant's reason or review comment, shown only to those policies/default.yaml names (the
 * grant's clinician, the reviewers of its clinic: src/policy/grant-text.ts) and never decrypted
 * for anyone else. Every value shown, empty or not, is counted (budget.disclose) and is a `read`
 * event of the request (committed before the answer leaves, as every read's); one refused is `denied`, one that does not open
 * (shredded patient, moved or altered ciphertext) `refused` with the key's reason. A grant from
 * before texts were sealed (066) shows its legacy plaintext under the same rule, its event
 * marked `legacy`, until `keys rotate --reencrypt` seals it.
 */
export function readGrantText(scope: RequestScope, grant: GrantRow, field: GrantTextField): string | null | Promise<string | null> {
  const verdict = grantTextVerdict(scope.policy, scope.principal, { actor: grant.actor, clinicId: grant.clinic_id });
  const event = (action: AuditEvent['action'], detail: string | null): AuditEvent => ({
    action,
    typeName: 'BreakGlassGrant',
    field,
    patientId: grant.patient_id,
    recordId: grant.id,
    role: verdict.role,
    purpose: verdict.purpose,
    // A disclosure of the grant's text, not an access under the grant: the grant is the record
    // read, and grant_id stays null as on every event that is not break-glass (docs/audit-log.md).
    breakGlass: false,
    detail,
  });
  if (!verdict.allowed) {
    scope.audit.add(event('denied', null));
    throw new PhigateError('FIELD_DENIED', `You may not see BreakGlassGrant.${field}.`);
  }
  const { column, sealed } = GRANT_TEXTS[field];
  const ciphertext = grant[sealed];
  const legacy = grant[column];
  scope.budget.disclose(grant.patient_id);
  if (ciphertext === null) {
    scope.audit.add(event('read', legacy === null ? null : 'legacy'));
    return legacy;
  }
  const refused = (err: unknown): never => {
    scope.budget.failed(grant.patient_id);
    scope.audit.add(event('refused', refusalDetail(err)));
    throw err;
  };
  try {
    const plain = scope.cipher.decryptAt(grant.clinic_id, GRANT_TABLE, column, grant.id, grant.patient_id, ciphertext);
    const shown = (p: string) => {
      scope.audit.add(event('read', null));
      return p;
    };
    return plain instanceof Promise ? plain.then(shown, refused) : shown(plain);
  } catch (err) {
    return refused(err);
  }
}
