import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PackedRows, packPhi, unpackPhi } from '../../../src/db/packed-phi.ts';
import { PATIENT_PACKED_COLUMNS, patientsByIds, type PatientRow } from '../../../src/db/patients.ts';
import type { RequestTransaction } from '../../../src/db/transaction.ts';
import { PhigateError } from '../../../src/errors.ts';
import { pgBase64 } from '../../support/pg-base64.ts';

// array_send's layout for a one-dimensional bytea[] (PostgreSQL's arrayfuncs.c), written from its
// definition: ndim, has-nulls flag, element type, length, lower bound, then each element's int32
// length (-1 for NULL) and its bytes. test/integration/packed-phi.test.ts holds it to what
// PostgreSQL sends.
function packed(values: readonly (Buffer | null)[], header: { ndim?: number; type?: number; count?: number; lower?: number } = {}): Buffer {
  const int = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  const parts = [int(header.ndim ?? 1), int(values.includes(null) ? 1 : 0), int(header.type ?? 17), int(header.count ?? values.length), int(header.lower ?? 1)];
  for (const v of values) parts.push(v === null ? int(-1) : Buffer.concat([int(v.length), v]));
  return Buffer.concat(parts);
}

const refusal = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PhigateError);
    expect((err as PhigateError).code).toBe('INTERNAL');
    return (err as PhigateError).reason;
  }
  return undefined;
};

describe('packPhi', () => {
  it('packs several columns with array_send and leaves a lone one as it is, either in base64', () => {
    expect(packPhi(['e.kind', 'e.notes'])).toBe("encode(array_send(ARRAY[e.kind, e.notes]), 'base64') AS phi");
    expect(packPhi(['e.kind'])).toBe("encode(e.kind, 'base64') AS phi");
    expect(() => packPhi([])).toThrow(TypeError);
  });
});

describe('unpackPhi', () => {
  it('gives a lone column as it came, NULL included', () => {
    const value = randomBytes(40);
    expect(unpackPhi(value, 1)[0]).toBe(value);
    expect(unpackPhi(null, 1)).toEqual([null]);
  });

  it('gives each column, NULL and empty ones included, in order', () => {
    const values = [randomBytes(45), null, Buffer.alloc(0), randomBytes(5000), null, randomBytes(1)];
    const out = unpackPhi(packed(values), values.length);
    expect(out).toEqual(values);
    expect(unpackPhi(packed([null, null]), 2)).toEqual([null, null]);
  });

  it('refuses anything but exactly the columns asked for, as bytea in one dimension', () => {
    const values = [randomBytes(30), null, randomBytes(12)];
    const good = packed(values);
    expect(refusal(() => unpackPhi(packed(values), 2))).toBe('packed_phi_header');
    expect(refusal(() => unpackPhi(packed(values), 4))).toBe('packed_phi_header');
    expect(refusal(() => unpackPhi(packed(values, { type: 25 }), 3))).toBe('packed_phi_header');
    expect(refusal(() => unpackPhi(packed(values, { ndim: 2 }), 3))).toBe('packed_phi_header');
    expect(refusal(() => unpackPhi(packed(values, { lower: 0 }), 3))).toBe('packed_phi_header');
    expect(refusal(() => unpackPhi(good.subarray(0, 19), 3))).toBe('packed_phi_short');
    expect(refusal(() => unpackPhi(good.subarray(0, good.length - 1), 3))).toBe('packed_phi_length');
    expect(refusal(() => unpackPhi(good.subarray(0, 20 + 4 + 30 + 2), 3))).toBe('packed_phi_short');
    expect(refusal(() => unpackPhi(Buffer.concat([good, Buffer.from([0])]), 3))).toBe('packed_phi_trailing');
    const negative = Buffer.from(good);
    negative.writeInt32BE(-2, 20);
    expect(refusal(() => unpackPhi(negative, 3))).toBe('packed_phi_length');
    expect(refusal(() => unpackPhi(null, 3))).toBe('packed_phi_null');
    expect(refusal(() => unpackPhi(good, 3))).toBeUndefined();
  });
});

