import { parseCheckpoint, type Checkpoint } from './checkpoint.ts';
import { verifyConsistency } from './consistency.ts';
import { verifyInclusion } from './inclusion.ts';
import { openNote, parseVerifierKey, type Verifier } from './note.ts';
import { leafHash } from './tree.ts';

/**
 * What `phigate audit prove` prints and `phigate audit check-proof` checks, as text a person can
 * read and a verifier can check with the log's public key alone: no database, no gateway.
 *
 * An inclusion proof is a C2SP tlog-proof (c2sp.org/tlog-proof@v1), so that any verifier of that
 * format can check it: the header line; `extra` and the base64 of the event's canonical bytes
 * (src/audit/canonical.ts), whose leaf hash the proof is about; `index` and the event's leaf index;
 * the audit path, one base64 SHA-256 hash a line, leaf to root; an empty line; the signed
 * checkpoint, verbatim.
 *
 * A consistency proof (no C2SP format exists for one) reads the same way: the header line
 * `phigate.audit/consistency-proof@v1`; `old N` and `new M`, the two tree sizes; the RFC 9162
 * consistency path, one hash a line; an empty line; the older signed checkpoint; an empty line;
 * the newer signed checkpoint.
 */
export const INCLUSION_HEADER = 'c2sp.org/tlog-proof@v1';
export const CONSISTENCY_HEADER = 'phigate.audit/consistency-proof@v1';

const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

export interface InclusionProofParts {
  /** The event's canonical bytes. */
  readonly leaf: Buffer;
  readonly index: number;
  readonly path: readonly Uint8Array[];
  /** The signed note of the checkpoint. */
  readonly checkpoint: string;
}

export interface ConsistencyProofParts {
  readonly path: readonly Uint8Array[];
  readonly oldCheckpoint: string;
  readonly newCheckpoint: string;
}

const hashLines = (path: readonly Uint8Array[]) => path.map((h) => `${Buffer.from(h).toString('base64')}\n`).join('');

export function formatInclusionProof(p: InclusionProofParts): string {
  return `${INCLUSION_HEADER}\nextra ${p.leaf.toString('base64')}\nindex ${p.index}\n${hashLines(p.path)}\n${p.checkpoint}`;
}

export function formatConsistencyProof(p: ConsistencyProofParts & { readonly oldSize: number; readonly newSize: number }): string {
  return `${CONSISTENCY_HEADER}\nold ${p.oldSize}\nnew ${p.newSize}\n${hashLines(p.path)}\n${p.oldCheckpoint}\n${p.newCheckpoint}`;
}

export type ProofCheck =
  | {
      readonly ok: true;
      readonly kind: 'inclusion';
      readonly checkpoint: Checkpoint;
      readonly leafIndex: number;
      /** The event's canonical bytes, now known to be that leaf of the signed tree. */
      readonly leaf: Buffer;
    }
  | { readonly ok: true; readonly kind: 'consistency'; readonly older: Checkpoint; readonly newer: Checkpoint }
  | { readonly ok: false; readonly problem: string };

class ProofFormatError extends Error {}

/** Reads `<word> <value>` where the format requires it. */
function field(lines: string[], at: number, word: string): string {
  const line = lines[at];
  if (line === undefined || !line.startsWith(`${word} `)) throw new ProofFormatError(`line ${at + 1} should start with "${word} "`);
  return line.slice(word.length + 1);
}

function decimal(text: string, name: string): number {
  if (!DECIMAL.test(text) || !Number.isSafeInteger(Number(text))) throw new ProofFormatError(`${name} is not a whole number`);
  return Number(text);
}

/** Hash lines from `at` up to the first empty line; returns them and the index of that line. */
function hashes(lines: string[], at: number): { path: Buffer[]; end: number } {
  const path: Buffer[] = [];
  let i = at;
  for (; i < lines.length && lines[i] !== ''; i++) {
    const raw = Buffer.from(lines[i]!, 'base64');
    if (raw.length !== 32 || raw.toString('base64') !== lines[i]) throw new ProofFormatError(`line ${i + 1} is not a base64 SHA-256 hash`);
    path.push(raw);
  }
  if (i >= lines.length) throw new ProofFormatError('the proof ends before its checkpoint (an empty line, then the signed note)');
  return { path, end: i };
}

