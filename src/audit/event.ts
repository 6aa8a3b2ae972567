/**
 * What happened to one PHI field (or one write, or one key event): one audit row each. `limited`:
 * withheld, or the whole request refused, because the principal's PHI limits were reached.
 */
export type AuditAction = 'read' | 'masked' | 'denied' | 'create' | 'update' | 'key' | 'limited';

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
}

/** Facts of the request that every one of its audit rows repeats. */
export interface AuditRequest {
  readonly requestId: string;
  readonly actor: string;
  readonly actorKind: 'user' | 'partner' | 'system';
  readonly clientAddr: string | null;
}