// The same layout in two dimensions (rows of `width` values), or an empty array: ndim 0, flags, type.
function packedRows(rows: readonly (readonly (Buffer | null)[])[], width: number, header: { ndim?: number; lower?: number; innerLower?: number } = {}): Buffer {
  const int = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  if (rows.length === 0) return Buffer.concat([int(0), int(0), int(17)]);
  const parts = [int(header.ndim ?? 2), int(0), int(17), int(rows.length), int(header.lower ?? 1), int(width), int(header.innerLower ?? 1)];
  for (const row of rows) for (const v of row) parts.push(v === null ? int(-1) : Buffer.concat([int(v.length), v]));
  return Buffer.concat(parts);
}

describe('PackedRows, checked whole', () => {
  // Every value of every row as a view, as a page reads an encounter's ciphertexts.
  const viewsOf = (packed: Buffer | null, width: number) => {
    const values = new PackedRows(packed, width);
    return Array.from({ length: values.count }, () => Array.from({ length: width }, () => values.nextView()));
  };

  it('gives each row of values, NULL and empty ones included, in order, and no rows for an empty array', () => {
    const rows = [
      [randomBytes(16), null, Buffer.alloc(0)],
      [randomBytes(16), randomBytes(3000), null],
    ];
    expect(viewsOf(packedRows(rows, 3), 3)).toEqual(rows);
    expect(viewsOf(packedRows([], 3), 3)).toEqual([]);
  });

  it('refuses anything but rows of exactly the width asked for', () => {
    const rows = [
      [randomBytes(16), null],
      [randomBytes(16), randomBytes(4)],
    ];
    const good = packedRows(rows, 2);
    expect(refusal(() => viewsOf(null, 2))).toBe('packed_phi_null');
    expect(refusal(() => viewsOf(good, 3))).toBe('packed_phi_header');
    // Two rows of two read as rows of one: the declared width is not the one asked for.
    expect(refusal(() => viewsOf(good, 1))).toBe('packed_phi_header');
    expect(refusal(() => viewsOf(packed([randomBytes(3), randomBytes(3)]), 2))).toBe('packed_phi_header');
    expect(refusal(() => viewsOf(packedRows(rows, 2, { ndim: 3 }), 2))).toBe('packed_phi_header');
    expect(refusal(() => viewsOf(packedRows(rows, 2, { lower: 0 }), 2))).toBe('packed_phi_header');
    expect(refusal(() => viewsOf(packedRows(rows, 2, { innerLower: 0 }), 2))).toBe('packed_phi_header');
    const retyped = Buffer.from(good);
    retyped.writeInt32BE(25, 8);
    expect(refusal(() => viewsOf(retyped, 2))).toBe('packed_phi_header');
    expect(refusal(() => viewsOf(good.subarray(0, good.length - 1), 2))).toBe('packed_phi_length');
    expect(refusal(() => viewsOf(good.subarray(0, 30), 2))).toBe('packed_phi_short');
    expect(refusal(() => viewsOf(Buffer.concat([good, Buffer.alloc(1)]), 2))).toBe('packed_phi_trailing');
    expect(refusal(() => viewsOf(Buffer.concat([packedRows([], 2), Buffer.alloc(1)]), 2))).toBe('packed_phi_trailing');
    const negative = Buffer.from(good);
    negative.writeInt32BE(-2, 28);
    expect(refusal(() => viewsOf(negative, 2))).toBe('packed_phi_length');
  });
});

