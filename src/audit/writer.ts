import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { chargeBatchStatement, chargeVerdicts, type ChargeVerdict, type PhiCharge } from '../db/phi-usage.ts';
import { coalesceWrites } from '../db/coalesce-writes.ts';
import type { Pool } from '../db/pool.ts';
import { settleAll } from '../db/settle-all.ts';
import { submit } from '../db/submit.ts';
import type { Statement } from '../db/transaction.ts';
import { PhigateError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { AuditEvent, AuditRequest } from './event.ts';
import { AUDIT_ROWS_MISMATCH_SQLSTATE, CHARGE_REFUSED_SQLSTATE, auditInsert, auditStatementName, chargedAuditInsert, type AuditPart } from './insert.ts';
import type { AuditRecorder } from './recorder.ts';

/** One request's share of a batch. */
export interface AuditEntry {
  readonly request: AuditRequest;
  readonly events: readonly AuditEvent[];
  /** PHI the request showed, charged to its principal's minute in the batch's transaction. */
  readonly charge?: PhiCharge | null;
  /** Written instead of `events` when the charge would take the minute past its cap. */
  readonly refusal?: AuditEvent;
}

/** The batch holding the entry committed: with its events, or (charge refused) with its refusal only. */
export type Written = { readonly outcome: 'committed' } | { readonly outcome: 'limited'; readonly retryAfterSeconds: number };

/** A request expected to hand the writer an entry (AuditWriter.expect). */
export interface Coming {
  /** The request will not write (it failed, or read no PHI); a second call, or one after write(), does nothing. */
  end(): void;
}

export interface AuditWriter extends AuditRecorder {
  /**
   * Resolves once a committed batch holds the entry; rejects with AUDIT_UNAVAILABLE (HTTP 503)
   * when none did, or at once when the queue is full. `coming`, the request's expect(), ends here,
   * and the entry joins the shard it was announced to.
   */
  write(entry: AuditEntry, coming?: Coming): Promise<Written>;
  /**
   * A request of `request`'s principal is running and will write an entry or end the Coming: while
   * such requests run, a batch of its shard about to leave may wait for their entries (gather).
   */
  expect(request: AuditRequest): Coming;
  /** The queue is full: requests that would add to it should be refused before they run. */
  readonly saturated: boolean;
  /** Refuses new entries and waits until everything queued has committed or failed. */
  close(): Promise<void>;
  readonly stats: {
    readonly batches: number;
    readonly events: number;
    readonly failedBatches: number;
    /** Batches held back for entries of running requests, and the time they were held, in all. */
    readonly gathers: number;
    readonly gatheredMs: number;
    /** Requests expected and not yet written or ended, over all shards. */
    readonly coming: number;
  };
}

/**
 * How long a batch about to leave may wait for the entries of requests already running: at most
 * `percent` of its shard's last commit, and at most `maxMs`; never when no request is running
 * past the ones queued. A bound under a millisecond (a quiet writer's fast commit) is one turn of
 * the event loop instead: the entries whose I/O is already in. `percent` 0 turns gathering off.
 */
export interface GatherOptions {
  readonly percent: number;
  readonly maxMs: number;
}

export interface AuditWriterOptions {
  /** The writer's own connections, not the request pool: one batch in flight on each. */
  readonly pool: Pool;
  /** Requests that may wait for a batch; past it, write() refuses at once. */
  readonly queueLimit: number;
  readonly logger: Logger;
  /** Events per batch at most; a request's events are never split across batches. */
  readonly maxBatchEvents?: number;
  /** Prepare the batch's two statements once per connection (PHIGATE_PREPARED_STATEMENTS; default on). */
  readonly preparedStatements?: boolean;
  /** PHIGATE_AUDIT_GATHER_PERCENT and _MAX_MS; unset, no gathering. */
  readonly gather?: GatherOptions;
  /** Told of each batch once it settled (the bench's p99 analysis: which batch each request waited for). */
  readonly onBatch?: (batch: BatchTiming) => void;
}

/** One batch's moments (performance.now()): it left at `startedAt` after being held `heldMs` for entries, and settled at `settledAt`. */
export interface BatchTiming {
  readonly shard: number;
  readonly entries: readonly AuditEntry[];
  readonly heldMs: number;
  readonly startedAt: number;
  readonly settledAt: number;
}

interface Queued {
  readonly entry: AuditEntry;
  resolve(w: Written): void;
  reject(e: unknown): void;
}

/** A wait for entries before a batch leaves: how many more requests to hear from, and its bound. */
interface Gather {
  awaited: number;
  readonly cancel: () => void;
  readonly since: number;
  readonly deadline: number;
}

/** One writer connection's queue, and whether a batch of it is in flight. */
interface Shard {
  readonly queue: Queued[];
  /** Events in `queue`. */
  events: number;
  busy: boolean;
  /** Requests of the shard's principals expected and not yet written or ended. */
  coming: number;
  gather: Gather | null;
  /** Wall time of the shard's last batch, connect to COMMIT answered. */
  lastCommitMs: number;
  /** How long the batch about to leave was held for entries (BatchTiming.heldMs). */
  heldMs: number;
}

/**
 * The shard of a request's principal: FNV-1a of the actor's kind and subject, so the choice is the
 * same for every request of it. expect() and write() both choose by the request, so a request's
 * announcement and its entry meet in one shard. A read's PHI charge is always its actor's
 * (src/records/phi-minute.ts charges the principal the gateway names as the actor), so one
 * principal's charges are made by one connection of the process.
 */
export function shardOf(request: AuditRequest, shards: number): number {
  const principal = `${request.actorKind}\u0000${request.actor}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < principal.length; i++) h = Math.imul(h ^ principal.charCodeAt(i), 0x01000193);
  return (h >>> 0) % shards;
}

const unavailable = (reason: string, cause?: unknown) =>
  new PhigateError('AUDIT_UNAVAILABLE', 'The access could not be recorded, so nothing is returned.', { reason, cause });

/** A failed batch's line names the requests it served (at most 32 of them: a batch can hold thousands). */
const requestIdsOf = (batch: readonly Queued[]): string[] => batch.slice(0, 32).map((q) => q.entry.request.requestId);

/** A failure of the statement (it has a SQLSTATE), not of the connection: another batch may pass. */
const isStatementError = (e: unknown): boolean => typeof (e as { code?: unknown })?.code === 'string' && /^[0-9A-Z]{5}$/.test((e as { code: string }).code);

/**
 * Group commit of audit events. Whatever has queued while a batch was committing goes out as the
 * next batch the moment that commit returns (unless gathering, below): no fixed delay, so a lone
 * request waits for one commit only, and under load each commit carries many requests. A batch is one transaction on the
 * writer's own connection: BEGIN, synchronous_commit on, one INSERT of every record
 * (src/audit/insert.ts) with the batch's own row, checked against the events it was meant to
 * write, and COMMIT, in one round trip. The PHI charges of its reads, when any, are made in the
 * INSERT's statement, which commits nothing unless every charge is accepted; when one is refused
 * the batch is sent again with its charges first, on their own, so that a refused request writes
 * its refusal instead of its events. Only then are the batch's requests answered.
 *
 * A batch that fails on a statement is retried request by request, each in a batch of its own,
 * so one request's bad event fails that request only. A batch whose connection is lost is looked
 * up by its id on a new connection: committed, its requests are answered; not found, they fail.
 *
 * Gathering (opts.gather): under load a batch that left the moment the previous commit returned
 * carried the few entries that queued during one commit, and each paid the batch's fixed cost
 * (BEGIN, the statement's start, the durable COMMIT). The gateway announces each query past
 * admission (expect) and its entry ends the announcement; when a batch is about to leave while
 * announced requests of its shard are still running, it waits until as many have written or
 * ended as were running then, or a share of the last commit's time, whichever comes first. A
 * lone request (nothing else announced) never waits, nor does a batch once the writer is closing
 * or holds maxBatchEvents.
 *
 * Each connection is a shard with its own queue, and a request goes to the shard a stable hash of
 * its principal picks. Two batches of one process then never charge one principal's minute at
 * once: before, the writer's connections queued on each other's `phi_usage` row locks, each
 * waiting out the other's durable COMMIT. Writers of other processes still meet on those rows;
 * charge_phi_usage locks principals in one global order, so they wait but never deadlock. The
 * price: one principal's load is batched by one connection.
 */
export function createAuditWriter(opts: AuditWriterOptions): AuditWriter {
  const { pool, logger } = opts;
  // About six pages of 100 patients: one batch's statement and transaction stay bounded under a surge.
  const maxBatchEvents = opts.maxBatchEvents ?? 5_000;
  const gather = opts.gather ?? { percent: 0, maxMs: 0 };
  if (!(gather.percent >= 0 && gather.percent <= 100 && gather.maxMs >= 0)) throw new RangeError('gather: percent must be 0 to 100 and maxMs at least 0');
  const shards: Shard[] = Array.from({ length: Math.max(1, pool.options.max ?? 1) }, () => ({ queue: [], events: 0, busy: false, coming: 0, gather: null, lastCommitMs: 0, heldMs: 0 }));
  let queued = 0;
  let inFlight = 0;
  let closing = false;
  let idle: (() => void) | null = null;
  let closed: Promise<void> | null = null;
  const stats = {
    batches: 0,
    events: 0,
    failedBatches: 0,
    gathers: 0,
    gatheredMs: 0,
    get coming() {
      return shards.reduce((n, s) => n + s.coming, 0);
    },
  };
  const prepared = (c: pg.PoolClient, name: string, s: Statement) => submit(c, s.text, s.values, opts.preparedStatements === false ? undefined : name);

  const takeBatch = (shard: Shard): Queued[] => {
    const { queue } = shard;
    const batch: Queued[] = [];
    let events = 0;
    while (queue.length > 0) {
      const next = queue[0]!;
      if (batch.length > 0 && events + next.entry.events.length > maxBatchEvents) break;
      batch.push(queue.shift()!);
      events += next.entry.events.length;
    }
    queued -= batch.length;
    shard.events -= events;
    return batch;
  };

  /** Whether the shard's next batch should wait for entries still coming; starts the wait if so. */
  const holdBack = (shard: Shard): boolean => {
    const g = shard.gather;
    if (g !== null) {
      if (g.awaited > 0 && !closing && shard.events < maxBatchEvents) return true;
      g.cancel();
      shard.gather = null;
      shard.heldMs = performance.now() - g.since;
      stats.gatheredMs += shard.heldMs;
      return false;
    }
    if (shard.coming === 0 || closing || shard.events >= maxBatchEvents) return false;
    const ms = Math.min(gather.maxMs, (shard.lastCommitMs * gather.percent) / 100);
    if (!(ms > 0)) return false;
    const since = performance.now();
    const end = () => {
      started.awaited = 0;
      pump(shard);
    };
    // A timer waits at least a millisecond.
    const cancel = ms >= 1 ? clearTimeout.bind(null, setTimeout(end, ms)) : clearImmediate.bind(null, setImmediate(end));
    const started: Gather = { awaited: shard.coming, cancel, since, deadline: since + ms };
    shard.gather = started;
    stats.gathers++;
    return true;
  };

  /**
   * An expected request wrote its entry or ended: one fewer for a waiting batch to hear from. Past
   * the deadline the wait is over at once: on a busy event loop the timer runs late, after the
   * I/O callbacks of its turn, and those are where entries arrive.
   */
  const heard = (shard: Shard): void => {
    shard.coming--;
    const g = shard.gather;
    if (g === null) return;
    g.awaited = g.awaited > 0 && performance.now() < g.deadline ? g.awaited - 1 : 0;
  };

  const pump = (shard: Shard): void => {
    if (shard.busy || shard.queue.length === 0 || holdBack(shard)) return;
    const batch = takeBatch(shard);
    const { heldMs } = shard;
    shard.heldMs = 0;
    shard.busy = true;
    inFlight++;
    const started = performance.now();
    // The batch serves many requests: its log lines (the writer's own logger) belong to none of them.
    void settle(batch).finally(() => {
      const settledAt = performance.now();
      shard.lastCommitMs = settledAt - started;
      opts.onBatch?.({ shard: shards.indexOf(shard), entries: batch.map((q) => q.entry), heldMs, startedAt: started, settledAt });
      shard.busy = false;
      inFlight--;
      pump(shard);
      if (inFlight === 0 && queued === 0) idle?.();
    });
  };

  async function settle(batch: Queued[]): Promise<void> {
    try {
      const written = await commit(batch.map((q) => q.entry));
      batch.forEach((q, i) => q.resolve(written[i]!));
    } catch (err) {
      stats.failedBatches++;
      if (batch.length > 1 && isStatementError(err)) {
        logger.warn({ task: 'audit-writer', requests: batch.length, requestIds: requestIdsOf(batch), causeCode: (err as { code?: unknown }).code }, 'audit batch failed; retrying its requests one by one');
        for (const q of batch) await settle([q]);
        return;
      }
      logger.error({ task: 'audit-writer', requests: batch.length, requestIds: requestIdsOf(batch), causeCode: (err as { code?: unknown }).code }, 'audit batch not committed; its requests are answered with AUDIT_UNAVAILABLE');
      const reason = (err as { code?: unknown }).code === AUDIT_ROWS_MISMATCH_SQLSTATE ? 'audit_rows_mismatch' : 'audit_write_failed';
      for (const q of batch) q.reject(unavailable(reason, err));
    }
  }

  /** One batch, one transaction; the outcome of each entry, in order. */
  async function commit(entries: readonly AuditEntry[]): Promise<Written[]> {
    const batchId = randomUUID();
    const client = await pool.connect();
    let released = false;
    const release = (destroy: boolean) => {
      if (!released) client.release(destroy);
      released = true;
    };
    try {
      const charged = entries.flatMap((e, i) => (e.charge ? [{ i, charge: e.charge }] : []));
      const everything = entries.reduce((n, e) => n + e.events.length, 0);
      if (charged.length === 0) return await insertAndCommit(client, batchId, entries, auditInsert(batchId, entries), everything, new Map(), release);
      // Every charge accepted, the common case: charge, records and COMMIT in one round trip.
      const charges = chargeBatchStatement(charged.map((c) => c.charge));
      const optimistic = chargedAuditInsert(auditInsert(batchId, entries), charges, charged.length);
      const allAccepted = await insertAndCommit(client, batchId, entries, optimistic, everything, new Map(), release).catch((err: unknown) => {
        if ((err as { code?: unknown })?.code === CHARGE_REFUSED_SQLSTATE && !released) return null;
        throw err;
      });
      if (allAccepted !== null) return allAccepted;
      // A charge was refused and nothing was kept: the verdicts first, then each request's events or its refusal.
      coalesceWrites(client);
      const result = await settleAll([submit(client, 'BEGIN'), prepared(client, 'phigate_audit_charge', withSettings(charges))]);
      if (result.error !== undefined) throw await abandon(client, result.error);
      const verdicts = new Map<number, ChargeVerdict>();
      chargeVerdicts(charged.length, (result.values.at(-1) as pg.QueryResult).rows).forEach((v, k) => verdicts.set(charged[k]!.i, v));
      const parts: AuditPart[] = entries.map((e, i) => {
        const v = verdicts.get(i);
        return v !== undefined && !v.accepted && e.refusal ? { request: e.request, events: [e.refusal] } : e;
      });
      const expected = parts.reduce((n, p) => n + p.events.length, 0);
      return await insertAndCommit(client, batchId, entries, auditInsert(batchId, parts), expected, verdicts, release, true);
    } catch (err) {
      release(!isStatementError(err));
      throw err;
    } finally {
      release(false);
    }
  }

  /**
   * Sends `insert` (prepared as `name`) and COMMIT, after BEGIN and the batch settings unless
   * `begun`, in one socket write, and checks that the batch wrote `expected` events and committed.
   */
  async function insertAndCommit(
    client: pg.PoolClient,
    batchId: string,
    entries: readonly AuditEntry[],
    insert: Statement,
    expected: number,
    verdicts: Map<number, ChargeVerdict>,
    release: (destroy: boolean) => void,
    begun = false,
  ): Promise<Written[]> {
    // The statements of each round trip leave in one socket write, as a request's do.
    coalesceWrites(client);
    const sent = await settleAll([
      ...(begun ? [] : [submit(client, 'BEGIN'), prepared(client, 'phigate_audit_settings', SETTINGS)]),
      prepared(client, auditStatementName(insert), insert),
      submit(client, 'COMMIT'),
    ]);
    const commitResult = sent.values.at(-1) as pg.QueryResult | undefined;
    if (sent.error !== undefined || commitResult?.command !== 'COMMIT') {
      if (sent.error !== undefined && !isStatementError(sent.error)) {
        // The connection went while COMMIT may have reached the server: ask a new one. A batch
        // found committed had its verdicts: all accepted (the one-round-trip statement commits
        // nothing otherwise), or those given.
        release(true);
        if (await committedAlready(batchId)) return written(entries, verdicts, expected);
      }
      throw sent.error ?? Object.assign(new Error('the audit batch was rolled back'), { code: AUDIT_ROWS_MISMATCH_SQLSTATE });
    }
    const count = Number((sent.values.at(-2) as pg.QueryResult).rows[0]?.events);
    if (count !== expected) throw Object.assign(new Error('audit rows written differ from events'), { code: AUDIT_ROWS_MISMATCH_SQLSTATE });
    return written(entries, verdicts, expected);
  }

  const written = (entries: readonly AuditEntry[], verdicts: Map<number, ChargeVerdict>, events: number): Written[] => {
    stats.batches++;
    stats.events += events;
    return entries.map((e, i) => {
      const v = verdicts.get(i);
      return v !== undefined && !v.accepted && e.refusal ? { outcome: 'limited', retryAfterSeconds: v.retryAfterSeconds } : { outcome: 'committed' };
    });
  };

  /** Whether batch `id` committed, asked on another connection; false when that cannot be known. */
  async function committedAlready(id: string): Promise<boolean> {
    try {
      const { rowCount } = await pool.query('SELECT 1 FROM phigate.audit_batches WHERE id = $1', [id]);
      return rowCount === 1;
    } catch {
      return false;
    }
  }

  /**
   * One per expected request: its shard, chosen once, until it writes or ends. write() knows its
   * own by the private field, so a Coming of another writer (or any other object) is not one.
   */
  class Expected implements Coming {
    #shard: Shard | null;
    constructor(shard: Shard) {
      this.#shard = shard;
    }
    /** Closes `coming` without pumping: its shard when it is this writer's and was still open, else null. */
    static close(coming: Coming | undefined): Shard | null {
      if (coming === undefined || !(#shard in coming)) return null;
      const shard = coming.#shard;
      if (shard === null) return null;
      coming.#shard = null;
      heard(shard);
      return shard;
    }
    end(): void {
      const shard = Expected.close(this);
      if (shard !== null) pump(shard);
    }
  }

  return {
    write(entry, coming) {
      // Heard before the entry is queued, pumped after: a batch waiting for it must not leave without it.
      const comingShard = Expected.close(coming);
      if (closing || queued >= opts.queueLimit) {
        if (comingShard !== null) pump(comingShard);
        return Promise.reject(unavailable(closing ? 'audit_writer_closed' : 'audit_queue_full'));
      }
      const shard = comingShard ?? shards[shardOf(entry.request, shards.length)]!;
      return new Promise<Written>((resolve, reject) => {
        shard.queue.push({ entry, resolve, reject });
        shard.events += entry.events.length;
        queued++;
        pump(shard);
      });
    },
    expect(request) {
      const shard = shards[shardOf(request, shards.length)]!;
      shard.coming++;
      return new Expected(shard);
    },
    async record(request, events) {
      if (events.length === 0) return;
      await this.write({ request, events });
    },
    get saturated() {
      return queued >= opts.queueLimit;
    },
    close() {
      // One promise for every caller: a second close() must not leave the first one waiting forever.
      closed ??= inFlight === 0 && queued === 0 ? Promise.resolve() : new Promise<void>((resolve) => (idle = resolve));
      closing = true;
      // A batch held back for entries still coming leaves now.
      for (const shard of shards) pump(shard);
      return closed;
    },
    stats,
  };
}

// Generic plans, as in request transactions (src/db/transaction.ts): the batch's statements are
// planned once per connection, whatever the number of events. Both settings last until COMMIT.
const BATCH_SETTINGS = "set_config('synchronous_commit', 'on', true) AS synchronous, set_config('plan_cache_mode', 'force_generic_plan', true) AS plans";

// The settings on their own, before the INSERT: a statement prepared once per connection (sent as
// text, it was parsed and planned again for every batch).
const SETTINGS: Statement = { text: `SELECT ${BATCH_SETTINGS}`, values: [] };

/**
 * `s` with the batch's settings made first, in the same statement: one statement fewer to bind,
 * execute and answer per batch. `s` is LATERAL to the settings, so it runs after them; a plan
 * setting made inside a statement applies from the next one on (the INSERT), which is what it is for.
 */
function withSettings(s: Statement): Statement {
  let text = settingsFirst.get(s.text);
  if (text === undefined) {
    text = `SELECT s.* FROM (SELECT ${BATCH_SETTINGS}) AS settings CROSS JOIN LATERAL (SELECT * FROM (${s.text}) AS statement WHERE settings.synchronous IS NOT NULL) AS s`;
    settingsFirst.set(s.text, text);
  }
  return { text, values: s.values };
}

// The statements given settings are the code's own (the PHI charge's): each text is built once, so
// that every batch sends the same string, whose hash and comparison with the prepared one are cheap.
const settingsFirst = new Map<string, string>();

/** After a failed statement inside the batch: roll back so the connection can be reused. */
async function abandon(client: pg.PoolClient, error: unknown): Promise<unknown> {
  await client.query('ROLLBACK').catch(() => undefined);
  return error;
}
