import { describe, expect, it } from 'vitest';
import { createClinicDirectory } from '../../../src/db/clinics.ts';
import type { Pool } from '../../../src/db/pool.ts';

/** A pool whose clinics table is `table`, counting the loads. */
function directory(table: string[]) {
  let clock = 0;
  let loads = 0;
  const pool = {
    query: async () => {
      loads++;
      return { rows: table.map((id) => ({ id })) };
    },
  } as unknown as Pool;
  const dir = createClinicDirectory(pool, { now: () => clock, ttlMs: 60_000, missReloadMs: 5_000 });
  return { dir, loads: () => loads, at: (ms: number) => void (clock = ms) };
}

describe('the clinic directory', () => {
  it("keeps the answer for a token's frozen clinics while the list is the same, and asks again once it is reloaded", async () => {
    const table = ['c-a', 'c-b'];
    const d = directory(table);
    const clinics = Object.freeze(['c-a', 'c-b']);
    const first = await d.dir.existing(clinics);
    expect([...first]).toEqual(['c-a', 'c-b']);
    d.at(30_000);
    expect(await d.dir.existing(clinics)).toBe(first);
    expect(d.loads()).toBe(1);
    // The list expires and c-b is gone: the kept answer is not used.
    table.splice(1, 1);
    d.at(61_000);
    expect([...(await d.dir.existing(clinics))]).toEqual(['c-a']);
    expect(d.loads()).toBe(2);
  });

  it('does not keep an answer that dropped an id: the id reloads the list once the miss interval has passed', async () => {
    const table = ['c-a'];
    const d = directory(table);
    const clinics = Object.freeze(['c-a', 'c-new']);
    expect([...(await d.dir.existing(clinics))]).toEqual(['c-a']);
    table.push('c-new');
    d.at(6_000);
    expect([...(await d.dir.existing(clinics))]).toEqual(['c-a', 'c-new']);
    expect(d.loads()).toBe(2);
  });

  it('answers an array that is not frozen afresh each time', async () => {
    const d = directory(['c-a']);
    const clinics = ['c-a'];
    const first = await d.dir.existing(clinics);
    expect(await d.dir.existing(clinics)).not.toBe(first);
    clinics.push('c-b');
    expect([...(await d.dir.existing(clinics))]).toEqual(['c-a']);
  });
});
