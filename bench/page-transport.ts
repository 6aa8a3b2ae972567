/**
 * How the page statement's two bytea values per patient row (the packed ciphertexts and wrapped
 * key, `phi`, and the packed encounters) travel from PostgreSQL to the views the gateway decrypts
 * (bench/README.md, branch b64): today's hex against base64 (`encode(..., 'base64')`, decoded by
 * Node and checked strictly) and against one hex value for the whole page. Rounds rotated in one
 * process on one connection; per form the backend's CPU (/proc) and this process's CPU per page.
 *
 *   npx tsx bench/page-transport.ts --url postgres://postgres@127.0.0.1:55464/postgres --rounds 12 --pages 500
 *   npx tsx bench/page-transport.ts --url ... --only 1 --pages 220      # one form alone, for callgrind
 *   npx tsx bench/page-transport.ts --url ... --limit 1                 # one row, as a read by id
 *
 * `--url` is a superuser's on a database holding `phigate.patients` (the 8 ciphertext columns and
 * `key_wrapped`, the newest wrapped key) and `phigate.encounters` as the page reads them; the rows
 * are the registrar's page: patients' 9 values, encounters' id, time, `kind_legacy` and `kind`.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { checkPacked, packedColumn, PackedRows } from '../src/db/packed-phi.ts';
import { PATIENT_PACKED_COLUMNS } from '../src/db/patients.ts';
import { GATEWAY_TYPES } from '../src/db/type-parsers.ts';
import { procStat } from './cpu.ts';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    rounds: { type: 'string', default: '12' },
    pages: { type: 'string', default: '500' },
    only: { type: 'string' },
    warmup: { type: 'string', default: '300' },
    // Rows a page: 1 is a read by id's patient row and its encounters.
    limit: { type: 'string', default: '100' },
  },
});
if (args.url === undefined) throw new Error('--url is required');

const PHI = `array_send(ARRAY[${[...PATIENT_PACKED_COLUMNS.map((c) => `p.${c}`), 'p.key_wrapped'].join(', ')}])`;
const WIDTH = 4;
const ENCOUNTERS = `array_send(ARRAY(SELECT ARRAY[uuid_send(e.id), textsend(e.occurred_at::text), textsend(e.kind_legacy), e.kind] FROM phigate.encounters e
                                    WHERE e.patient_id = p.id ORDER BY e.occurred_at DESC, e.id))`;
const FROM = `FROM phigate.patients p ORDER BY p.id LIMIT ${Number(args.limit)}`;
type Row = Record<string, unknown>;

// What the gateway does with a row's two values: checks the packed values whole, makes a view of
// each ciphertext and the key, the encounters' ids and texts.
function consume(phi: Buffer, encounters: Buffer): number {
  checkPacked(phi, PATIENT_PACKED_COLUMNS.length + 1);
  let n = 0;
  for (let i = 0; i <= PATIENT_PACKED_COLUMNS.length; i++) n += packedColumn(phi, i)?.length ?? 0;
  const rows = new PackedRows(encounters, WIDTH);
  for (let r = 0; r < rows.count; r++) {
    n += rows.nextUuid().length + (rows.nextText()?.length ?? 0);
    rows.nextText();
    n += rows.nextView()?.length ?? 0;
  }
  return n;
}

// PostgreSQL's base64 (src/backend/utils/adt/encode.c): 4 characters per 3 bytes, `=` padding, and
// a newline after every 76 characters of full groups. Node's decoder skips what is not base64, so
// the decoded length, the padding and every newline's place are checked: a character skipped or
// stopped at leaves fewer bytes than the text's length and padding say.
function strictBase64(text: string): Buffer {
  const out = Buffer.from(text, 'base64');
  const n = out.length;
  const groups = Math.floor(n / 3);
  if (text.length !== 4 * Math.ceil(n / 3) + Math.floor(groups / 19)) throw new Error('base64: length');
  const pad = (3 - (n % 3)) % 3;
  const last = text.length - 1;
  if ((pad > 0) !== (text.charCodeAt(last) === 0x3d) || (pad === 2) !== (text.charCodeAt(last - 1) === 0x3d)) throw new Error('base64: padding');
  for (let at = 76; at < text.length; at += 77) if (text.charCodeAt(at) !== 0x0a) throw new Error('base64: line');
  return out;
}

// The one-value form's ids and clinics, made as pg makes the other forms' columns.
const ids: string[] = [];

interface Form {
  readonly name: string;
  readonly text: string;
  readonly consume: (rows: Row[]) => number;
}

const FORMS: readonly Form[] = [
  {
    name: 'hex, two values a row (today)',
    text: `SELECT p.id, p.clinic_id, ${PHI} AS phi, ${ENCOUNTERS} AS encounters ${FROM}`,
    consume: (rows) => rows.reduce((n, r) => n + consume(r.phi as Buffer, r.encounters as Buffer), 0),
  },
  {
    name: 'base64, two values a row, checked',
    text: `SELECT p.id, p.clinic_id, encode(${PHI}, 'base64') AS phi, encode(${ENCOUNTERS}, 'base64') AS encounters ${FROM}`,
    consume: (rows) => rows.reduce((n, r) => n + consume(strictBase64(r.phi as string), strictBase64(r.encounters as string)), 0),
  },
  {
    name: 'hex, one value a page',
    text: `SELECT array_send(ARRAY(SELECT array_send(ARRAY[uuid_send(p.id), textsend(p.clinic_id), ${PHI}, ${ENCOUNTERS}]) ${FROM})) AS page`,
    consume: (rows) => {
      const page = rows[0]!.page as Buffer;
      let at = 20;
      let n = 0;
      ids.length = 0;
      for (let r = page.readInt32BE(12); r > 0; r--) {
        const length = page.readInt32BE(at);
        const row = page.subarray(at + 4, at + 4 + length);
        at += 4 + length;
        checkPacked(row, 4);
        ids.push(packedColumn(row, 0)!.toString('hex'), packedColumn(row, 1)!.toString('utf8'));
        n += consume(packedColumn(row, 2)!, packedColumn(row, 3)!);
      }
      return n;
    },
  },
];

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const client = new pg.Client({ connectionString: args.url, types: GATEWAY_TYPES });
await client.connect();
const pages = Number(args.pages);

async function pageOf(i: number): Promise<number> {
  const form = FORMS[i]!;
  const { rows } = await client.query<Row>({ name: `t${i}`, text: form.text });
  return form.consume(rows);
}

if (args.only !== undefined) {
  const i = Number(args.only);
  let sink = 0;
  for (let n = 0; n < pages; n++) sink += await pageOf(i);
  process.stdout.write(`${JSON.stringify({ form: FORMS[i]!.name, pages, sink, pid: (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid })}\n`);
  await client.end();
  process.exit(0);
}

// Every form gives the same values, and what each carries on the wire.
const raw = new pg.Client({ connectionString: args.url, types: { getTypeParser: () => (s: string) => s } as pg.CustomTypesConfig });
await raw.connect();
const reference = await pageOf(0);
for (let i = 0; i < FORMS.length; i++) {
  if ((await pageOf(i)) !== reference) throw new Error(`${FORMS[i]!.name}: not the same values`);
  let bytes = 0;
  for (const row of (await raw.query<Row>(FORMS[i]!.text)).rows) for (const v of Object.values(row)) if (v !== null) bytes += 4 + Buffer.byteLength(v as string);
  process.stdout.write(`${JSON.stringify({ form: FORMS[i]!.name, wireBytesPerPage: bytes })}\n`);
}
await raw.end();
for (let i = 0; i < FORMS.length; i++) for (let n = 0; n < Number(args.warmup); n++) await pageOf(i);

const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
const results = FORMS.map(() => ({ pg: [] as number[], node: [] as number[] }));
for (let round = 0; round < Number(args.rounds); round++) {
  for (let k = 0; k < FORMS.length; k++) {
    const i = (k + round) % FORMS.length;
    const before = procStat(pid)!.cpuMs;
    const own = process.cpuUsage();
    for (let n = 0; n < pages; n++) await pageOf(i);
    const used = process.cpuUsage(own);
    results[i]!.pg.push((procStat(pid)!.cpuMs - before) / pages);
    results[i]!.node.push((used.user + used.system) / 1000 / pages);
  }
}
for (let i = 0; i < FORMS.length; i++) {
  const r = results[i]!;
  const diffs = r.node.map((x, k) => x - results[0]!.node[k]!);
  process.stdout.write(
    `${JSON.stringify({ form: FORMS[i]!.name, pgMsPerPage: Number(median(r.pg).toFixed(3)), nodeMsPerPage: Number(median(r.node).toFixed(3)), nodeMinusHex: Number(median(diffs).toFixed(3)), lowerThanHex: diffs.filter((d) => d < 0).length })}\n`,
  );
}
await client.end();
