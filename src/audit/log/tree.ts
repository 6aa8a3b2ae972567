import { createHash } from 'node:crypto';

/**
 * RFC 6962 / RFC 9162 Merkle tree hashing: a leaf is SHA-256(0x00 || bytes), an interior node
 * SHA-256(0x01 || left || right), and a tree of n leaves splits at the largest power of two
 * smaller than n. Leaf and node prefixes keep a leaf from passing for a node (second preimages).
 */
export const HASH_BYTES = 32;
const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

export function leafHash(leaf: Uint8Array): Buffer {
  return createHash('sha256').update(LEAF_PREFIX).update(leaf).digest();
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/** The hash of an empty tree: SHA-256 of nothing. */
export const EMPTY_ROOT = createHash('sha256').digest();

/** Largest power of two strictly smaller than n (n >= 2). */
export function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The root over leaf hashes [from, to), computed bottom-up without recursion: adjacent pairs at
 * each level, carrying an odd last node up unchanged, gives the same tree as RFC 6962's split.
 */
export function rootOf(leafHashes: readonly Uint8Array[], from = 0, to = leafHashes.length): Buffer {
  if (to - from === 0) return EMPTY_ROOT;
  let level: Uint8Array[] = leafHashes.slice(from, to);
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
  }
  return Buffer.from(level[0]!);
}

/**
 * The root of a tree that only grows, kept as its frontier: the roots of the perfect subtrees
 * its size decomposes into (one per set bit), so appending costs O(log n) and memory O(log n).
 */
export interface GrowingTree {
  append(leafHash: Uint8Array): void;
  readonly size: number;
  root(): Buffer;
  /** The perfect subtrees' roots, largest first: with the size, all it takes to resume the tree. */
  frontier(): Buffer[];
}

/** A tree of `size` leaves resumed from its frontier (as `frontier()` gave it), or an empty one. */
export function growingTree(from: { readonly size: number; readonly frontier: readonly Uint8Array[] } = { size: 0, frontier: [] }): GrowingTree {
  if (!Number.isSafeInteger(from.size) || from.size < 0) throw new RangeError('a tree size is a whole number');
  // One perfect subtree per set bit of the size, largest first.
  const heights: number[] = [];
  for (let h = 52; h >= 0; h--) if (Math.floor(from.size / 2 ** h) % 2 === 1) heights.push(h);
  if (heights.length !== from.frontier.length || from.frontier.some((f) => f.length !== HASH_BYTES)) {
    throw new RangeError('the frontier does not match the tree size');
  }
  // frontier[i] is the root of a perfect subtree of 2^height leaves, largest first.
  const frontier: { height: number; hash: Uint8Array }[] = heights.map((height, i) => ({ height, hash: from.frontier[i]! }));
  let size = from.size;
  return {
    append(hash) {
      let node = { height: 0, hash };
      while (frontier.length > 0 && frontier[frontier.length - 1]!.height === node.height) {
        const left = frontier.pop()!;
        node = { height: node.height + 1, hash: nodeHash(left.hash, node.hash) };
      }
      frontier.push(node);
      size++;
    },
    get size() {
      return size;
    },
    root() {
      if (frontier.length === 0) return EMPTY_ROOT;
      let acc = frontier[frontier.length - 1]!.hash;
      for (let i = frontier.length - 2; i >= 0; i--) acc = nodeHash(frontier[i]!.hash, acc);
      return Buffer.from(acc);
    },
    frontier() {
      return frontier.map((f) => Buffer.from(f.hash));
    },
  };
}
