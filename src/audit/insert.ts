import { randomUUID } from 'node:crypto';
import type { Statement } from '../db/transaction.ts';
import { MAX_RECORD_EVENTS } from './canonical.ts';
import type { AuditEvent, AuditRequest } from './event.ts';
import { binaryUuid, binaryUuidArray } from './uuid-array.ts';

/** One request's events, as one batch writes them. */
export interface AuditPart {
  readonly request: AuditRequest;
  readonly events: readonly AuditEvent[];
}


// One statement for a whole batch, however many requests and fields it holds, writing the narrow
// layout of schema/migrations/028_audit_records.sql: one row of phigate.audit_records per
// (request, patient, role, purpose, break-glass, grant), its events in parallel arrays.
//
// Built for PostgreSQL's CPU (measured with the batches of a page and of reads by id): the set
// scanned is the records' (a page of 100 patients is 100 rows, not 800), and a fact repeated is
// sent and parsed once: the facts of a request ($2-$6) and of a (role, purpose, break-glass, grant)
// ($7-$10) are subscripts of small arrays, and the per-event arrays other than record_ids, the same
// for every patient of a page, are distinct "shapes" ($11-$14) parsed once each in a materialised
// CTE. Slicing the records' text arrays out of batch-wide flat arrays instead cost a walk from the
// array's start per record (quadratic: 4.5 ms for a batch of two pages). The record ids are
// different: a flat uuid[] of every event's ($21), sent in binary (src/audit/uuid-array.ts), with
// no NULL element (a per-batch sentinel, $22, stands for one and array_replace turns it back), so
// that a record's slice from its first event ($19) is found by arithmetic, not by a walk. Before,
// each record's uuid[] literal was parsed from text twice (the text[] around it, then the cast),
// every uuid with 16 strtoul calls: a fifth of a page batch's instructions in PostgreSQL.
//
// A record finds its shape in one of two ways. A batch of a few shapes (a page holds one to a
// few: patients differ in their count of encounters) scans them for each record, in the order the
// records are inserted, which is the order of unnest's ordinality: the planner knows that order
// and sorts nothing. Hashing the shapes instead hashed the records and sorted them again, whole
// arrays and all, for the ORDER BY: 0.58 M instructions of a page batch's 9.9 M more (callgrind,
// bench/README.md, branch wridx). The scan costs each record a visit of every shape, so a batch of
// more than FEW_SHAPES shapes is hashed and sorted as before.
//
// The records and the batch's own row are inserted together, and the statement fails (SQLSTATE
// PH500, audit_batch_written in schema/migrations/051_audit_batch_cost.sql) unless the records
// that went in hold exactly as many events as were meant to be written (counted once the records
// are in): a trigger that drops a record or trims its arrays makes the COMMIT pipelined behind it
// roll back, and nothing of the batch is kept.
const records = (join: string) => `
  s AS MATERIALIZED (
    SELECT s.shape, s.actions::text[] AS actions, s.type_names::text[] AS type_names, s.fields::text[] AS fields,
           s.details::text[] AS details
    FROM unnest($11::text[], $12::text[], $13::text[], $14::text[]) WITH ORDINALITY AS s(actions, type_names, fields, details, shape)
  ), ins AS (
    INSERT INTO phigate.audit_records
      (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id,
       patient_id, actions, type_names, fields, record_ids, details)
    SELECT $1::uuid, ($2::text[])[x.req], ($3::text[])[x.req], ($4::text[])[x.req], ($5::text[])[x.req], ($6::text[])[x.req],
           ($7::text[])[x.grp], ($8::text[])[x.grp], ($9::boolean[])[x.grp], ($10::uuid[])[x.grp], x.patient_id,
           s.actions, s.type_names, s.fields,
           array_replace(($21::uuid[])[x.lo : x.lo + cardinality(s.actions) - 1], $22::uuid, NULL), s.details
    FROM unnest($15::int[], $16::int[], $17::int[], $18::uuid[], $19::int[]) WITH ORDINALITY AS x(req, grp, shape, patient_id, lo, n)
    ${join}
    ORDER BY x.n
    RETURNING 1
  )`;
