import { canonicalBytes } from '../canonical.ts';
import { committedEvent, type EventRow } from '../log/rows.ts';

/**
 * The sink's lines (docs/audit-log.md): one JSON object per line, `audit` saying which kind. An
 * event line carries its leaf index and event id, which make a redelivered line recognisable,
 * and the canonical bytes the leaf hash is over, so the sink alone can recompute the tree.
 */
export interface EventLine {
  readonly audit: 'event';
  readonly leaf: number;
  readonly id: string;
  readonly canonical: string;
  readonly event: Record<string, unknown>;
}

export interface CheckpointLine {
  readonly audit: 'checkpoint';
  readonly size: number;
  readonly note: string;
}

export type SinkLine = EventLine | CheckpointLine;

/** PostgreSQL's microseconds as ISO 8601 with six fractional digits. */
function isoMicros(us: bigint): string {
  const ms = us / 1000n;
  return new Date(Number(ms)).toISOString().replace('Z', `${String(us - ms * 1000n).padStart(3, '0')}Z`);
}

export function eventLine(leaf: number, r: EventRow): string {
  const event = committedEvent(r);
  // The facts in the canonical order, with the two bigints spelled for JSON readers.
  const { id, occurredAtMicros, ...facts } = event;
  const line: EventLine = {
    audit: 'event',
    leaf,
    id: r.id,
    canonical: canonicalBytes(event).toString('base64'),
    event: { id: String(id), occurredAt: isoMicros(occurredAtMicros), ...facts },
  };
  return `${JSON.stringify(line)}\n`;
}

export const checkpointLine = (size: number, note: string): string => `${JSON.stringify({ audit: 'checkpoint', size, note } satisfies CheckpointLine)}\n`;

/** A line read back from a sink; null when it is not one of ours (a torn or foreign line). */
export function parseSinkLine(text: string): SinkLine | null {
  try {
    const o = JSON.parse(text) as Partial<SinkLine> | null;
    if (o?.audit === 'event' && Number.isSafeInteger(o.leaf) && typeof o.id === 'string') return o as EventLine;
    if (o?.audit === 'checkpoint' && Number.isSafeInteger(o.size) && typeof o.note === 'string') return o as CheckpointLine;
    return null;
  } catch {
    return null;
  }
}
