/** The elements of a binary uuid[] parameter (src/audit/uuid-array.ts), NULL as null. */
export function uuidsOf(param: unknown): (string | null)[] {
  const buf = param as Buffer;
  const out: (string | null)[] = [];
  if (buf.readInt32BE(0) === 0) return out;
  for (let i = 0, at = 20; i < buf.readInt32BE(12); i++) {
    if (buf.readInt32BE(at) === -1) {
      out.push(null);
      at += 4;
      continue;
    }
    out.push(uuidOf(buf.subarray(at + 4, at + 20)));
    at += 20;
  }
  return out;
}

/** A uuid's 16 bytes in 8-4-4-4-12 form. */
export function uuidOf(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
