// DOM built from text only (never innerHTML), so no value shown can become markup.

/** h('td', { class: 'x' }, 'text', child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

/**
 * A table with a header row; `rows` are arrays of cells (text or nodes).
 * @param {string} caption
 * @param {string[]} headers
 * @param {unknown[][]} rows
 * @param {(index: number) => Record<string, unknown>} [rowAttrs]
 */
export function table(caption, headers, rows, rowAttrs = () => ({})) {
  // A wide table scrolls sideways inside its box at 200% zoom: the box takes focus so the keyboard can scroll it.
  return h(
    'div',
    { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: 0 },
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((r, i) => h('tr', rowAttrs(i), r.map((c) => h('td', {}, c ?? ''))))),
    ),
  );
}

/** A labelled form control; `control` is an input, select or textarea element. */
export const field = (label, control) => h('label', {}, label, control);

export function announce(text) {
  const status = document.getElementById('status');
  status.textContent = '';
  // A fresh text node, so screen readers announce the same message twice in a row.
  setTimeout(() => (status.textContent = text), 50);
}

/** "3 h ago": how long a grant has waited, the queue's order of urgency. */
export function age(iso) {
  const minutes = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60_000));
  if (minutes < 60) return `${minutes} min`;
  if (minutes < 48 * 60) return `${Math.round(minutes / 60)} h`;
  return `${Math.round(minutes / 1440)} d`;
}

export const formValues = (form) => Object.fromEntries(new FormData(form).entries());

/** Saves `data` as a file named `name`: a link to a blob of this page, clicked, then let go. */
export function download(name, type, data) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
