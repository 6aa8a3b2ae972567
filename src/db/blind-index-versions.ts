import { PhigateError } from '../errors.ts';
import type { RequestTransaction } from './transaction.ts';

/** The blind-index versions a write must compute for a clinic: `next` only while a rotation runs. */
export interface IndexVersions {
  readonly version: number;
  readonly next: number | null;
}

/**
 * Read in the writer's transaction under a shared lock that lasts until it ends, so a rotation
 * cannot start or finish between this answer and the writer's commit
 * (schema/migrations/019_blind_index_rotation.sql).
 */
export async function indexVersionsForWrite(tx: RequestTransaction, clinicId: string): Promise<IndexVersions> {
  const { rows } = await tx.query<{ version: number; next_version: number | null }>(
    'SELECT version, next_version FROM phigate.blind_index_versions_for_write($1)',
    [clinicId],
  );
  const row = rows[0];
  if (!row) throw new PhigateError('INTERNAL', 'blind-index versions could not be read');
  return { version: row.version, next: row.next_version };
}
