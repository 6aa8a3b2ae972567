import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { PHI_CATALOGUE } from '../../../src/policy/phi-fields.ts';
import { ERASED_TIMES, SHRED_TABLES } from '../../../src/records/shred-columns.ts';

// What a shred does to each column (src/records/shred-columns.ts) against the PHI catalogue and
// docs/shredding.md; the database side is test/security/shred-erases-plaintext.test.ts.

describe('the shred\'s column list', () => {
  it('marks every sealed PHI column, and erases every PHI column held in the clear', () => {
    for (const spec of PHI_CATALOGUE) {
      const fate = SHRED_TABLES[spec.table]?.columns[spec.column]?.fate;
      expect(fate, `${spec.table}.${spec.column}`).toBe(spec.encrypted ? 'sealed' : 'erased');
    }
  });

  it('erases exactly the columns it lists as erased', () => {
    const listed = Object.entries(SHRED_TABLES).flatMap(([table, t]) =>
      Object.entries(t.columns).filter(([, c]) => c.fate === 'erased').map(([column]) => `${table}.${column}`),
    );
    expect(ERASED_TIMES.flatMap((t) => t.columns.map((c) => `${t.table}.${c}`)).sort()).toEqual(listed.sort());
  });

  it('gives a reason for every column it keeps', () => {
    for (const [table, t] of Object.entries(SHRED_TABLES)) {
      for (const [column, c] of Object.entries(t.columns)) expect(c.why.length, `${table}.${column}`).toBeGreaterThan(10);
    }
  });

  it('is the one docs/shredding.md gives operators: every table, and every column but the audit trail\'s', async () => {
    const doc = await readFile(new URL('../../../docs/shredding.md', import.meta.url), 'utf8');
    for (const [table, t] of Object.entries(SHRED_TABLES)) {
      expect(doc, table).toContain(`\`${table}\``);
      if (table.startsWith('audit_') || table === 'alert_minute_patients') continue;
      for (const column of Object.keys(t.columns)) expect(doc, `${table}.${column}`).toContain(`\`${column}\``);
    }
  });
});
