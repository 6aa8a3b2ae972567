import type { Statement } from '../db/transaction.ts';
import { MAX_RECORD_EVENTS } from './canonical.ts';
import type { AuditEvent, AuditRequest } from './event.ts';

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
// CTE. A record's record_ids is its own uuid[] literal, parsed once. Slicing the records' events
// out of batch-wide flat arrays instead cost a walk from the array's start per record (quadratic:
// 4.5 ms for a batch of two pages).
//
// The records and the batch's own row are inserted together, and the statement fails (SQLSTATE
// PH500, schema/migrations/009_audit_writer.sql) unless the records that went in hold exactly as
// many events as were meant to be written (counted once the records are in: audit_batch_events,
// 029): a trigger that drops a record or trims its arrays makes the COMMIT pipelined behind it
// roll back, and nothing of the batch is kept.
const INSERT = `
  WITH s AS MATERIALIZED (
    SELECT s.shape, s.actions::text[] AS actions, s.type_names::text[] AS type_names, s.fields::text[] AS fields,
           s.details::text[] AS details
    FROM unnest($11::text[], $12::text[], $13::text[], $14::text[]) WITH ORDINALITY AS s(actions, type_names, fields, details, shape)
  ), ins AS (
    INSERT INTO phigate.audit_records
      (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id,
       patient_id, actions, type_names, fields, record_ids, details)
    SELECT $1::uuid, ($2::text[])[x.req], ($3::text[])[x.req], ($4::text[])[x.req], ($5::text[])[x.req], ($6::text[])[x.req],
           ($7::text[])[x.grp], ($8::text[])[x.grp], ($9::boolean[])[x.grp], ($10::uuid[])[x.grp], x.patient_id,
           s.actions, s.type_names, s.fields, x.record_ids::uuid[], s.details
    FROM unnest($15::int[], $16::int[], $17::int[], $18::uuid[], $19::text[]) WITH ORDINALITY AS x(req, grp, shape, patient_id, record_ids, n)
    JOIN s USING (shape)
    ORDER BY x.n
    RETURNING 1
  ), b AS (
    INSERT INTO phigate.audit_batches (id, events)
    SELECT $1::uuid, phigate.expect_audit_rows(phigate.audit_batch_events($1::uuid), $20) FROM (SELECT count(*) FROM ins) AS done
    RETURNING events
  )
  SELECT events FROM b`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A uuid[] literal written directly: pg's generic array encoder escapes and concatenates element
 * by element, which was the largest allocation of a page request. Ids come from uuid columns or
 * validated input; one that is not a uuid fails the write rather than reach the SQL text.
 */
function uuidArray(ids: readonly (string | null)[]): string {
  for (const id of ids) if (id !== null && !UUID.test(id)) throw new Error('audit event id is not a uuid');
  return `{${ids.map((id) => id ?? 'NULL').join(',')}}`;
}

/** A text[] literal, every element quoted: right for any string, and a parameter, never SQL text. */
function textArray(values: readonly (string | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : `"${v.replace(/[\\"]/g, '\\$&')}"`)).join(',')}}`;
}

const NONE = '\u0001';

/** The statement that writes `parts` as batch `batchId`; its one row's `events` is the count written. */
export function auditInsert(batchId: string, parts: readonly AuditPart[]): Statement {
  if (!UUID.test(batchId)) throw new Error('audit batch id is not a uuid');
  const requests = {
    requestId: [] as string[],
    actor: [] as string[],
    actorKind: [] as string[],
    clientAddr: [] as (string | null)[],
    credentialId: [] as (string | null)[],
  };
  const groupOf = new Map<string, number>();
  const groups = { role: [] as (string | null)[], purpose: [] as string[], breakGlass: [] as boolean[], grantId: [] as (string | null)[] };
  const shapeOf = new Map<string, number>();
  const shapes = { actions: [] as string[], typeNames: [] as string[], fields: [] as string[], details: [] as string[] };
  const records = { req: [] as number[], grp: [] as number[], shape: [] as number[], patientId: [] as (string | null)[], recordIds: [] as string[] };
  let total = 0;
  for (const part of parts) {
    if (part.events.length === 0) continue;
    requests.requestId.push(part.request.requestId);
    requests.actor.push(part.request.actor);
    requests.actorKind.push(part.request.actorKind);
    requests.clientAddr.push(part.request.clientAddr);
    requests.credentialId.push(part.request.credentialId ?? null);
    const req = requests.requestId.length;
    // The request's records in the order of their first event, each keeping its events' order.
    const byRecord = new Map<string, { grp: number; patientId: string | null; events: AuditEvent[] }>();
    for (const e of part.events) {
      const shared = `${e.role ?? NONE}\u0000${e.purpose}\u0000${e.breakGlass}\u0000${e.grantId ?? NONE}`;
      const key = `${e.patientId ?? NONE}\u0000${shared}`;
      let record = byRecord.get(key);
      if (record === undefined) {
        let grp = groupOf.get(shared);
        if (grp === undefined) {
          grp = groupOf.size + 1;
          groupOf.set(shared, grp);
          groups.role.push(e.role);
          groups.purpose.push(e.purpose);
          groups.breakGlass.push(e.breakGlass);
          groups.grantId.push(e.grantId ?? null);
        }
        record = { grp, patientId: e.patientId, events: [] };
        byRecord.set(key, record);
      }
      record.events.push(e);
    }
    for (const record of byRecord.values()) {
      for (let start = 0; start < record.events.length; start += MAX_RECORD_EVENTS) {
        const events = record.events.length <= MAX_RECORD_EVENTS ? record.events : record.events.slice(start, start + MAX_RECORD_EVENTS);
        // Most records repeat a shape already seen (a page's 100 patients share one): its key is
        // cheap to build, and the four array literals are written only for a shape not yet seen.
        let key = '';
        for (const e of events) key += `${e.action}\u0000${e.typeName}\u0000${e.field ?? NONE}\u0000${e.detail ?? NONE}\u0002`;
        let shape = shapeOf.get(key);
        if (shape === undefined) {
          shape = shapeOf.size + 1;
          shapeOf.set(key, shape);
          shapes.actions.push(textArray(events.map((e) => e.action)));
          shapes.typeNames.push(textArray(events.map((e) => e.typeName)));
          shapes.fields.push(textArray(events.map((e) => e.field)));
          shapes.details.push(textArray(events.map((e) => e.detail ?? null)));
        }
        records.req.push(req);
        records.grp.push(record.grp);
        records.shape.push(shape);
        records.patientId.push(record.patientId);
        records.recordIds.push(uuidArray(events.map((e) => e.recordId)));
        total += events.length;
      }
    }
  }
  return {
    text: INSERT,
    values: [
      batchId,
      textArray(requests.requestId),
      textArray(requests.actor),
      textArray(requests.actorKind),
      textArray(requests.clientAddr),
      textArray(requests.credentialId),
      textArray(groups.role),
      textArray(groups.purpose),
      `{${groups.breakGlass.join(',')}}`,
      uuidArray(groups.grantId),
      textArray(shapes.actions),
      textArray(shapes.typeNames),
      textArray(shapes.fields),
      textArray(shapes.details),
      `{${records.req.join(',')}}`,
      `{${records.grp.join(',')}}`,
      `{${records.shape.join(',')}}`,
      uuidArray(records.patientId),
      textArray(records.recordIds),
      total,
    ],
  };
}

/** SQLSTATE of expect_audit_rows: the rows written differ from the events meant to be written. */
export const AUDIT_ROWS_MISMATCH_SQLSTATE = 'PH500';
