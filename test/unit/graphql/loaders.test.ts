import { describe, expect, it } from 'vitest';
import type { PatientRow } from '../../../src/db/patients.ts';
import type { RequestTransaction } from '../../../src/db/transaction.ts';
import { createLoaders } from '../../../src/graphql/loaders.ts';

/** A transaction that finds nothing and counts what it was asked. */
function emptyTransaction(): { tx: RequestTransaction; queries: () => number } {
  let queries = 0;
  const tx = {
    query: async () => {
      queries++;
      return { rows: [] };
    },
  } as unknown as RequestTransaction;
  return { tx, queries: () => queries };
}

const ID = '0b7c6a53-7f43-4a8e-9d7b-1e0f8f1b2c3d';

describe('createLoaders', () => {
  it('serves a primed row from its cache until released, then asks the database again', async () => {
    const { tx, queries } = emptyTransaction();
    const loaders = createLoaders(tx);
    const row = { id: ID } as PatientRow;
    loaders.patient.prime(ID, row);
    expect(await loaders.patient.load(ID)).toBe(row);
    expect(queries()).toBe(0);

    loaders.release();
    expect(await loaders.patient.load(ID)).toBeNull();
    expect(queries()).toBe(1);
  });

  it('drops its encounter loaders on release, so none keeps the rows it loaded', () => {
    const { tx } = emptyTransaction();
    const loaders = createLoaders(tx);
    const before = loaders.encounters(['kind']);
    expect(loaders.encounters(['kind'])).toBe(before);

    loaders.release();
    expect(loaders.encounters(['kind'])).not.toBe(before);
  });
});
