import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { consistencyProof } from '../../../../src/audit/log/consistency.ts';
import { inclusionProof } from '../../../../src/audit/log/inclusion.ts';
import { consistencyRanges, inclusionRanges, rangeRoots } from '../../../../src/audit/verify/prove.ts';

// prove builds proofs in one streaming pass (subtree roots of ranges) instead of holding every
// leaf: for every tree up to 40 leaves it must give exactly the proofs of the in-memory code.

const leaves = Array.from({ length: 40 }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest());
async function* read(from: number, to: number): AsyncIterable<Buffer> {
  for (let i = from; i < to; i++) yield leaves[i]!;
}

describe('proofs from ranges streamed in order', () => {
  it('equal the in-memory inclusion and consistency proofs for every size and index', async () => {
    for (let n = 1; n <= leaves.length; n++) {
      const tree = leaves.slice(0, n);
      for (let m = 0; m < n; m++) {
        expect(await rangeRoots(inclusionRanges(n, m), read), `inclusion ${m} of ${n}`).toEqual(inclusionProof(tree, m));
      }
      for (let m = 1; m <= n; m++) {
        expect(await rangeRoots(consistencyRanges(n, m), read), `consistency ${m} to ${n}`).toEqual(consistencyProof(tree, m));
      }
    }
  });

  it('refuses a log that lacks a leaf of a range', async () => {
    async function* short(from: number, to: number): AsyncIterable<Buffer> {
      for (let i = from; i < Math.min(to, 20); i++) yield leaves[i]!;
    }
    await expect(rangeRoots(inclusionRanges(40, 3), short)).rejects.toThrow('the log lacks leaves between 16 and 32');
  });
});
