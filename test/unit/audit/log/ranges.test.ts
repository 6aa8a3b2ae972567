import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { consistencyProof, consistencyRanges } from '../../../../src/audit/log/consistency.ts';
import { inclusionProof, inclusionRanges } from '../../../../src/audit/log/inclusion.ts';
import { rootOf } from '../../../../src/audit/log/tree.ts';
import { rangeRoots, type LeafSource } from '../../../../src/audit/verify/prove.ts';

// prove builds a proof's hashes from subtree roots of ranges, from cached tile roots and the
// leaves past them, instead of holding every leaf: for every tree up to 40 leaves, with tiles
// cached or not, it must give exactly the proofs of the in-memory code.

const leaves = Array.from({ length: 40 }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest());
async function* read(from: number, to: number): AsyncIterable<Buffer> {
  for (let i = from; i < to; i++) yield leaves[i]!;
}
// Tiles of 4 leaves, the first `cached` of them known.
const tiled = (cached: number): LeafSource => ({
  leaves: read,
  tiles: {
    height: 2,
    async roots(from, to) {
      const out: Buffer[] = [];
      for (let t = from; t + 4 <= to && t / 4 < cached; t += 4) out.push(rootOf(leaves, t, t + 4));
      return out;
    },
  },
});
// Compared as hex: the same bytes in the same order, without the matcher's element-by-element walk
// of each Buffer, which cost several times the proofs themselves over these 7,800 hashes.
const hex = (hashes: readonly Buffer[]): string[] => hashes.map((h) => h.toString('hex'));
const sources: [string, LeafSource][] = [
  ['leaves only', { leaves: read }],
  ['every tile cached', tiled(10)],
  ['the first 3 tiles cached', tiled(3)],
];

describe('proofs from ranges streamed in order', () => {
  it.each(sources)('equal the in-memory inclusion and consistency proofs for every size and index (%s)', async (_, source) => {
    for (let n = 1; n <= leaves.length; n++) {
      const tree = leaves.slice(0, n);
      for (let m = 0; m < n; m++) {
        expect(hex(await rangeRoots(inclusionRanges(n, m), source)), `inclusion ${m} of ${n}`).toEqual(hex(inclusionProof(tree, m)));
      }
      for (let m = 1; m <= n; m++) {
        expect(hex(await rangeRoots(consistencyRanges(n, m), source)), `consistency ${m} to ${n}`).toEqual(hex(consistencyProof(tree, m)));
      }
    }
  });

  it('refuses a log that lacks a leaf of a range', async () => {
    async function* short(from: number, to: number): AsyncIterable<Buffer> {
      for (let i = from; i < Math.min(to, 20); i++) yield leaves[i]!;
    }
    await expect(rangeRoots(inclusionRanges(40, 3), { leaves: short })).rejects.toThrow('the log lacks leaves between 16 and 32');
  });
});
