import { parseCheckpoint, type Checkpoint } from './checkpoint.ts';
import { verifyInclusion } from './inclusion.ts';
import { openNote, parseVerifierKey } from './note.ts';
import { leafHash } from './tree.ts';

/**
 * What `phigate audit prove` prints and `phigate audit check-proof` checks: one event's canonical
 * bytes, its place in the log, the audit path, and the signed checkpoint the path leads to. A
 * verifier needs this and the log's public key, nothing else: no database, no gateway.
 */
export interface InclusionProofFile {
  readonly format: 'phigate-audit-inclusion/1';
  readonly eventId: string;
  readonly leafIndex: number;
  /** The event's canonical bytes (src/audit/canonical.ts), base64. */
  readonly leaf: string;
  /** Audit path, base64 hashes, leaf to root. */
  readonly path: readonly string[];
  /** The signed note of the checkpoint (C2SP tlog-checkpoint + signed-note). */
  readonly checkpoint: string;
}

export type ProofCheck =
  | { readonly ok: true; readonly checkpoint: Checkpoint; readonly leafIndex: number; readonly leaf: Buffer }
  | { readonly ok: false; readonly problem: string };

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function checkInclusionProof(file: unknown, verifierKeyText: string): ProofCheck {
  const fail = (problem: string): ProofCheck => ({ ok: false, problem });
  const verifier = parseVerifierKey(verifierKeyText);
  if (verifier === null) return fail('the public key is not a signed-note Ed25519 verifier key (name+hash+key)');
  const f = file as Partial<InclusionProofFile> | null;
  if (typeof f !== 'object' || f === null || f.format !== 'phigate-audit-inclusion/1') return fail('not a phigate-audit-inclusion/1 proof');
  if (!Number.isSafeInteger(f.leafIndex) || (f.leafIndex as number) < 0) return fail('leafIndex is not a whole number');
  if (typeof f.leaf !== 'string' || !B64.test(f.leaf)) return fail('leaf is not base64');
  if (!Array.isArray(f.path) || !f.path.every((h) => typeof h === 'string' && B64.test(h) && Buffer.from(h, 'base64').length === 32)) {
    return fail('path is not a list of base64 SHA-256 hashes');
  }
  if (typeof f.checkpoint !== 'string') return fail('checkpoint is missing');
  const text = openNote(f.checkpoint, verifier);
  if (text === null) return fail('the checkpoint is not signed by this key');
  const checkpoint = parseCheckpoint(text);
  if (checkpoint === null) return fail('the signed note is not a checkpoint');
  if (checkpoint.origin !== verifier.name) return fail(`the checkpoint is of log ${checkpoint.origin}, the key of ${verifier.name}`);
  const leaf = Buffer.from(f.leaf, 'base64');
  const path = f.path.map((h) => Buffer.from(h, 'base64'));
  if (!verifyInclusion(leafHash(leaf), f.leafIndex as number, checkpoint.size, path, checkpoint.root)) {
    return fail(`event ${String(f.eventId)} is not at index ${f.leafIndex} of the tree of ${checkpoint.size} events the checkpoint signs`);
  }
  return { ok: true, checkpoint, leafIndex: f.leafIndex as number, leaf };
}
