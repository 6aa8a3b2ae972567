import { parseCheckpoint, type Checkpoint } from '../log/checkpoint.ts';
import { openNote, type Verifier } from '../log/note.ts';

/** A row of phigate.audit_checkpoints as read, none of it trusted until its note is opened. */
export interface CheckpointRow {
  readonly tree_size: string;
  readonly origin: string;
  readonly root: Buffer;
  readonly note: string;
}

export type CheckpointCheck =
  | { readonly ok: true; readonly body: Checkpoint }
  | { readonly ok: false; readonly kind: 'checkpoint_signature' | 'checkpoint_row'; readonly reason: string };

/**
 * One stored checkpoint checked with the log's public key, outside the database: its note signed
 * by the key, its body a checkpoint of this log, and the row's size, root and origin the body's.
 * What `audit verify` checks for every checkpoint, and what retention checks before one may end
 * its range.
 */
export function checkCheckpointRow(row: CheckpointRow, verifier: Verifier): CheckpointCheck {
  const text = openNote(row.note, verifier);
  if (text === null) return { ok: false, kind: 'checkpoint_signature', reason: 'its signature does not verify with the public key' };
  const body = parseCheckpoint(text);
  if (body === null || body.origin !== verifier.name) return { ok: false, kind: 'checkpoint_signature', reason: `the signed note is not a checkpoint of log ${verifier.name}` };
  if (body.size !== Number(row.tree_size) || !body.root.equals(row.root) || row.origin !== body.origin) {
    return { ok: false, kind: 'checkpoint_row', reason: "the row's size, root or origin differ from its signed note" };
  }
  return { ok: true, body };
}
