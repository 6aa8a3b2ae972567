import { nodeHash, rootOf, splitPoint } from './tree.ts';

/**
 * RFC 9162 section 2.1.3: the audit path of leaf `index` in the tree of `leafHashes`, and its
 * verification (section 2.1.3.2), which needs only the leaf hash, the size and the root.
 */
export function inclusionProof(leafHashes: readonly Uint8Array[], index: number): Buffer[] {
  if (!Number.isInteger(index) || index < 0 || index >= leafHashes.length) throw new RangeError('leaf index outside the tree');
  const path: Buffer[] = [];
  const walk = (from: number, to: number, m: number): void => {
    if (to - from <= 1) return;
    const k = splitPoint(to - from);
    if (m < k) {
      walk(from, from + k, m);
      path.push(rootOf(leafHashes, from + k, to));
    } else {
      walk(from + k, to, m - k);
      path.push(rootOf(leafHashes, from, from + k));
    }
  };
  walk(0, leafHashes.length, index);
  return path;
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