// A batch that holds records of several patients (a page: schema/migrations/061_audit_records_v3.sql)
// also writes phigate.audit_records_v3, one row per (request, group, shape) of two or more
// patients: its patients a slice of $28 from $27 ($29 of them), its record ids a slice of $21 as
// above, L per patient. The v2 records' arrays ($15-$19) stay as they were. Such a batch checks
// its count with audit_batch_written_v3, which counts both tables; a batch of v2 records only
// sends the statement it sent before 061, so a read by id or by SSN costs what it did.
const recordsV3 = (join: string) => `
  ${records(join)}, ins3 AS (
    INSERT INTO phigate.audit_records_v3
      (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id,
       patient_ids, actions, type_names, fields, record_ids, details)
    SELECT $1::uuid, ($2::text[])[y.req], ($3::text[])[y.req], ($4::text[])[y.req], ($5::text[])[y.req], ($6::text[])[y.req],
           ($7::text[])[y.grp], ($8::text[])[y.grp], ($9::boolean[])[y.grp], ($10::uuid[])[y.grp],
           ($28::uuid[])[y.plo : y.plo + y.np - 1], s.actions, s.type_names, s.fields,
           array_replace(($21::uuid[])[y.lo : y.lo + cardinality(s.actions) * y.np - 1], $22::uuid, NULL), s.details
    FROM unnest($23::int[], $24::int[], $25::int[], $26::int[], $27::int[], $29::int[]) WITH ORDINALITY AS y(req, grp, shape, lo, plo, np, n)
    ${join.replaceAll('x.shape', 'y.shape')}
    ORDER BY y.n
    RETURNING 1
  )`;
/** At most this many shapes, a record scans them (no sort); more, they are hashed (a sort). */
export const FEW_SHAPES = 16;
const SCAN = 'CROSS JOIN LATERAL (SELECT s.* FROM s WHERE s.shape = x.shape OFFSET 0) s';
const HASH = 'JOIN s USING (shape)';
const SCANNED = records(SCAN);
const HASHED = records(HASH);
const SCANNED_V3 = recordsV3(SCAN);
const HASHED_V3 = recordsV3(HASH);
/** Where the statement's parameters past the records' own start: 23 for v2 records only, 30 with v3 records. */
const V2_PARAMS = 22;
const V3_PARAMS = 29;
const checkedBy = (recordsCte: string) => (recordsCte === SCANNED || recordsCte === HASHED ? 'audit_batch_written' : 'audit_batch_written_v3');
const done = (recordsCte: string) =>
  recordsCte === SCANNED || recordsCte === HASHED ? '(SELECT count(*) FROM ins) AS done' : '(SELECT count(*) FROM ins) AS done, (SELECT count(*) FROM ins3) AS done3';
const insertText = (recordsCte: string) => `
  WITH ${recordsCte}, b AS (
    INSERT INTO phigate.audit_batches (id, events)
    SELECT $1::uuid, phigate.${checkedBy(recordsCte)}($1::uuid, $20, 0, 0) FROM ${done(recordsCte)}
    RETURNING events
  )
  SELECT events FROM b`;

