import { nodeHash, rootOf, splitPoint } from './tree.ts';

/** A subtree of leaves [from, to). */
export type Range = readonly [from: number, to: number];

/**
 * RFC 9162 section 2.1.3: the subtrees whose roots make the audit path of leaf `index` in a tree
 * of `size` leaves, leaf to root. The path is their roots, computed from whatever holds the leaves
 * (all the leaf hashes here; tile roots and leaves in `phigate audit prove`).
 */
export function inclusionRanges(size: number, index: number): Range[] {
  const out: Range[] = [];
  const walk = (from: number, to: number, m: number): void => {
    if (to - from <= 1) return;
    const k = splitPoint(to - from);
    if (m < k) {
      walk(from, from + k, m);
      out.push([from + k, to]);
    } else {
      walk(from + k, to, m - k);
      out.push([from, from + k]);
    }
  };
  walk(0, size, index);
  return out;
}

/** The audit path of leaf `index` in the tree of `leafHashes`; its verification (section 2.1.3.2) needs only the leaf hash, the size and the root. */
export function inclusionProof(leafHashes: readonly Uint8Array[], index: number): Buffer[] {
  if (!Number.isInteger(index) || index < 0 || index >= leafHashes.length) throw new RangeError('leaf index outside the tree');
  return inclusionRanges(leafHashes.length, index).map(([from, to]) => rootOf(leafHashes, from, to));
}

export function verifyInclusion(leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r: Uint8Array = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && Buffer.from(r).equals(Buffer.from(root));
}
