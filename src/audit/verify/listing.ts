import type pg from 'pg';
import { firstEventId } from '../canonical.ts';

/**
 * The patient listing of v3 records (061) checked against the records: every slot of every
 * `audit_records_v3` row has exactly one `audit_record_patients` row (patient, record, slot), and
 * no listing row names a slot that no v3 record holds. The listing is not hashed, yet the view,
 * the compliance functions and the disclosures find a patient's v3 events only through it, so a
 * row deleted there hides events from every query by patient while the leaves still verify.
 *
 * The records and the listing are walked together by record id in consecutive ranges that cover
 * every bigint, so a listing row naming an id that is not a v3 record (a v2 record, one removed by
 * retention, which takes its listing with it, or none at all) falls in some range. A range holds
 * at most ROWS_PER_RANGE patient slots (or one record, when that record alone holds more), so that
 * PostgreSQL joins it in memory; nothing but the first problem and counts comes back.
 */
export type ListingProblemKind = 'listing_missing' | 'listing_extra';

export interface ListingProblem {
  readonly kind: ListingProblemKind;
  /** The v3 record's first event id; null when no v3 record has the listed id. */
  readonly eventId: string | null;
  readonly message: string;
}

export interface ListingReport {
  readonly problem: ListingProblem | null;
  /** V3 records whose slots were compared with their listing. */
  readonly records: number;
}

export interface ListingOptions {
  /**
   * Records and listing rows of lower ids are not checked (null: all are). A record id, chosen by
   * the caller from leaves it verified (verify.ts), never from a column a tamperer could rewrite.
   */
  readonly fromRecord: bigint | null;
  readonly onProgress?: (done: number, total: number) => void;
  /** Patient slots compared in one query at most (ROWS_PER_RANGE); smaller in tests, to walk many ranges. */
  readonly rowsPerRange?: number;
}

const MIN_ID = -(2n ** 63n);
const MAX_ID = 2n ** 63n - 1n;
/**
 * Slots compared in one query: the hash join's table of 40,000 listing rows takes about 2.9 MB,
 * within PostgreSQL's default work_mem of 4 MB (125,000 rows spilled to disk).
 */
const ROWS_PER_RANGE = 40_000;
const FIRST_RANGE_RECORDS = 500;
const MAX_RANGE_RECORDS = 5_000;

/**
 * Of the next `$2` v3 records from id `$1`, those whose slots add up to at most `$3` (the first one
 * always): how many, their slots, the last id; and how many of the `$2` there were, so that fewer
 * than `$2` all taken says the records end here. A run of small records followed by large ones
 * would otherwise make one range of far more slots than the last one measured.
 */
const NEXT_RECORDS = `
  SELECT count(*) FILTER (WHERE w.kept) AS records, coalesce(sum(w.n) FILTER (WHERE w.kept), 0) AS slots,
         max(w.id) FILTER (WHERE w.kept) AS last, count(*) AS fetched
  FROM (SELECT r.id, r.n, (sum(r.n) OVER (ORDER BY r.id) <= $3 OR row_number() OVER (ORDER BY r.id) = 1) AS kept
        FROM (SELECT id, cardinality(patient_ids) AS n FROM phigate.audit_records_v3 WHERE id >= $1 ORDER BY id LIMIT $2) r) w`;

/**
 * The records' slots and the listing rows of ids $1 to $2, fully joined on (record, slot,
 * patient): the listing rows, and the first unmatched row by (record, slot), a slot with no row
 * (0) before a row naming no slot (1).
 */
const COMPARE = `
  SELECT count(p.record_id) AS listed,
         min(ARRAY[coalesce(e.record_id, p.record_id), coalesce(e.slot, p.slot), CASE WHEN p.record_id IS NULL THEN 0 ELSE 1 END])
           FILTER (WHERE e.record_id IS NULL OR p.record_id IS NULL) AS first
  FROM (SELECT r.id AS record_id, u.slot, u.patient_id
        FROM phigate.audit_records_v3 r CROSS JOIN LATERAL unnest(r.patient_ids) WITH ORDINALITY AS u(patient_id, slot)
        WHERE r.id BETWEEN $1 AND $2) e
  FULL JOIN (SELECT p.record_id, p.slot::bigint AS slot, p.patient_id
             FROM phigate.audit_record_patients p WHERE p.record_id BETWEEN $1 AND $2) p
    ON p.record_id = e.record_id AND p.slot = e.slot AND p.patient_id = e.patient_id`;