// The same INSERT with the batch's PHI charges made in the statement, for the common case where
// every charge is accepted. Its parameters are the INSERT's, then (numbered from there, p(n)): 1
// the count of charges, 2-7 each charge's principal, caps and later charges, 8-11 each
// principal's batch totals. The batch row is written only when all the charges were
// (audit_batch_written, 051), else the statement fails with PH430, nothing of the batch is kept,
// and the writer sends the batch again, charge_phi_usage first, for each charge's verdict.
//
// charge_phi_usage's rule without its PL/pgSQL loop (three statements and their executor starts
// per principal): a principal's charges are accepted in order while its minute stays within each
// charge's cap, so all of them are accepted exactly when, for each charge, the minute's total
// before the batch plus the principal's charges up to and including it is within that charge's
// cap. Each principal's row is added its batch total (8-11) by one INSERT ... ON CONFLICT DO
// UPDATE, which locks the rows in charge_phi_usage's global order (actor_kind, actor in "C"), so
// writers still never deadlock. A charge then fits when the row's new total less the principal's
// charges after it in the batch (6, 7) is within its cap (4, 5). Totals stay far inside
// integer: minutes are capped at 1e9 (src/policy/load.ts) and a batch shows a few thousand values.
// A principal's first charge of a minute (its row inserted: xmax 0) drops its past minutes as
// charge_phi_usage does, skipping rows another transaction holds (that one is dropping them, or a
// later minute's first charge will) so that it never waits.
const chargedText = (recordsCte: string, first: number) => {
  const p = (n: number) => `$${first + n}`;
  return `
  WITH u AS (
    INSERT INTO phigate.phi_usage AS u (actor_kind, actor, minute, rows_used, values_used)
    SELECT p.k, p.a, date_trunc('minute', clock_timestamp()), p.r, p.v
    FROM unnest(${p(8)}::text[], ${p(9)}::text[], ${p(10)}::int[], ${p(11)}::int[]) AS p(k, a, r, v)
    ORDER BY p.k COLLATE "C", p.a COLLATE "C"
    ON CONFLICT (actor_kind, actor, minute) DO UPDATE SET rows_used = u.rows_used + excluded.rows_used, values_used = u.values_used + excluded.values_used
    RETURNING u.actor_kind, u.actor, u.minute, u.rows_used, u.values_used, u.xmax = 0 AS fresh
  ), past AS (
    DELETE FROM phigate.phi_usage o
    USING (
      SELECT x.ctid AS row FROM phigate.phi_usage x JOIN u ON u.fresh AND x.actor_kind = u.actor_kind AND x.actor = u.actor AND x.minute < u.minute
      FOR UPDATE OF x SKIP LOCKED
    ) AS gone
    WHERE o.ctid = gone.row
  ), v AS MATERIALIZED (
    SELECT count(*) FILTER (WHERE u.rows_used - c.later_rows <= c.cap_rows AND u.values_used - c.later_values <= c.cap_values) AS accepted
    FROM unnest(${p(2)}::text[], ${p(3)}::text[], ${p(4)}::int[], ${p(5)}::int[], ${p(6)}::int[], ${p(7)}::int[]) AS c(k, a, cap_rows, cap_values, later_rows, later_values)
    JOIN u ON u.actor_kind = c.k AND u.actor = c.a
  ), ${recordsCte}, b AS (
    INSERT INTO phigate.audit_batches (id, events)
    SELECT $1::uuid, phigate.${checkedBy(recordsCte)}($1::uuid, $20, (SELECT v.accepted FROM v), ${p(1)})
    FROM ${done(recordsCte)}
    RETURNING events
  )
  SELECT events FROM b`;
};

// The eight statements, each under a prepared statement name of its own.
const INSERT_SCANNED = insertText(SCANNED);
const INSERT_HASHED = insertText(HASHED);
const INSERT_SCANNED_V3 = insertText(SCANNED_V3);
const INSERT_HASHED_V3 = insertText(HASHED_V3);
const CHARGED = new Map([
  [INSERT_SCANNED, chargedText(SCANNED, V2_PARAMS)],
  [INSERT_HASHED, chargedText(HASHED, V2_PARAMS)],
  [INSERT_SCANNED_V3, chargedText(SCANNED_V3, V3_PARAMS)],
  [INSERT_HASHED_V3, chargedText(HASHED_V3, V3_PARAMS)],
]);
const NAMES = new Map([
  [INSERT_SCANNED, 'phigate_audit_insert'],
  [INSERT_HASHED, 'phigate_audit_insert_hashed'],
  [INSERT_SCANNED_V3, 'phigate_audit_insert_v3'],
  [INSERT_HASHED_V3, 'phigate_audit_insert_hashed_v3'],
  [CHARGED.get(INSERT_SCANNED)!, 'phigate_audit_charged_insert'],
  [CHARGED.get(INSERT_HASHED)!, 'phigate_audit_charged_insert_hashed'],
  [CHARGED.get(INSERT_SCANNED_V3)!, 'phigate_audit_charged_insert_v3'],
  [CHARGED.get(INSERT_HASHED_V3)!, 'phigate_audit_charged_insert_hashed_v3'],
]);

/** The prepared statement name of a statement of auditInsert or chargedAuditInsert. */
export function auditStatementName(statement: Statement): string {
  const name = NAMES.get(statement.text);
  if (name === undefined) throw new Error('auditStatementName takes auditInsert and chargedAuditInsert statements');
  return name;
}

/**
 * Whether `id` is a uuid in the form PostgreSQL reads (8-4-4-4-12 hex digits, either case): the
 * same rule as the regular expression it replaces, one pass over the characters, no allocation.
 */
export function isUuid(id: string): boolean {
  if (id.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = id.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 0x2d) return false;
    } else if (!((c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66))) {
      return false;
    }
  }
  return true;
}

/**
 * An element of a uuid[] literal written directly: pg's generic array encoder escapes and
 * concatenates element by element, which was the largest allocation of a page request. Ids come
 * from uuid columns or validated input; one that is not a uuid fails the write rather than reach
 * the statement.
 */
