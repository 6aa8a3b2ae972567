import { randomBytes } from 'node:crypto';
import { createAuditBuffer } from '../../../src/audit/buffer.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { loadPolicy } from '../../../src/policy/load.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import { createPhiBudget } from '../../../src/records/phi-budget.ts';
import type { RequestScope } from '../../../src/records/scope.ts';
import { createMemoryKeyStore } from '../crypto/keyring-contract.ts';
import { DEFAULT_POLICY_FILE, principal } from '../policy/fixtures.ts';

/**
 * What readPhi needs of a request, with no database: the default policy, a keyring over a local
 * provider and a memory store, a budget allowing 100 rows and `values` values, an audit buffer.
 */
export async function readScope(roles: readonly string[], values: number): Promise<RequestScope> {
  const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store: createMemoryKeyStore() });
  const budget = createPhiBudget();
  budget.allow({ rows: 100, values, rowsReason: 'phi_request_cap', valuesReason: 'phi_request_cap' });
  return {
    principal: principal(roles),
    policy: await loadPolicy(DEFAULT_POLICY_FILE, PHI_FIELDS),
    cipher: createFieldCipher(keyring),
    keyring,
    budget,
    audit: createAuditBuffer({ requestId: 'r-1', actor: 'user-1', actorKind: 'user', clientAddr: null }),
  } as unknown as RequestScope;
}
