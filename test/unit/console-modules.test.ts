import { describe, expect, it } from 'vitest';

// The console's pure helpers, loaded as the browser loads them (plain ES modules, no types).
const load = (name: string) => import(String(new URL(`../../console/${name}`, import.meta.url)));
const { textPdf, wrap, LINE_CHARS } = await load('pdf.js');
const { bucketize, stepFor } = await load('charts.js');
const { pageSize } = await load('paging.js');

const HOUR = 3_600_000;
const latin1 = (bytes: Uint8Array) => Buffer.from(bytes).toString('latin1');

describe('console PDF writer', () => {
  it('wraps long lines at spaces, indents continuations, and keeps every character', () => {
    const line = `${'word '.repeat(60)}${'x'.repeat(200)}`;
    const lines: string[] = wrap(line);
    expect(lines.length).toBeGreaterThan(2);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(LINE_CHARS);
    expect(lines.slice(1).every((l) => l.startsWith('    '))).toBe(true);
    expect(lines.map((l) => l.trim()).join('').replace(/ /g, '')).toBe(line.replace(/ /g, ''));
  });

  it('writes pages whose cross-reference table points at each object, escaping what PDF strings need', () => {
    const lines = Array.from({ length: 130 }, (_, i) => `line ${i} (a) \\ b — é`);
    const pdf = latin1(textPdf('Title (x)', lines));
    expect(pdf.startsWith('%PDF-1.4\n')).toBe(true);
    const xref = Number(/startxref\n(\d+)\n%%EOF\n$/.exec(pdf)?.[1]);
    expect(pdf.slice(xref, xref + 5)).toBe('xref\n');
    const offsets = [...pdf.slice(xref).matchAll(/^(\d{10}) 00000 n $/gm)].map((m) => Number(m[1]));
    offsets.forEach((o, i) => expect(pdf.slice(o, o + `${i + 1} 0 obj\n`.length)).toBe(`${i + 1} 0 obj\n`));
    expect(pdf).toMatch(/\/Count 3 >>/);
    expect(pdf).toContain('(Title \\(x\\)    page 1 of 3) Tj');
    expect(pdf).toContain('(line 0 \\(a\\) \\\\ b ? ?) Tj');
    // Each stream's declared length is its length.
    for (const m of pdf.matchAll(/<< \/Length (\d+) >>\nstream\n/g)) {
      const start = (m.index ?? 0) + m[0].length;
      expect(pdf.slice(start + Number(m[1]), start + Number(m[1]) + 10)).toBe('\nendstream');
    }
  });

  it('writes one page even with no lines', () => {
    expect(latin1(textPdf('Empty', []))).toMatch(/\/Count 1 >>/);
  });
});

describe('console chart buckets', () => {
  it('counts times per bucket from the step-aligned start, ignoring times outside', () => {
    const start = Date.UTC(2026, 11, 5, 10, 30);
    const end = Date.UTC(2026, 11, 5, 13, 0);
    const times = [start - 2 * HOUR, Date.UTC(2026, 11, 5, 10, 1), Date.UTC(2026, 11, 5, 10, 59), Date.UTC(2026, 11, 5, 12, 0), end + HOUR];
    expect(bucketize(times, start, end, HOUR)).toEqual([
      { start: Date.UTC(2026, 11, 5, 10), count: 2 },
      { start: Date.UTC(2026, 11, 5, 11), count: 0 },
      { start: Date.UTC(2026, 11, 5, 12), count: 1 },
    ]);
  });

  it('chooses hours up to two days, days up to two months, then weeks', () => {
    expect([stepFor(48 * HOUR), stepFor(48 * HOUR + 1), stepFor(62 * 24 * HOUR + 1)]).toEqual([HOUR, 24 * HOUR, 7 * 24 * HOUR]);
  });
});

describe('console page size', () => {
  const asked = (first: string | null) => new URLSearchParams(first === null ? '' : { first });
  it("takes the size asked for within the gateway's limit, else its own size, never above the limit", () => {
    expect([pageSize(asked('7'), 25, 100), pageSize(asked('100'), 25, 100), pageSize(asked(null), 25, 100)]).toEqual([7, 100, 25]);
    expect([pageSize(asked(null), 25, 10), pageSize(asked('11'), 25, 10), pageSize(asked('0'), 25, 10), pageSize(asked('2.5'), 25, 10)]).toEqual([10, 10, 10, 10]);
    expect(pageSize(asked(null), 25, 1)).toBe(1);
  });
});