function uuidElement(id: string | null): string {
  if (id === null) return 'NULL';
  if (!isUuid(id)) throw new Error('audit event id is not a uuid');
  return id;
}

const NIL = '00000000-0000-0000-0000-000000000000';

/**
 * The record ids for $21 and the uuid standing for NULL in them ($22): the nil uuid, which no id
 * the database generates is, unless an event carries it, then a random one no event carries.
 */
function recordIdsParam(ids: readonly (string | null)[]): [Buffer, Buffer] {
  let sentinel = NIL;
  let encoded = binaryUuidArray(ids, sentinel);
  while (encoded === null) {
    sentinel = randomUUID();
    encoded = binaryUuidArray(ids, sentinel);
  }
  return [encoded, binaryUuid(sentinel)];
}

const NEEDS_ESCAPE = /[\\"]/;

/** A text[] literal, every element quoted: right for any string, and a parameter, never SQL text. */
function textArray(values: readonly (string | null)[]): string {
  let literal = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (i > 0) literal += ',';
    literal += v === null ? 'NULL' : NEEDS_ESCAPE.test(v) ? `"${v.replace(/[\\"]/g, '\\$&')}"` : `"${v}"`;
  }
  return `${literal}}`;
}

const NONE = '\u0001';

/** A (role, purpose, break-glass, grant) of the batch: its subscript in $7-$10. */
interface Group {
  readonly n: number;
  readonly role: string | null;
  readonly purpose: string;
  readonly breakGlass: boolean;
  readonly grantId: string | null;
}

/** One request's events about one patient under one group, in the order they came. */
interface Pending {
  readonly group: Group;
  readonly patientId: string | null;
  readonly events: AuditEvent[];
  /** The same patient's record under another group, if any. */
  next: Pending | null;
}

/** A record as written: one group and shape, one patient's events (v2) or several patients' in turn (v3). */
interface Written {
  readonly group: Group;
  readonly shape: Shape;
  readonly patients: (string | null)[];
  readonly events: (readonly AuditEvent[])[];
}

/** The int[] literals of one kind of record, built as the records are: request, group, shape, first event, first patient, patients. */
class Literals {
  n = 0;
  req = '{';
  grp = '{';
  shp = '{';
  starts = '{';
  pstarts = '{';
  counts = '{';
  /** One record's request, group, shape and first event; a v3 record's first patient and count of patients too. */
  add(req: number, grp: number, shp: number, start: number, patients?: { readonly first: number; readonly count: number }): void {
    const sep = this.n++ === 0 ? '' : ',';
    this.req += sep + req;
    this.grp += sep + grp;
    this.shp += sep + shp;
    this.starts += sep + start;
    if (patients === undefined) return;
    this.pstarts += sep + patients.first;
    this.counts += sep + patients.count;
  }
}

/** The per-event arrays of a record, sent once per batch; `n` is its subscript in $11-$14. */
interface Shape {
  readonly n: number;
  readonly events: readonly AuditEvent[];
}

const sameGroup = (g: Group, e: AuditEvent) => g.role === e.role && g.purpose === e.purpose && g.breakGlass === e.breakGlass && g.grantId === (e.grantId ?? null);

/** Whether `events` write the same per-event arrays but record_ids as `shape`'s. */
function sameShape(shape: Shape, events: readonly AuditEvent[]): boolean {
  const a = shape.events;
  if (a.length !== events.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = events[i]!;
    if (x.action !== y.action || x.typeName !== y.typeName || x.field !== y.field || (x.detail ?? null) !== (y.detail ?? null)) return false;
  }
  return true;
}

