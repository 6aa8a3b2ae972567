/**
 * The audit writer's batch building in JS (issue 10): `npx tsx bench/writer-batch.ts [--insert
 * path/to/insert.ts] [--batches N] [--kind page|by-id]`. Builds the statement of N batches with
 * src/audit/insert.ts (or another tree's copy of it) and prints the process's CPU per batch
 * (process.cpuUsage, user + system), after a warm-up of as many batches.
 *
 * `page`: one request of 100 patients, each 8 Patient fields and 2 encounters of 2 fields (12
 * events, the encounters' after every patient's fields, as a page resolves them), the events
 * carrying their AAD fields as readPhi's do. `by-id`: 4 requests of one patient's 9 events each.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { AuditEvent } from '../src/audit/event.ts';
import type { AuditPart, auditInsert as AuditInsert } from '../src/audit/insert.ts';
import { PHI_FIELDS } from '../src/policy/phi-fields.ts';

const { values } = parseArgs({ options: { insert: { type: 'string' }, batches: { type: 'string', default: '2000' }, kind: { type: 'string', default: 'page' } } });
const BATCHES = Number(values.batches);
const file = path.resolve(values.insert ?? path.join(import.meta.dirname, '../src/audit/insert.ts'));
const { auditInsert } = (await import(file)) as { auditInsert: typeof AuditInsert };

const PATIENT_FIELDS: readonly string[] = PHI_FIELDS.Patient;

function event(typeName: string, field: string, patientId: string, rowId: string): AuditEvent {
  const e = {
    action: field === 'ssn' ? 'masked' : 'read',
    typeName,
    field,
    patientId,
    recordId: rowId === patientId ? null : rowId,
    role: 'registrar',
    purpose: 'treatment',
    breakGlass: false,
    grantId: null,
    table: typeName === 'Patient' ? 'patients' : 'encounters',
    column: field,
    rowId,
  };
  return e as AuditEvent;
}

function request(patients: number, encounters: number): AuditPart {
  const events: AuditEvent[] = [];
  const later: AuditEvent[] = [];
  for (let p = 0; p < patients; p++) {
    const patientId = randomUUID();
    for (const f of PATIENT_FIELDS) events.push(event('Patient', f, patientId, patientId));
    for (let k = 0; k < encounters; k++) {
      const encounterId = randomUUID();
      for (const f of ['occurredAt', 'kind']) later.push(event('Encounter', f, patientId, encounterId));
    }
  }
  return { request: { requestId: randomUUID(), actor: 'registrar-1', actorKind: 'user', clientAddr: '192.0.2.7' }, events: [...events, ...later] };
}

const batches: AuditPart[][] = Array.from({ length: 16 }, () => (values.kind === 'page' ? [request(100, 2)] : [0, 1, 2, 3].map(() => request(1, 0))));
const ids = batches.map(() => randomUUID());
let sink = 0;
const run = (n: number) => {
  for (let i = 0; i < n; i++) sink += auditInsert(ids[i % 16]!, batches[i % 16]!).values!.length;
};
run(BATCHES);
const start = process.cpuUsage();
run(BATCHES);
const used = process.cpuUsage(start);
console.log(JSON.stringify({ kind: values.kind, insert: file, batches: BATCHES, usPerBatch: Number(((used.user + used.system) / BATCHES).toFixed(2)), sink }));