/** A slot listed more than once: every row matched, yet more rows than slots. */
const REPEATED = `
  SELECT p.record_id, p.slot FROM phigate.audit_record_patients p
  WHERE p.record_id BETWEEN $1 AND $2
  GROUP BY p.record_id, p.slot, p.patient_id HAVING count(*) > 1
  ORDER BY p.record_id, p.slot LIMIT 1`;

const isV3 = async (db: pg.ClientBase, recordId: string) =>
  (await db.query('SELECT 1 FROM phigate.audit_records_v3 WHERE id = $1', [recordId])).rowCount === 1;

async function problemAt(db: pg.ClientBase, recordId: string, slot: string, kind: 'missing' | 'extra' | 'repeated'): Promise<ListingProblem> {
  const listing = 'phigate.audit_record_patients';
  if (!(await isV3(db, recordId))) {
    return {
      kind: 'listing_extra',
      eventId: null,
      message: `${listing} lists slot ${slot} of record ${recordId}, which is not a record of several patients (v3): no record, a v2 record, or one retention removed without its listing`,
    };
  }
  const eventId = String(firstEventId(BigInt(recordId)));
  const record = `record ${recordId} (first event ${eventId}), slot ${slot}`;
  if (kind === 'missing') {
    return { kind: 'listing_missing', eventId, message: `${record}: ${listing} lacks its patient, so queries by that patient miss the record's events about them` };
  }
  if (kind === 'repeated') {
    return { kind: 'listing_extra', eventId, message: `${record}: ${listing} lists its patient more than once, so queries by that patient see the record's events repeated` };
  }
  return { kind: 'listing_extra', eventId, message: `${record}: ${listing} lists a patient the record does not hold at that slot` };
}

/** Runs inside verify's snapshot (a v3 record and its listing rows commit in one transaction). */
export async function checkPatientListings(db: pg.ClientBase, opts: ListingOptions): Promise<ListingReport> {
  let from = opts.fromRecord ?? MIN_ID;
  const total = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_records_v3 WHERE id >= $1', [String(from)])).rows[0]!.n);
  opts.onProgress?.(0, total);
  let done = 0;
  const rowsPerRange = opts.rowsPerRange ?? ROWS_PER_RANGE;
  let take = FIRST_RANGE_RECORDS;
  for (;;) {
    const next = (await db.query<{ records: string; slots: string; last: string | null; fetched: string }>(NEXT_RECORDS, [String(from), take, rowsPerRange])).rows[0]!;
    const records = Number(next.records);
    // The last range runs to the end of the id space: listing rows past the last record are in it.
    const to = records === Number(next.fetched) && records < take ? MAX_ID : BigInt(next.last!);
    const compared = (await db.query<{ listed: string; first: string[] | null }>(COMPARE, [String(from), String(to)])).rows[0]!;
    if (compared.first !== null) {
      const [recordId, slot, side] = compared.first;
      return { problem: await problemAt(db, recordId!, slot!, side === '0' ? 'missing' : 'extra'), records: done };
    }
    if (compared.listed !== next.slots) {
      const repeated = (await db.query<{ record_id: string; slot: string }>(REPEATED, [String(from), String(to)])).rows[0]!;
      return { problem: await problemAt(db, repeated.record_id, repeated.slot, 'repeated'), records: done };
    }
    done += records;
    opts.onProgress?.(done, total);
    if (to === MAX_ID) return { problem: null, records: done };
    from = to + 1n;
    // Records differ in size (2 to 65,536 patients): the next range is sized by this one's slots.
    take = Math.max(1, Math.min(MAX_RANGE_RECORDS, Math.floor((records * rowsPerRange) / Math.max(1, Number(next.slots)))));
  }
}
