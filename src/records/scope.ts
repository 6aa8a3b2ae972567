import type { AuditBuffer } from '../audit/buffer.ts';
import type { AuditRequest } from '../audit/event.ts';
import type { AuditRecorder } from '../audit/recorder.ts';
import type { SearchQuota } from '../db/search-quota.ts';
import type { Principal } from '../auth/principal.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import type { RequestTransaction } from '../db/transaction.ts';
import type { RequestLog } from '../log.ts';
import type { PolicySet } from '../policy/types.ts';
import type { PhiBudget } from './phi-budget.ts';
import type { PhiMinute } from './phi-minute.ts';

/**
 * Everything one request needs to touch records, with no GraphQL in it: who asks, the policy,
 * the request's transaction, the cipher, the audit buffer that will be flushed before commit and
 * the PHI this request may still show and its share of the principal's minute.
 */
export interface RequestScope {
  readonly requestId: string;
  /** Every line it writes names the request (requestLogger). */
  readonly log: RequestLog;
  readonly principal: Principal;
  readonly policy: PolicySet;
  readonly tx: RequestTransaction;
  readonly cipher: FieldCipher;
  readonly keyring: Keyring;
  readonly audit: AuditBuffer;
  /** For events outside the request's transaction (e.g. an alert that must outlive a rollback). */
  readonly recorder: AuditRecorder;
  /** Who asked and from where, as `audit` records it, for events given to `recorder`. */
  readonly auditRequest: AuditRequest;
  readonly budget: PhiBudget;
  readonly minute: PhiMinute;
  /** Searches by an identifier one principal may make per minute, across replicas (PHIGATE_SEARCHES_PER_MINUTE). */
  readonly searchesPerMinute: number;
  readonly searchQuota: SearchQuota;
}
