import type { Range } from './inclusion.ts';
import { nodeHash, rootOf, splitPoint } from './tree.ts';

/**
 * RFC 9162 section 2.1.4: the subtrees whose roots make the proof that the tree of the first
 * `oldSize` leaves is a prefix of the tree of `newSize` leaves (none when the sizes are equal).
 */
export function consistencyRanges(newSize: number, oldSize: number): Range[] {
  const out: Range[] = [];
  const sub = (from: number, to: number, m: number, whole: boolean): void => {
    const size = to - from;
    if (m === size) {
      if (!whole) out.push([from, to]);
      return;
    }
    const k = splitPoint(size);
    if (m <= k) {
      sub(from, from + k, m, whole);
      out.push([from + k, to]);
    } else {
      sub(from + k, to, m - k, false);
      out.push([from, from + k]);
    }
  };
  if (oldSize < newSize) sub(0, newSize, oldSize, true);
  return out;
}

/** The consistency proof over all `leafHashes`; its verification (section 2.1.4.2) needs only the two roots. */
export function consistencyProof(leafHashes: readonly Uint8Array[], oldSize: number): Buffer[] {
  const n = leafHashes.length;
  if (!Number.isInteger(oldSize) || oldSize < 1 || oldSize > n) throw new RangeError('old size outside the tree');
  return consistencyRanges(n, oldSize).map(([from, to]) => rootOf(leafHashes, from, to));
}

export function verifyConsistency(oldSize: number, newSize: number, proof: readonly Uint8Array[], oldRoot: Uint8Array, newRoot: Uint8Array): boolean {
  const eq = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
  if (!Number.isInteger(oldSize) || !Number.isInteger(newSize) || oldSize < 1 || oldSize > newSize) return false;
  if (oldSize === newSize) return proof.length === 0 && eq(oldRoot, newRoot);
  let path = [...proof];
  // A power-of-two old tree is a whole subtree of the new one: its root starts the path.
  if ((oldSize & (oldSize - 1)) === 0) path = [oldRoot, ...path];
  if (path.length === 0) return false;
  let fn = oldSize - 1;
  let sn = newSize - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Uint8Array = path[0]!;
  let sr: Uint8Array = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && eq(fr, oldRoot) && eq(sr, newRoot);
}
