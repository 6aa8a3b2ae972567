/**
 * What happened, one audit row each:
 * - `read`, `masked`, `denied`: one PHI field value shown, shown masked, or refused by policy;
 * - `limited`: withheld, or the whole request refused, because the principal's PHI limits were reached;
 * - `create`, `update`: one field written;
 * - `search`: one lookup by an identifier (detail: its kind and outcome, never its value);
 * - `refused`: a request refused before any record was touched (authentication, MFA, role, rate),
 *   or one field admitted by policy that was not shown because its value did not open
 *   (detail `key_unavailable:<reason>`: altered or moved ciphertext, shredded or unavailable key);
 * - `key`: a key event (rotation, re-encryption, shredding);
 * - `break_glass`, `review`: an emergency grant made, ended or reviewed;
 * - `api_key`: a partner key created, rotated or revoked;
 * - `alert`: a pattern worth a person's attention (bulk reads, odd hours, denied-field spikes);
 * - `view`: a compliance query over the audit trail itself.
 */
export type AuditAction =
  | 'read'
  | 'masked'
  | 'denied'
  | 'create'
  | 'update'
  | 'key'
  | 'limited'
  | 'search'
  | 'refused'
  | 'break_glass'
  | 'review'
  | 'api_key'
  | 'alert'
  | 'view';

export interface AuditEvent {
  readonly action: AuditAction;
  readonly typeName: string;
  readonly field: string | null;
  readonly patientId: string | null;
  readonly recordId: string | null;
  /** The policy role that granted (or, for writes, performed) it; null when every role denied. */
  readonly role: string | null;
  readonly purpose: string;
  readonly breakGlass: boolean;
  /**
   * A code from a closed vocabulary saying how it ended or why (`hit`, `miss`, `ssn`,
   * `bad_signature`, `mfa_required`, ...): never a value a client sent, never PHI.
   */
  readonly detail?: string | null;
  /** The break-glass grant under which it happened. */
  readonly grantId?: string | null;
}

/** Facts of the request that every one of its audit rows repeats. */
export interface AuditRequest {
  readonly requestId: string;
  /** The subject; for a refused authentication the claimed subject, or `anonymous` when none was readable. */
  readonly actor: string;
  readonly actorKind: 'user' | 'partner' | 'system' | 'anonymous';
  readonly clientAddr: string | null;
  /** The credential used beyond the subject: a partner's API key id. */
  readonly credentialId?: string | null;
}