/** The statement that writes `parts` as batch `batchId`; its one row's `events` is the count written. */
export function auditInsert(batchId: string, parts: readonly AuditPart[]): Statement {
  if (!isUuid(batchId)) throw new Error('audit batch id is not a uuid');
  const requests = {
    requestId: [] as string[],
    actor: [] as string[],
    actorKind: [] as string[],
    clientAddr: [] as (string | null)[],
    credentialId: [] as (string | null)[],
  };
  // Nearly every event of a batch has the group of the event before it: compared field by field,
  // no key is built for it. The map serves the rest.
  const groupOf = new Map<string, Group>();
  const groups: Group[] = [];
  let lastGroup = null as Group | null;
  // Most records repeat a shape already seen (a page's 100 patients share a few): the last shape
  // of the record's length is compared event by event first; only on a miss is the shape's key
  // built, and the four array literals are written only for a shape not yet seen.
  const shapeOf = new Map<string, Shape>();
  const lastShapeOfLength = new Map<number, Shape>();
  const shapes: Shape[] = [];
  // The per-record arrays, as literals, of the v2 records and of the v3 records.
  const v2 = new Literals();
  const v3 = new Literals();
  const patients: (string | null)[] = [];
  const v3Patients: (string | null)[] = [];
  const recordIds: (string | null)[] = [];
  let total = 0;
  for (const part of parts) {
    if (part.events.length === 0) continue;
    requests.requestId.push(part.request.requestId);
    requests.actor.push(part.request.actor);
    requests.actorKind.push(part.request.actorKind);
    requests.clientAddr.push(part.request.clientAddr);
    requests.credentialId.push(part.request.credentialId ?? null);
    const r = requests.requestId.length;
    // The request's records in the order of their first event, each keeping its events' order.
    const byPatient = new Map<string | null, Pending>();
    const pending: Pending[] = [];
    let last = null as Pending | null;
    for (const e of part.events) {
      let group: Group | null = lastGroup;
      if (group === null || !sameGroup(group, e)) {
        const key = `${e.role ?? NONE}\u0000${e.purpose}\u0000${e.breakGlass}\u0000${e.grantId ?? NONE}`;
        group = groupOf.get(key) ?? null;
        if (group === null) {
          group = { n: groups.length + 1, role: e.role, purpose: e.purpose, breakGlass: e.breakGlass, grantId: e.grantId ?? null };
          groupOf.set(key, group);
          groups.push(group);
        }
        lastGroup = group;
      }
      const patientId = e.patientId ?? null;
      let record: Pending | null = last;
      if (record === null || record.patientId !== patientId || record.group !== group) {
        const first = byPatient.get(patientId);
        record = first ?? null;
        while (record !== null && record.group !== group) record = record.next;
        if (record === null) {
          record = { group, patientId, events: [], next: null };
          pending.push(record);
          if (first === undefined) byPatient.set(patientId, record);
          else {
            let tail = first;
            while (tail.next !== null) tail = tail.next;
            tail.next = record;
          }
        }
        last = record;
      }
      record.events.push(e);
    }
    // The request's records as written: per (group, shape), the patients that have it, in the
    // order of each one's first event; a shape of one patient (or of none) is a v2 record.
    const byShape = new Map<string, Written>();
    const out: Written[] = [];
    for (const record of pending) {
      for (let start = 0; start < record.events.length; start += MAX_RECORD_EVENTS) {
        const events = record.events.length <= MAX_RECORD_EVENTS ? record.events : record.events.slice(start, start + MAX_RECORD_EVENTS);
        let shape = lastShapeOfLength.get(events.length);
        if (shape === undefined || !sameShape(shape, events)) {
          let key = '';
          for (const e of events) key += `${e.action}\u0000${e.typeName}\u0000${e.field ?? NONE}\u0000${e.detail ?? NONE}\u0002`;
          shape = shapeOf.get(key);
          if (shape === undefined) {
            shape = { n: shapes.length + 1, events };
            shapeOf.set(key, shape);
            shapes.push(shape);
          }
          lastShapeOfLength.set(events.length, shape);
        }
        const key = record.patientId === null ? null : `${record.group.n}\u0000${shape.n}`;
        let w = key === null ? undefined : byShape.get(key);
        // A record holds at most MAX_RECORD_EVENTS events: past that, the next patients start another.
        // It lists a patient once (061's unique key): a patient's next slice of that many starts another too.
        if (w === undefined || (w.patients.length + 1) * events.length > MAX_RECORD_EVENTS || w.patients.at(-1) === record.patientId) {
          w = { group: record.group, shape, patients: [], events: [] };
          out.push(w);
          if (key !== null) byShape.set(key, w);
        }
        w.patients.push(record.patientId);
        w.events.push(events);
      }
    }
    for (const w of out) {
      const first = total + 1;
      for (const events of w.events) {
        for (let i = 0; i < events.length; i++) recordIds.push(events[i]!.recordId);
        total += events.length;
      }
      if (w.patients.length === 1) {
        v2.add(r, w.group.n, w.shape.n, first);
        patients.push(w.patients[0]!);
      } else {
        v3.add(r, w.group.n, w.shape.n, first, { first: v3Patients.length + 1, count: w.patients.length });
        for (const p of w.patients) v3Patients.push(p);
      }
    }
  }
  const [recordIdsBytes, sentinel] = recordIdsParam(recordIds);
  const few = shapes.length <= FEW_SHAPES;
  const values = [
    batchId,
    textArray(requests.requestId),
    textArray(requests.actor),
    textArray(requests.actorKind),
    textArray(requests.clientAddr),
    textArray(requests.credentialId),
    textArray(groups.map((g) => g.role)),
    textArray(groups.map((g) => g.purpose)),
    `{${groups.map((g) => g.breakGlass).join(',')}}`,
    `{${groups.map((g) => uuidElement(g.grantId)).join(',')}}`,
    textArray(shapes.map((s) => textArray(s.events.map((e) => e.action)))),
    textArray(shapes.map((s) => textArray(s.events.map((e) => e.typeName)))),
    textArray(shapes.map((s) => textArray(s.events.map((e) => e.field)))),
    textArray(shapes.map((s) => textArray(s.events.map((e) => e.detail ?? null)))),
    `${v2.req}}`,
    `${v2.grp}}`,
    `${v2.shp}}`,
    binaryUuidArray(patients),
    `${v2.starts}}`,
    total,
    recordIdsBytes,
    sentinel,
  ];
  if (v3.n === 0) return { text: few ? INSERT_SCANNED : INSERT_HASHED, values };
  values.push(`${v3.req}}`, `${v3.grp}}`, `${v3.shp}}`, `${v3.starts}}`, `${v3.pstarts}}`, binaryUuidArray(v3Patients), `${v3.counts}}`);
  return { text: few ? INSERT_SCANNED_V3 : INSERT_HASHED_V3, values };
}

