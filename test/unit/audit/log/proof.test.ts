import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formatCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { inclusionProof } from '../../../../src/audit/log/inclusion.ts';
import { parseVerifierKey, signNote, verifierKey, type NoteSigner } from '../../../../src/audit/log/note.ts';
import { checkInclusionProof, type InclusionProofFile } from '../../../../src/audit/log/proof.ts';
import { leafHash, rootOf } from '../../../../src/audit/log/tree.ts';

const ORIGIN = 'phigate.test/audit';
function signer(): NoteSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name: ORIGIN, publicKey: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'), sign: async (m) => sign(null, m, privateKey) };
}

async function proofOf(s: NoteSigner, index: number): Promise<InclusionProofFile> {
  const leaves = Array.from({ length: 13 }, (_, i) => Buffer.from(`{"v":1,"id":${i}}`));
  const hashes = leaves.map(leafHash);
  const note = await signNote(formatCheckpoint({ origin: ORIGIN, size: hashes.length, root: rootOf(hashes) }), s);
  return {
    format: 'phigate-audit-inclusion/1',
    eventId: String(index),
    leafIndex: index,
    leaf: leaves[index]!.toString('base64'),
    path: inclusionProof(hashes, index).map((h) => h.toString('base64')),
    checkpoint: note,
  };
}

describe('an inclusion proof checked with the public key alone', () => {
  it('holds for the event it names and fails for an edited event, index, path or checkpoint, or another key', async () => {
    const s = signer();
    const key = verifierKey(s.name, s.publicKey);
    const proof = await proofOf(s, 5);
    expect(checkInclusionProof(proof, key)).toMatchObject({ ok: true, leafIndex: 5, checkpoint: { origin: ORIGIN, size: 13 } });
    const edited = Buffer.from(proof.leaf, 'base64').toString().replace('5', '6');
    expect(checkInclusionProof({ ...proof, leaf: Buffer.from(edited).toString('base64') }, key)).toMatchObject({ ok: false });
    expect(checkInclusionProof({ ...proof, leafIndex: 4 }, key)).toMatchObject({ ok: false });
    expect(checkInclusionProof({ ...proof, path: proof.path.slice(1) }, key)).toMatchObject({ ok: false });
    expect(checkInclusionProof({ ...proof, checkpoint: proof.checkpoint.replace('\n13\n', '\n14\n') }, key)).toMatchObject({
      ok: false,
      problem: 'the checkpoint is not signed by this key',
    });
    const other = signer();
    expect(checkInclusionProof(proof, verifierKey(other.name, other.publicKey))).toMatchObject({ ok: false });
    expect(checkInclusionProof({ format: 'something else' }, key)).toMatchObject({ ok: false });
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
});
