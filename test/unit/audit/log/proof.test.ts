import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalBytes, type CommittedAuditEvent } from '../../../../src/audit/canonical.ts';
import { decodeCanonical } from '../../../../src/audit/canonical-decode.ts';
import { formatCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { consistencyProof } from '../../../../src/audit/log/consistency.ts';
import { inclusionProof } from '../../../../src/audit/log/inclusion.ts';
import { parseVerifierKey, signNote, verifierKey, type NoteSigner } from '../../../../src/audit/log/note.ts';
import { checkProof, formatConsistencyProof, formatInclusionProof } from '../../../../src/audit/log/proof.ts';
import { leafHash, rootOf } from '../../../../src/audit/log/tree.ts';

const ORIGIN = 'phigate.test/audit';
function signer(name = ORIGIN): NoteSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name, publicKey: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'), sign: async (m) => sign(null, m, privateKey) };
}

const event = (id: number): CommittedAuditEvent => ({
  id: BigInt(id),
  occurredAtMicros: 1_796_500_000_000_000n + BigInt(id),
  requestId: `req-${id}`,
  actor: 'dr-north-1',
  actorKind: 'user',
  role: 'physician',
  purpose: 'treatment',
  breakGlass: id % 2 === 0,
  clientAddr: null,
  action: 'read',
  typeName: 'Patient',
  field: 'ssn',
  patientId: '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b',
  recordId: null,
  detail: null,
  grantId: null,
  credentialId: null,
  batchId: null,
});

const leaves = Array.from({ length: 13 }, (_, i) => canonicalBytes(event(i + 1)));
const hashes = leaves.map(leafHash);
const note = (s: NoteSigner, size: number) => signNote(formatCheckpoint({ origin: ORIGIN, size, root: rootOf(hashes, 0, size) }), s);

async function inclusion(s: NoteSigner, index: number): Promise<string> {
  return formatInclusionProof({ leaf: leaves[index]!, index, path: inclusionProof(hashes, index), checkpoint: await note(s, hashes.length) });
}

async function consistency(s: NoteSigner, oldSize: number, newSize: number): Promise<string> {
  return formatConsistencyProof({
    oldSize,
    newSize,
    path: consistencyProof(hashes.slice(0, newSize), oldSize),
    oldCheckpoint: await note(s, oldSize),
    newCheckpoint: await note(s, newSize),
  });
}

describe('an inclusion proof (C2SP tlog-proof) checked with the public key alone', () => {
  it('is the C2SP text: header, extra (the event), index, the path, an empty line, the signed checkpoint', async () => {
    const s = signer();
    const text = await inclusion(s, 5);
    const lines = text.split('\n');
    expect(lines[0]).toBe('c2sp.org/tlog-proof@v1');
    expect(lines[1]).toBe(`extra ${leaves[5]!.toString('base64')}`);
    expect(lines[2]).toBe('index 5');
    expect(lines.slice(3, 7).every((l) => Buffer.from(l, 'base64').length === 32)).toBe(true);
    expect(lines[7]).toBe('');
    expect(lines.slice(8, 11)).toEqual([ORIGIN, '13', rootOf(hashes).toString('base64')]);
  });

  it('holds for the event it names; any edit of event, index, path or checkpoint, or another key, fails', async () => {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    const text = await inclusion(s, 5);
    const ok = checkProof(text, key);
    expect(ok).toMatchObject({ ok: true, kind: 'inclusion', leafIndex: 5, checkpoint: { origin: ORIGIN, size: 13 } });
    expect(ok.ok && ok.kind === 'inclusion' && decodeCanonical(ok.leaf)?.id).toBe(6n);

    const otherEvent = text.replace(leaves[5]!.toString('base64'), leaves[6]!.toString('base64'));
    expect(checkProof(otherEvent, key)).toMatchObject({ ok: false, problem: 'the event is not entry 5 of the tree of 13 events the checkpoint signs' });
    expect(checkProof(text.replace('\nindex 5\n', '\nindex 4\n'), key)).toMatchObject({ ok: false });
    const lines = text.split('\n');
    expect(checkProof([...lines.slice(0, 3), ...lines.slice(4)].join('\n'), key)).toMatchObject({ ok: false });
    expect(checkProof(text.replace('\n13\n', '\n14\n'), key)).toMatchObject({ ok: false, problem: 'the checkpoint is not signed by this key' });
    const other = signer();
    expect(checkProof(text, verifierKey(other.name, other.publicKey))).toMatchObject({ ok: false, problem: 'the checkpoint is not signed by this key' });
    expect(checkProof(`${text}more\n`, key)).toMatchObject({ ok: false });
    expect(checkProof('{"format":"phigate-audit-inclusion/1"}\n', key)).toMatchObject({ ok: false });
    expect(checkProof(text, 'not a key')).toMatchObject({ ok: false });
  });

  it('fails for any single flipped bit of the proof text', async () => {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    const text = Buffer.from(await inclusion(s, 11));
    let accepted = 0;
    // Every byte, one bit each (bit 0 of a base64 letter swaps it for its neighbour).
    for (let i = 0; i < text.length; i++) {
      const flipped = Buffer.from(text);
      flipped[i]! ^= 0x01;
      const r = checkProof(flipped.toString('utf8'), key);
      if (r.ok) accepted++;
    }
    expect(accepted).toBe(0);
  });

  it('a checkpoint of another log (same key name, other origin) is refused', async () => {
    const s = signer('other.log');
    const proof = formatInclusionProof({
      leaf: leaves[0]!,
      index: 0,
      path: inclusionProof(hashes, 0),
      checkpoint: await signNote(formatCheckpoint({ origin: ORIGIN, size: 13, root: rootOf(hashes) }), s),
    });
    expect(checkProof(proof, verifierKey(s.name, s.publicKey))).toMatchObject({ ok: false, problem: `the checkpoint is of log ${ORIGIN}, the key of other.log` });
  });
});

