import type { Statement } from '../db/transaction.ts';
import type { AuditEvent, AuditRequest } from './event.ts';

/** One request's events, as one batch writes them. */
export interface AuditPart {
  readonly request: AuditRequest;
  readonly events: readonly AuditEvent[];
}

// One statement for a whole batch, however many requests and fields it holds. The facts every row
// of a request repeats travel once per request; a page of 100 patients is 800 events but only a
// dozen distinct (action, type, field, role, purpose, break-glass, detail, grant) shapes, which
// travel once too; each event is then two indexes plus its patient and record ids.
//
// The rows and the batch's own row are inserted together, and the statement fails (SQLSTATE PH500,
// schema/migrations/009_audit_writer.sql) unless exactly as many rows went in as there were events:
// the COMMIT pipelined behind it then rolls back, and nothing of the batch is kept.
const INSERT = `
  WITH r AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
      AS r(request_id, actor, actor_kind, client_addr, credential_id, req)
  ), d AS (
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::boolean[], $13::text[], $14::uuid[]) WITH ORDINALITY
      AS d(action, type_name, field, role, purpose, break_glass, detail, grant_id, kind)
  ), ins AS (
    INSERT INTO phigate.audit_events
      (batch_id, request_id, actor, actor_kind, client_addr, credential_id, action, type_name, field, patient_id, record_id, role, purpose, break_glass, detail, grant_id)
    SELECT $1::uuid, r.request_id, r.actor, r.actor_kind, r.client_addr, r.credential_id, d.action, d.type_name, d.field, e.patient_id, e.record_id, d.role, d.purpose, d.break_glass, d.detail, d.grant_id
    FROM unnest($15::int[], $16::int[], $17::uuid[], $18::uuid[]) WITH ORDINALITY AS e(req, kind, patient_id, record_id, n)
    JOIN r USING (req) JOIN d USING (kind)
    ORDER BY e.n
    RETURNING 1
  ), b AS (
    INSERT INTO phigate.audit_batches (id, events) SELECT $1::uuid, phigate.expect_audit_rows(count(*), $19) FROM ins RETURNING events
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

const NONE = '\u0001';

/** The statement that writes `parts` as batch `batchId`; its one row's `events` is the count written. */
export function auditInsert(batchId: string, parts: readonly AuditPart[]): Statement {
  const requests = {
    requestId: [] as string[],
    actor: [] as string[],
    actorKind: [] as string[],
    clientAddr: [] as (string | null)[],
    credentialId: [] as (string | null)[],
  };
  const shapes = new Map<string, number>();
  const dictionary = {
    action: [] as string[],
    typeName: [] as string[],
    field: [] as (string | null)[],
    role: [] as (string | null)[],
    purpose: [] as string[],
    breakGlass: [] as boolean[],
    detail: [] as (string | null)[],
    grantId: [] as (string | null)[],
  };
  const reqOf: number[] = [];
  const kindOf: number[] = [];
  const patientIds: (string | null)[] = [];
  const recordIds: (string | null)[] = [];
  for (const { request, events } of parts) {
    if (events.length === 0) continue;
    requests.requestId.push(request.requestId);
    requests.actor.push(request.actor);
    requests.actorKind.push(request.actorKind);
    requests.clientAddr.push(request.clientAddr);
    requests.credentialId.push(request.credentialId ?? null);
    const req = requests.requestId.length;
    for (const e of events) {
      const key = `${e.action}\u0000${e.typeName}\u0000${e.field ?? NONE}\u0000${e.role ?? NONE}\u0000${e.purpose}\u0000${e.breakGlass}\u0000${e.detail ?? NONE}\u0000${e.grantId ?? NONE}`;
      let kind = shapes.get(key);
      if (kind === undefined) {
        kind = shapes.size + 1;
        shapes.set(key, kind);
        dictionary.action.push(e.action);
        dictionary.typeName.push(e.typeName);
        dictionary.field.push(e.field);
        dictionary.role.push(e.role);
        dictionary.purpose.push(e.purpose);
        dictionary.breakGlass.push(e.breakGlass);
        dictionary.detail.push(e.detail ?? null);
        dictionary.grantId.push(e.grantId ?? null);
      }
      reqOf.push(req);
      kindOf.push(kind);
      patientIds.push(e.patientId);
      recordIds.push(e.recordId);
    }
  }
  if (!UUID.test(batchId)) throw new Error('audit batch id is not a uuid');
  const d = dictionary;
  return {
    text: INSERT,
    values: [
      batchId,
      requests.requestId,
      requests.actor,
      requests.actorKind,
      requests.clientAddr,
      requests.credentialId,
      d.action,
      d.typeName,
      d.field,
      d.role,
      d.purpose,
      d.breakGlass,
      d.detail,
      uuidArray(d.grantId),
      `{${reqOf.join(',')}}`,
      `{${kindOf.join(',')}}`,
      uuidArray(patientIds),
      uuidArray(recordIds),
      kindOf.length,
    ],
  };
}

/** SQLSTATE of expect_audit_rows: the rows written differ from the events meant to be written. */
export const AUDIT_ROWS_MISMATCH_SQLSTATE = 'PH500';
