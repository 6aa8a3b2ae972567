import { formatCheckpoint } from '../../src/audit/log/checkpoint.ts';
import { signNote, type NoteSigner } from '../../src/audit/log/note.ts';
import { latestHead } from '../../src/audit/log/seal.ts';
import type { Pool } from '../../src/db/pool.ts';

/**
 * Signs the latest head as the checkpointer would have at `at`: how a test makes a log that was
 * signed years ago, which retention may then remove (docs/audit-log.md). The test holds the
 * signing key; nobody without it can make such a note. `at` null: without a time line, as
 * checkpoints were signed before it existed.
 */
export async function checkpointSignedAt(pool: Pool, signer: NoteSigner, at: Date | null): Promise<number> {
  const head = await latestHead(pool);
  const body = { origin: signer.name, size: head.size, root: head.root };
  const note = await signNote(formatCheckpoint(at === null ? body : { ...body, time: at.getTime() }), signer);
  await pool.query('INSERT INTO phigate.audit_checkpoints (tree_size, origin, root, note) VALUES ($1, $2, $3, $4)', [String(head.size), signer.name, head.root, note]);
  return head.size;
}
