import { describe, expect, it } from 'vitest';
import type { EncounterRow, PatientRow } from '../../src/db/patients.ts';
import type { RequestTransaction } from '../../src/db/transaction.ts';
import { PhigateError } from '../../src/errors.ts';
import { createLoaders } from '../../src/graphql/loaders.ts';

// A page's encounters come with the page (src/graphql/types/query.ts): primed, they are each
// patient's answer with no statement sent, and a patient whose encounters cannot be read fails alone.

const patient = (id: string) => ({ id, facts: { key: { joined: null, held: null } } }) as unknown as PatientRow;
const encounter = (id: string) => ({ id }) as EncounterRow;
const W = { first: 10, after: null, byDate: true };

describe('primeEncounters', () => {
  it("gives each patient its primed encounters without a statement, and a patient's failure to that patient alone", async () => {
    const sent: string[] = [];
    const tx = { query: async (text: string) => (sent.push(text), { rows: [] }) } as unknown as RequestTransaction;
    const loaders = createLoaders(tx);
    const [a, b, c] = [patient('a'), patient('b'), patient('c')];
    const broken = new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'packed_phi_header' });
    loaders.primeEncounters(['kind'], W, [a, b, c], (i) => {
      if (i === 1) throw broken;
      return i === 0 ? [encounter('a1'), encounter('a2')] : [];
    });
    expect(loaders.encountersOf(['kind'], W, a)).toEqual([encounter('a1'), encounter('a2')]);
    expect(() => loaders.encountersOf(['kind'], W, b)).toThrow(broken);
    expect(loaders.encountersOf(['kind'], W, c)).toEqual([]);
    // A second page holding the same patient does not replace what the request has already answered.
    loaders.primeEncounters(['kind'], W, [a], () => [encounter('other')]);
    expect(loaders.encountersOf(['kind'], W, a)).toEqual([encounter('a1'), encounter('a2')]);
    expect(sent).toEqual([]);
    // Other columns were not primed: those are read by the loader.
    await loaders.encountersOf(['kind', 'notes'], W, a);
    expect(sent).toHaveLength(1);
  });
});