describe('PackedRows', () => {
  const uuidText = (b: Buffer) => {
    const hex = b.toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  };

  it('reads each row as a uuid, texts and views, in order, NULL and empty ones included', () => {
    const rows = [
      [randomBytes(16), Buffer.from('2026-12-07 04:05:06.789+00'), null, randomBytes(60)],
      [randomBytes(16), Buffer.from('Zoë 🌱'), Buffer.alloc(0), null],
      [Buffer.alloc(16, 0xff), Buffer.alloc(0), Buffer.from('legacy'), Buffer.alloc(0)],
    ];
    const values = new PackedRows(packedRows(rows, 4), 4);
    expect(values.count).toBe(3);
    for (const row of rows) {
      expect(values.nextUuid()).toBe(uuidText(row[0]!));
      expect(values.nextText()).toBe(row[1]!.toString('utf8'));
      expect(values.nextText()).toBe(row[2] === null ? null : row[2]!.toString('utf8'));
      expect(values.nextView()).toEqual(row[3]);
    }
    expect(new PackedRows(packedRows([], 4), 4).count).toBe(0);
  });

  it('prints every byte of a uuid as PostgreSQL does', () => {
    for (let i = 0; i < 64; i++) {
      const bytes = Buffer.from(Array.from({ length: 16 }, (_, j) => (i * 16 + j) % 256));
      const values = new PackedRows(packedRows([[bytes]], 1), 1);
      expect(values.nextUuid()).toBe(uuidText(bytes));
    }
  });

  it('refuses a uuid of NULL or of another length than 16 bytes', () => {
    expect(refusal(() => new PackedRows(packedRows([[null]], 1), 1).nextUuid())).toBe('packed_phi_uuid');
    expect(refusal(() => new PackedRows(packedRows([[randomBytes(15)]], 1), 1).nextUuid())).toBe('packed_phi_uuid');
    expect(refusal(() => new PackedRows(packedRows([[randomBytes(17)]], 1), 1).nextUuid())).toBe('packed_phi_uuid');
  });
});

describe('a patient row of a packed value', () => {
  // patientsByIds over a statement answered with `phi` as given, in PostgreSQL's base64: no database needed.
  const rowOf = async (phi: Buffer | string | null): Promise<PatientRow> => {
    const text = Buffer.isBuffer(phi) ? pgBase64(phi) : phi;
    const fetched = { id: '00000000-0000-4000-8000-000000000001', clinic_id: 'clinic-a', on_care_team: true, grant_id: null, grant_role: null, phi: text, key_version: 3, key_clinic_version: 2 };
    const tx = { query: async () => ({ rows: [fetched] }) } as unknown as RequestTransaction;
    return (await patientsByIds(tx, [fetched.id]))[0]!;
  };
  const columns = PATIENT_PACKED_COLUMNS as readonly (keyof PatientRow)[];

  it('gives each ciphertext column, NULL and empty ones included, and the newest wrapped key', async () => {
    const values = columns.map((_, i) => (i === 1 ? null : i === 4 ? Buffer.alloc(0) : randomBytes(40 + i)));
    const wrapped = randomBytes(60);
    const row = await rowOf(packed([...values, wrapped]));
    columns.forEach((column, i) => expect(row[column], column).toEqual(values[i]));
    // Asked again, the same bytes.
    columns.forEach((column, i) => expect(row[column], column).toEqual(values[i]));
    expect(row.facts.key.joined).toEqual({ version: 3, clinicVersion: 2, wrapped });
  });

  it('holds the packed value, not a Buffer per column, until a column is asked for', async () => {
    const row = await rowOf(packed([...columns.map(() => randomBytes(40)), randomBytes(60)]));
    const own = Object.values(row).filter((v) => Buffer.isBuffer(v));
    expect(own).toEqual([]);
    expect(row.mrn).not.toBe(row.mrn);
  });

  it('is refused when its packed value is not exactly its columns and key', async () => {
    const values = [...columns.map(() => randomBytes(40)), randomBytes(60)];
    await expect(rowOf(packed(values.slice(1)))).rejects.toMatchObject({ code: 'INTERNAL', reason: 'packed_phi_header' });
    await expect(rowOf(packed(values).subarray(0, 100))).rejects.toMatchObject({ code: 'INTERNAL', reason: 'packed_phi_length' });
    await expect(rowOf(null)).rejects.toMatchObject({ code: 'INTERNAL', reason: 'packed_phi_null' });
  });

  it('is refused when its base64 is not what PostgreSQL sends, though Node would decode it', async () => {
    const text = pgBase64(packed([...columns.map(() => randomBytes(40)), randomBytes(60)]));
    await expect(rowOf(text)).resolves.toBeDefined();
    for (const bad of [`${text.slice(0, 10)}*${text.slice(10)}`, text.replaceAll('\n', ''), text.replace('\n', ' '), `${text} `]) {
      await expect(rowOf(bad)).rejects.toMatchObject({ code: 'INTERNAL', reason: 'packed_phi_base64' });
    }
  });
});