/**
 * Splits a signed note off the front of `lines` (its text lines, an empty line, its signature
 * lines, each starting with an em dash); returns it with a final newline and what is left.
 */
function takeNote(lines: string[]): { note: string; rest: string[] } {
  const blank = lines.indexOf('');
  if (blank < 1) throw new ProofFormatError('a checkpoint is not a signed note');
  let end = blank + 1;
  while (end < lines.length && lines[end]!.startsWith('\u2014 ')) end++;
  if (end === blank + 1) throw new ProofFormatError('a checkpoint carries no signature');
  return { note: `${lines.slice(0, end).join('\n')}\n`, rest: lines.slice(end) };
}

function openCheckpoint(note: string, verifier: Verifier, which: string): Checkpoint {
  const text = openNote(note, verifier);
  if (text === null) throw new ProofFormatError(`the ${which} is not signed by this key`);
  const checkpoint = parseCheckpoint(text);
  if (checkpoint === null) throw new ProofFormatError(`the ${which}'s signed note is not a checkpoint`);
  if (checkpoint.origin !== verifier.name) throw new ProofFormatError(`the ${which} is of log ${checkpoint.origin}, the key of ${verifier.name}`);
  return checkpoint;
}

function checkInclusion(lines: string[], verifier: Verifier): ProofCheck {
  const extra = field(lines, 1, 'extra');
  const leaf = Buffer.from(extra, 'base64');
  if (leaf.length === 0 || leaf.toString('base64') !== extra) throw new ProofFormatError('extra is not the base64 of the event');
  const index = decimal(field(lines, 2, 'index'), 'index');
  const { path, end } = hashes(lines, 3);
  const { note, rest } = takeNote(lines.slice(end + 1));
  if (rest.length !== 1 || rest[0] !== '') throw new ProofFormatError('text follows the checkpoint');
  const checkpoint = openCheckpoint(note, verifier, 'checkpoint');
  if (!verifyInclusion(leafHash(leaf), index, checkpoint.size, path, checkpoint.root)) {
    return { ok: false, problem: `the event is not entry ${index} of the tree of ${checkpoint.size} events the checkpoint signs` };
  }
  return { ok: true, kind: 'inclusion', checkpoint, leafIndex: index, leaf };
}

function checkConsistency(lines: string[], verifier: Verifier): ProofCheck {
  const oldSize = decimal(field(lines, 1, 'old'), 'old');
  const newSize = decimal(field(lines, 2, 'new'), 'new');
  const { path, end } = hashes(lines, 3);
  const first = takeNote(lines.slice(end + 1));
  if (first.rest[0] !== '') throw new ProofFormatError('an empty line must separate the two checkpoints');
  const second = takeNote(first.rest.slice(1));
  if (second.rest.length !== 1 || second.rest[0] !== '') throw new ProofFormatError('text follows the second checkpoint');
  const older = openCheckpoint(first.note, verifier, 'older checkpoint');
  const newer = openCheckpoint(second.note, verifier, 'newer checkpoint');
  if (older.size !== oldSize || newer.size !== newSize) throw new ProofFormatError('old and new do not match the sizes the checkpoints sign');
  if (!verifyConsistency(oldSize, newSize, path, older.root, newer.root)) {
    return { ok: false, problem: `the tree of ${newSize} events does not extend the tree of ${oldSize} events: the log was rewritten` };
  }
  return { ok: true, kind: 'consistency', older, newer };
}

/** Checks either kind of proof against the log's verifier key (`<name>+<hash>+<key>`). */
export function checkProof(text: string, verifierKeyText: string): ProofCheck {
  const verifier = parseVerifierKey(verifierKeyText);
  if (verifier === null) return { ok: false, problem: 'the public key is not a signed-note Ed25519 verifier key (name+hash+key)' };
  if (!text.endsWith('\n')) return { ok: false, problem: 'a proof ends with a newline' };
  const lines = text.split('\n');
  try {
    if (lines[0] === INCLUSION_HEADER) return checkInclusion(lines, verifier);
    if (lines[0] === CONSISTENCY_HEADER) return checkConsistency(lines, verifier);
    return { ok: false, problem: `not a proof: the first line is neither ${INCLUSION_HEADER} nor ${CONSISTENCY_HEADER}` };
  } catch (e) {
    if (e instanceof ProofFormatError) return { ok: false, problem: e.message };
    throw e;
  }
}
