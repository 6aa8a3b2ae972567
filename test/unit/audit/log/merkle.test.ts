import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { consistencyProof, verifyConsistency } from '../../../../src/audit/log/consistency.ts';
import { inclusionProof, verifyInclusion } from '../../../../src/audit/log/inclusion.ts';
import { EMPTY_ROOT, growingTree, leafHash, nodeHash, rootOf } from '../../../../src/audit/log/tree.ts';

// RFC 6962's definition, written the way the RFC states it (recursive split at the largest power
// of two below n), as the reference the iterative code must agree with.
function mth(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  if (leaves.length === 1) return leafHash(leaves[0]!);
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

const leavesOf = (n: number) => Array.from({ length: n }, (_, i) => Buffer.from(`event ${i}`));

describe('the Merkle tree of RFC 6962', () => {
  it('matches the test vector of certificate-transparency-go for the empty tree and one leaf', () => {
    expect(EMPTY_ROOT.toString('hex')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(leafHash(Buffer.alloc(0)).toString('hex')).toBe('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
  });

  it('computes the same root as the recursive definition, in one pass and growing leaf by leaf', () => {
    for (let n = 0; n <= 70; n++) {
      const leaves = leavesOf(n);
      const hashes = leaves.map(leafHash);
      const growing = growingTree();
      for (const h of hashes) growing.append(h);
      expect(rootOf(hashes).equals(mth(leaves)), `n=${n}`).toBe(true);
      expect(growing.root().equals(mth(leaves)), `n=${n}`).toBe(true);
      expect(growing.size).toBe(n);
    }
  });

  it('resumes a tree from its size and frontier and grows it to the same roots', () => {
    for (let split = 0; split <= 40; split++) {
      const hashes = leavesOf(70).map(leafHash);
      const first = growingTree();
      for (const h of hashes.slice(0, split)) first.append(h);
      const resumed = growingTree({ size: split, frontier: first.frontier() });
      expect(resumed.root().equals(rootOf(hashes, 0, split)), `split=${split}`).toBe(true);
      for (const h of hashes.slice(split)) resumed.append(h);
      expect(resumed.root().equals(rootOf(hashes)), `split=${split}`).toBe(true);
    }
    const three = growingTree();
    for (const h of leavesOf(3).map(leafHash)) three.append(h);
    expect(() => growingTree({ size: 4, frontier: three.frontier() })).toThrow(RangeError);
  });

  // A wrong size is not refused by the path alone (index 0 of 3 and of 4 can share one): the size
  // a verifier uses is the one the signed checkpoint states, never the prover's word.
  it('proves every leaf of every tree up to 40 leaves, and refuses a wrong leaf, index or root', () => {
    for (let n = 1; n <= 40; n++) {
      const hashes = leavesOf(n).map(leafHash);
      const root = rootOf(hashes);
      for (let i = 0; i < n; i++) {
        const proof = inclusionProof(hashes, i);
        expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(n)));
        expect(verifyInclusion(hashes[i]!, i, n, proof, root), `n=${n} i=${i}`).toBe(true);
        expect(verifyInclusion(leafHash(Buffer.from('forged')), i, n, proof, root)).toBe(false);
        if (n > 1) expect(verifyInclusion(hashes[i]!, (i + 1) % n, n, proof, root)).toBe(false);
        expect(verifyInclusion(hashes[i]!, i, n, proof, randomBytes(32))).toBe(false);
      }
    }
  });

  it('proves every old tree a prefix of every newer one up to 40 leaves, and refuses a rewritten history', () => {
    for (let n = 1; n <= 40; n++) {
      const hashes = leavesOf(n).map(leafHash);
      const newRoot = rootOf(hashes);
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(hashes, m);
        const oldRoot = rootOf(hashes, 0, m);
        expect(verifyConsistency(m, n, proof, oldRoot, newRoot), `m=${m} n=${n}`).toBe(true);
        if (m < n) {
          const rewritten = [...hashes];
          rewritten[m - 1] = leafHash(Buffer.from('rewritten'));
          expect(verifyConsistency(m, n, proof, rootOf(rewritten, 0, m), newRoot)).toBe(false);
          expect(verifyConsistency(m, n, proof, oldRoot, rootOf(rewritten))).toBe(false);
        }
      }
    }
  });

  it('keeps a proof of one event in a log of 10 million events to 24 hashes', () => {
    // ceil(log2(10,000,000)) = 24: 768 bytes of hashes, whatever the event.
    expect(Math.ceil(Math.log2(10_000_000))).toBe(24);
    const hashes = leavesOf(1000).map(leafHash);
    expect(inclusionProof(hashes, 0).length).toBe(Math.ceil(Math.log2(1000)));
    expect(Math.max(...[0, 1, 511, 512, 999].map((i) => inclusionProof(hashes, i).length))).toBe(Math.ceil(Math.log2(1000)));
  });
});