/**
 * `insert` (auditInsert's) with the batch's PHI charges made in the same statement: `charges`
 * holds the arrays of chargeBatchStatement (src/db/phi-usage.ts) for `count` charges. The
 * statement writes every event of `insert` and fails with CHARGE_REFUSED_SQLSTATE unless every
 * charge was accepted. Per principal, its total and each charge's later charges are summed here.
 */
export function chargedAuditInsert(insert: Statement, charges: Statement, count: number): Statement {
  const text = CHARGED.get(insert.text);
  if (text === undefined || insert.values === undefined || charges.values?.length !== 6) {
    throw new Error('chargedAuditInsert takes auditInsert and chargeBatchStatement statements');
  }
  const [kinds, actors, rows, values, capRows, capValues] = charges.values as [string[], string[], number[], number[], number[], number[]];
  if (kinds.length !== count) throw new Error('chargedAuditInsert: the charges are not `count`');
  // Per principal, in the order first charged: its totals. Then, walking the charges backwards,
  // what each principal charges after each charge.
  const totals = new Map<string, { kind: string; actor: string; rows: number; values: number }>();
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const key = `${kinds[i]}\u0000${actors[i]}`;
    keys.push(key);
    const t = totals.get(key);
    if (t === undefined) totals.set(key, { kind: kinds[i]!, actor: actors[i]!, rows: rows[i]!, values: values[i]! });
    else {
      t.rows += rows[i]!;
      t.values += values[i]!;
    }
  }
  const laterRows: number[] = new Array<number>(count);
  const laterValues: number[] = new Array<number>(count);
  const after = new Map<string, { rows: number; values: number }>();
  for (let i = count - 1; i >= 0; i--) {
    const a = after.get(keys[i]!) ?? { rows: 0, values: 0 };
    laterRows[i] = a.rows;
    laterValues[i] = a.values;
    after.set(keys[i]!, { rows: a.rows + rows[i]!, values: a.values + values[i]! });
  }
  const principals = [...totals.values()];
  return {
    text,
    values: [
      ...insert.values,
      count,
      kinds,
      actors,
      capRows,
      capValues,
      laterRows,
      laterValues,
      principals.map((p) => p.kind),
      principals.map((p) => p.actor),
      principals.map((p) => p.rows),
      principals.map((p) => p.values),
    ],
  };
}

/** SQLSTATE of audit_batch_written (051) and expect_audit_rows (009): the rows written differ from the events meant to be written. */
export const AUDIT_ROWS_MISMATCH_SQLSTATE = 'PH500';

/** SQLSTATE of audit_batch_written (051): a charge of the batch was refused, or has no verdict. */
export const CHARGE_REFUSED_SQLSTATE = 'PH430';
