import { recordV3Events } from '../canonical.ts';
import { leafBytes, committedEvent, committedRecord, committedRecordV3, type LeafRow } from '../log/rows.ts';

/**
 * The sink's lines (docs/audit-log.md): one JSON object per line, `audit` saying which kind. A
 * leaf's line carries its leaf index and the id of its first event, which make a redelivered line
 * recognisable, and the canonical bytes the leaf hash is over, so the sink alone can recompute the
 * tree: an `event` line for a leaf of one v1 event, a `record` line for a leaf of one audit record
 * (canonical v2, or v3 with its `patientIds`), its events listed with their ids (and, in v3, each
 * one's patient).
 */
interface LeafLineBase {
  readonly leaf: number;
  /** The leaf's key: the v1 event's id, or the record's first event's id. */
  readonly id: string;
  readonly canonical: string;
}

export interface EventLine extends LeafLineBase {
  readonly audit: 'event';
  readonly event: Record<string, unknown>;
}

export interface RecordLine extends LeafLineBase {
  readonly audit: 'record';
  readonly record: Record<string, unknown>;
}

export type LeafLine = EventLine | RecordLine;

export interface CheckpointLine {
  readonly audit: 'checkpoint';
  readonly size: number;
  readonly note: string;
}

export type SinkLine = LeafLine | CheckpointLine;

/** PostgreSQL's microseconds as ISO 8601 with six fractional digits. */
function isoMicros(us: bigint): string {
  const ms = us / 1000n;
  return new Date(Number(ms)).toISOString().replace('Z', `${String(us - ms * 1000n).padStart(3, '0')}Z`);
}

function leafLineOf(leaf: number, r: LeafRow): LeafLine {
  const canonical = leafBytes(r).toString('base64');
  if (r.version === 1) {
    // The facts in the canonical order, with the two bigints spelled for JSON readers.
    const { id, occurredAtMicros, ...facts } = committedEvent(r);
    return { audit: 'event', leaf, id: r.key, canonical, event: { id: String(id), occurredAt: isoMicros(occurredAtMicros), ...facts } };
  }
  // A v3 record lists its events from its shape and patients, each with its patient.
  const record = r.version === 3 ? recordOfPatients(r) : committedRecord(r);
  const { id, occurredAtMicros, events, ...facts } = record;
  const first = BigInt(r.key);
  return {
    audit: 'record',
    leaf,
    id: r.key,
    canonical,
    record: {
      id: String(id),
      occurredAt: isoMicros(occurredAtMicros),
      ...facts,
      events: events.map((e, i) => ({ id: String(first + BigInt(i)), ...e })),
    },
  };
}

function recordOfPatients(r: LeafRow) {
  const record = committedRecordV3(r);
  const { shape: _shape, recordIds: _recordIds, ...facts } = record;
  return { ...facts, events: recordV3Events(record) };
}

export const leafLine = (leaf: number, r: LeafRow): string => `${JSON.stringify(leafLineOf(leaf, r))}\n`;

export const checkpointLine = (size: number, note: string): string => `${JSON.stringify({ audit: 'checkpoint', size, note } satisfies CheckpointLine)}\n`;

/** A line read back from a sink; null when it is not one of ours (a torn or foreign line). */
export function parseSinkLine(text: string): SinkLine | null {
  try {
    const o = JSON.parse(text) as Partial<SinkLine> | null;
    if ((o?.audit === 'event' || o?.audit === 'record') && Number.isSafeInteger(o.leaf) && typeof o.id === 'string') return o as LeafLine;
    if (o?.audit === 'checkpoint' && Number.isSafeInteger(o.size) && typeof o.note === 'string') return o as CheckpointLine;
    return null;
  } catch {
    return null;
  }
}
