/**
 * How a row's ciphertexts travel from PostgreSQL to Buffers in the gateway (bench/README.md, "The
 * page's ciphertexts in one value per row"): the page's 100 patient rows, their eight PHI columns,
 * read as the gateway's pools read them, in five forms, rounds rotated in one process on one
 * connection; per form, the backend's CPU (/proc) and this process's CPU (process.cpuUsage: the
 * socket, pg's parsing, the Buffers) per page, and the bytes of the rows' values.
 *
 *   npx tsx bench/phi-transport.ts --url postgres://postgres@127.0.0.1:5432/<db> --rounds 20 --pages 300
 *
 * `--url` is a superuser's (row security is not what is measured) on a database bench/read-txn.ts
 * (or the bench) seeded.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { unpackPhi } from '../src/db/packed-phi.ts';
import { PATIENT_PACKED_COLUMNS } from '../src/db/patients.ts';
import { GATEWAY_TYPES } from '../src/db/type-parsers.ts';
import { procStat } from './cpu.ts';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    rounds: { type: 'string', default: '20' },
    pages: { type: 'string', default: '300' },
    // One form alone, its pages on a fresh connection and nothing else: for callgrind's count of one backend.
    only: { type: 'string' },
  },
});
if (args.url === undefined) throw new Error('--url is required');

const COLUMNS = PATIENT_PACKED_COLUMNS;
const FROM = 'FROM phigate.patients p ORDER BY p.id LIMIT 100';
type Row = Record<string, unknown>;

interface Form {
  readonly name: string;
  readonly text: string;
  /** The row's ciphertexts as Buffers, as the gateway's row building would make them. */
  readonly buffers: (row: Row) => (Buffer | null)[];
}

const FORMS: readonly Form[] = [
  { name: 'hex per column (today)', text: `SELECT p.id, ${COLUMNS.map((c) => `p.${c}`).join(', ')} ${FROM}`, buffers: (r) => COLUMNS.map((c) => r[c] as Buffer | null) },
  {
    name: 'base64 per column',
    text: `SELECT p.id, ${COLUMNS.map((c) => `encode(p.${c}, 'base64') AS ${c}`).join(', ')} ${FROM}`,
    buffers: (r) => COLUMNS.map((c) => (r[c] === null ? null : Buffer.from(r[c] as string, 'base64'))),
  },
  {
    name: 'array_send, hex',
    text: `SELECT p.id, array_send(ARRAY[${COLUMNS.map((c) => `p.${c}`).join(', ')}]) AS phi ${FROM}`,
    buffers: (r) => unpackPhi(r.phi as Buffer, COLUMNS.length),
  },
  {
    name: 'array_send, base64',
    text: `SELECT p.id, encode(array_send(ARRAY[${COLUMNS.map((c) => `p.${c}`).join(', ')}]), 'base64') AS phi ${FROM}`,
    buffers: (r) => unpackPhi(Buffer.from(r.phi as string, 'base64'), COLUMNS.length),
  },
  {
    name: 'record_send, hex',
    text: `SELECT p.id, record_send(ROW(${COLUMNS.map((c) => `p.${c}`).join(', ')})) AS phi ${FROM}`,
    buffers: (r) => unpackRecord(r.phi as Buffer),
  },
];

// record_send's layout: the column count, then each column's type OID, int32 length (-1 for NULL) and bytes.
function unpackRecord(packed: Buffer): (Buffer | null)[] {
  const out: (Buffer | null)[] = [];
  let at = 4;
  for (let i = packed.readInt32BE(0); i > 0; i--) {
    const length = packed.readInt32BE(at + 4);
    at += 8;
    out.push(length < 0 ? null : packed.subarray(at, (at += length)));
  }
  return out;
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const client = new pg.Client({ connectionString: args.url, types: GATEWAY_TYPES });
await client.connect();
if (args.only !== undefined) {
  const form = FORMS[Number(args.only)]!;
  for (let n = 0; n < Number(args.pages); n++) await client.query<Row>({ name: 'only', text: form.text });
  process.stdout.write(`${JSON.stringify({ form: form.name, pages: Number(args.pages), pid: (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid })}\n`);
  await client.end();
  process.exit(0);
}
const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

// The bytes of each form's values (what the rows carry beyond the id), and that every form gives
// the same Buffers as today's.
const raw = new pg.Client({ connectionString: args.url, types: { getTypeParser: () => (s: string) => s } as pg.CustomTypesConfig });
await raw.connect();
const reference = (await client.query<Row>(FORMS[0]!.text)).rows.map(FORMS[0]!.buffers);
for (const form of FORMS) {
  const rows = (await client.query<Row>(form.text)).rows.map(form.buffers);
  if (JSON.stringify(rows) !== JSON.stringify(reference)) throw new Error(`${form.name}: not the same ciphertexts`);
  const texts = (await raw.query<Row>(form.text)).rows;
  let bytes = 0;
  for (const row of texts) for (const [k, v] of Object.entries(row)) if (k !== 'id' && v !== null) bytes += 4 + Buffer.byteLength(v as string);
  process.stdout.write(`${JSON.stringify({ form: form.name, valueBytesPerPage: bytes })}\n`);
}
await raw.end();

const pages = Number(args.pages);
const results = FORMS.map(() => ({ pg: [] as number[], node: [] as number[] }));
for (let round = 0; round < Number(args.rounds); round++) {
  for (let k = 0; k < FORMS.length; k++) {
    const i = (k + round) % FORMS.length;
    const form = FORMS[i]!;
    const before = procStat(pid)!.cpuMs;
    const own = process.cpuUsage();
    let sink = 0;
    for (let n = 0; n < pages; n++) {
      const { rows } = await client.query<Row>({ name: `t${i}`, text: form.text });
      for (const row of rows) for (const b of form.buffers(row)) sink += b === null ? 0 : b.length;
    }
    const used = process.cpuUsage(own);
    if (sink === 0) throw new Error('no ciphertext read');
    results[i]!.pg.push((procStat(pid)!.cpuMs - before) / pages);
    results[i]!.node.push((used.user + used.system) / 1000 / pages);
  }
}
for (let i = 0; i < FORMS.length; i++) {
  const r = results[i]!;
  process.stdout.write(`${JSON.stringify({ form: FORMS[i]!.name, pgMsPerPage: Number(median(r.pg).toFixed(3)), nodeMsPerPage: Number(median(r.node).toFixed(3)) })}\n`);
}
await client.end();