describe('a consistency proof between two signed checkpoints', () => {
  it('holds for every pair of sizes of a growing log', async () => {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    for (const [m, n] of [[1, 13], [4, 13], [7, 8], [8, 13], [12, 13], [13, 13], [3, 5]] as const) {
      expect(checkProof(await consistency(s, m, n), key), `${m}..${n}`).toMatchObject({ ok: true, kind: 'consistency', older: { size: m }, newer: { size: n } });
    }
  });

  it('fails when the newer tree rewrote an old event, or the sizes or path are edited', async () => {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    const text = await consistency(s, 6, 13);
    const rewritten = [...hashes];
    rewritten[2] = leafHash(canonicalBytes({ ...event(3), actor: 'someone-else' }));
    const forged = formatConsistencyProof({
      oldSize: 6,
      newSize: 13,
      path: consistencyProof(rewritten, 6),
      oldCheckpoint: await note(s, 6),
      newCheckpoint: await signNote(formatCheckpoint({ origin: ORIGIN, size: 13, root: rootOf(rewritten) }), s),
    });
    expect(checkProof(forged, key)).toMatchObject({ ok: false, problem: 'the tree of 13 events does not extend the tree of 6 events: the log was rewritten' });
    expect(checkProof(text.replace('\nold 6\n', '\nold 5\n'), key)).toMatchObject({ ok: false });
    const lines = text.split('\n');
    expect(checkProof([...lines.slice(0, 3), ...lines.slice(4)].join('\n'), key)).toMatchObject({ ok: false });
    const flipped = Buffer.from(text);
    flipped[flipped.length - 10]! ^= 0x01;
    expect(checkProof(flipped.toString('utf8'), key)).toMatchObject({ ok: false });
  });
});

describe('canonical bytes read back', () => {
  it('give the event they encode, and refuse bytes the encoder would not make', () => {
    const bytes = canonicalBytes(event(7));
    expect(decodeCanonical(bytes)).toEqual(event(7));
    expect(decodeCanonical(bytes.subarray(0, bytes.length - 1))).toBeNull();
    expect(decodeCanonical(Buffer.concat([bytes, Buffer.from([0])]))).toBeNull();
    const badBool = Buffer.from(bytes);
    // break_glass: tag 23 bytes, id and time 9 each, then five texts (5 + length each) before it.
    const at = 23 + 9 + 9 + [5, 10, 4, 9, 9].reduce((n, l) => n + 5 + l, 0);
    expect(badBool[at]).toBe(0x02);
    badBool[at + 1] = 2;
    expect(decodeCanonical(badBool)).toBeNull();
  });
});

it('parses verifier keys whose base64 holds a +', () => {
  for (let i = 0; i < 200; i++) {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    if (key.split('+').length <= 3) continue;
    expect(parseVerifierKey(key)?.name).toBe(ORIGIN);
    return;
  }
  throw new Error('no key with a + in 200 tries');
});
