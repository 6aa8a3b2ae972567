// A PDF of plain text pages (PDF 1.4, ISO 32000-1): landscape Letter, Courier, no compression,
// no fonts embedded. Small enough to write by hand and check by eye, so the accounting of
// disclosures downloads as a real .pdf without a library or a CDN.

const WIDTH = 792;
const HEIGHT = 612;
const MARGIN = 36;
const SIZE = 8;
const LEADING = 10;
/** Courier's advance is 0.6 em: 4.8 points at 8 points, so 150 characters fill the 720-point line. */
export const LINE_CHARS = Math.floor((WIDTH - 2 * MARGIN) / (SIZE * 0.6));
const LINES_PER_PAGE = Math.floor((HEIGHT - 2 * MARGIN) / LEADING) - 2;

/** Lines no longer than LINE_CHARS, broken at spaces where possible, continuations indented. */
export function wrap(line) {
  const out = [];
  let rest = line;
  while (rest.length > LINE_CHARS) {
    const cut = rest.lastIndexOf(' ', LINE_CHARS);
    const at = cut > LINE_CHARS / 2 ? cut : LINE_CHARS;
    out.push(rest.slice(0, at));
    rest = `    ${rest.slice(at).trimStart()}`;
  }
  out.push(rest);
  return out;
}

// Only printable ASCII is written, so that string length is byte length for the cross-reference
// offsets; anything else (none is expected: ids, codes and times) becomes '?'.
const pdfString = (text) => `(${text.replace(/[^\x20-\x7e]/g, '?').replace(/[\\()]/g, (c) => `\\${c}`)})`;

/** The PDF's bytes: `title` heads every page, `lines` follow, wrapped and paged. */
export function textPdf(title, lines) {
  const all = lines.flatMap(wrap);
  const pages = [];
  for (let i = 0; i < all.length || pages.length === 0; i += LINES_PER_PAGE) pages.push(all.slice(i, i + LINES_PER_PAGE));
  const objects = [];
  // An object's number is its 1-based place: push's answer.
  const add = (body) => objects.push(body);
  add('<< /Type /Catalog /Pages 2 0 R >>');
  add(''); // the page tree, filled in once the pages' numbers are known
  add('<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>');
  const kids = pages.map((pageLines, p) => {
    const heading = `${title}    page ${p + 1} of ${pages.length}`;
    const text = [heading, '', ...pageLines].map((l, i) => `${i === 0 ? '' : 'T* '}${pdfString(l)} Tj`).join('\n');
    const stream = `BT /F1 ${SIZE} Tf ${LEADING} TL ${MARGIN} ${HEIGHT - MARGIN - SIZE} Td\n${text}\nET`;
    const content = add(`<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`);
    return add(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 ${WIDTH} ${HEIGHT}] /Resources << /Font << /F1 3 0 R >> >> /Contents ${content} 0 R >>`);
  });
  objects[1] = `<< /Type /Pages /Kids [${kids.map((k) => `${k} 0 R`).join(' ')}] /Count ${kids.length} >>`;

  let out = '%PDF-1.4\n';
  const offsets = objects.map((body, i) => {
    const at = out.length;
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
    return at;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return new TextEncoder().encode(out);
}
