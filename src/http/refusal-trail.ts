import type { AuditEvent, AuditRequest } from '../audit/event.ts';
import type { AuditRecorder } from '../audit/recorder.ts';
import type { Logger, RequestLog } from '../log.ts';
import { errorSummary } from './plugins/use-request-transaction.ts';

/** One refused request: who claimed to ask, from where, and why (a code of ours, never input). */
export interface Refusal {
  readonly requestId: string;
  /** The authenticated subject, the subject a refused token claimed, or null when none was readable. */
  readonly subject: string | null;
  /** Whether `subject` was verified; a refused authentication is audited as `anonymous`. */
  readonly authenticated: boolean;
  readonly clientAddr: string | null;
  /** The error code (`UNAUTHENTICATED`, `MFA_REQUIRED`, `FORBIDDEN`, `RATE_LIMITED`). */
  readonly code: string;
  /** Its reason when it has one (`bad_signature`, `request_rate`, ...). */
  readonly reason: string | undefined;
  /** `Request` for a refusal before execution, else the operation's root type. */
  readonly typeName: string;
  /** The root field refused, when the refusal names one. */
  readonly field: string | null;
  /** The request's logger (requestLogger): the refusal's lines name the request. */
  readonly log: RequestLog;
}

export interface RefusalTrailOptions {
  readonly recorder: AuditRecorder;
  readonly logger: Logger;
  /** Refusals of one client address audited one by one per second; the rest of that second are counted. */
  readonly auditedPerSecond: number;
  /** Refusals of one client address in a minute past which an `alert` event is written, once that minute. */
  readonly alertPerMinute: number;
  /** Audit writes outstanding at once, over every source; past it refusals are counted too. */
  readonly maxPending?: number;
  /** Milliseconds since the epoch; for tests. */
  readonly now?: () => number;
}

export interface RefusalTrail {
  /** Settles once the refusal's own event is written (or counted, or the wait bound has passed); never rejects. */
  refused(refusal: Refusal): Promise<void>;
  /** Writes the counts still held and waits for every write outstanding (shutdown, tests). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The `detail` column takes a short code (migration 008); a reason is one of ours, checked all the same. */
const DETAIL = /^[a-z0-9_]{1,48}$/;
// A claimed subject comes from a token nobody verified: kept only when it is short, printable text.
const CLAIMED_SUBJECT = /^[\x21-\x7e]{1,128}$/;
/** Distinct client addresses tracked at once; beyond, the excess share one bucket. */
const MAX_SOURCES = 10_000;
const OVERFLOW_SOURCE = '*';
/**
 * How long a refusal's answer waits for its event. Written before the 401 or 403 leaves, the event
 * is there when the client hears of it; but a hung database must not hold refusals for long.
 */
const WRITE_WAIT_MS = 1_000;

function boundedWait(written: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, WRITE_WAIT_MS)));
  return Promise.race([written, bound]).finally(() => clearTimeout(timer));
}

/** Distinct (subject, reason) counts per address and second. */
const MAX_COUNTED = 100;

interface Source {
  second: number;
  inSecond: number;
  minute: number;
  inMinute: number;
  /** Refusals of the current second not written one by one: (subject, detail) -> count. */
  counted: Map<string, { refusal: Refusal; detail: string; count: number }>;
}

/**
 * Every refusal gets a log line at once and an audit event, at a bounded cost: a flood of bad
 * tokens must not become a flood of synchronous inserts. Per client address, the first
 * `auditedPerSecond` refusals of each second are each written as their own `refused` event (request
 * id, subject, reason); the rest of that second are counted per (subject, reason) and written as
 * one event each when the second is over, its detail `<reason>:x<count>`. A global cap on writes
 * outstanding turns any further refusal into a counted one as well. Past `alertPerMinute` refusals
 * of one address in a minute, a warning line and an `alert` event (detail `refusal_burst`).
 *
 * A refusal written one by one is answered once its event is written (at most WRITE_WAIT_MS); a
 * counted one at once. A refusal shows no PHI, so a write that fails does not change the answer;
 * it is logged.
 */
export function createRefusalTrail(opts: RefusalTrailOptions): RefusalTrail {
  const now = opts.now ?? (() => Date.now());
  const maxPending = opts.maxPending ?? 256;
  const sources = new Map<string, Source>();
  const pending = new Set<Promise<void>>();

  // A counted refusal is written after its request, by the next one or the sweep: its line is nobody's.
  const write = (request: AuditRequest, event: AuditEvent, log: RequestLog = opts.logger): Promise<void> => {
    const written = opts.recorder.record(request, [event]).catch((cause: unknown) => {
      log.error({ task: 'refusal-trail', err: errorSummary(cause), action: event.action }, 'audit of a refusal failed');
    });
    pending.add(written);
    void written.finally(() => pending.delete(written));
    return written;
  };
  const requestOf = (r: Refusal): AuditRequest => {
    const subject = r.subject !== null && CLAIMED_SUBJECT.test(r.subject) ? r.subject : null;
    return {
      requestId: r.requestId,
      actor: subject ?? 'anonymous',
      actorKind: r.authenticated && subject !== null ? 'user' : 'anonymous',
      clientAddr: r.clientAddr,
    };
  };
  const eventOf = (r: Refusal, action: 'refused' | 'alert', detail: string): AuditEvent => ({
    action,
    typeName: r.typeName,
    field: r.field,
    patientId: null,
    recordId: null,
    role: null,
    purpose: 'unspecified',
    breakGlass: false,
    detail,
  });
  const writeCounted = (source: Source) => {
    for (const { refusal, detail, count } of source.counted.values()) {
      write(requestOf(refusal), eventOf(refusal, 'refused', `${detail}:x${count}`.slice(0, 64)));
    }
    source.counted.clear();
  };
  const sourceFor = (addr: string, second: number): Source => {
    let source = sources.get(addr);
    if (source === undefined) {
      if (sources.size >= MAX_SOURCES) return sourceFor(OVERFLOW_SOURCE, second);
      source = { second, inSecond: 0, minute: Math.floor(second / 60), inMinute: 0, counted: new Map() };
      sources.set(addr, source);
    }
    if (source.second !== second) {
      writeCounted(source);
      source.second = second;
      source.inSecond = 0;
    }
    if (source.minute !== Math.floor(second / 60)) {
      source.minute = Math.floor(second / 60);
      source.inMinute = 0;
    }
    return source;
  };
  // Counts of a second are written when the next second of their source begins, or by this sweep.
  const sweep = setInterval(() => {
    const second = Math.floor(now() / 1000);
    for (const [addr, source] of sources) {
      if (source.second === second) continue;
      writeCounted(source);
      if (source.minute !== Math.floor(second / 60)) sources.delete(addr);
    }
  }, 1_000);
  sweep.unref();

  return {
    refused(r) {
      const detail = r.reason !== undefined && DETAIL.test(r.reason) ? r.reason : r.code.toLowerCase();
      r.log.warn({ refusal: detail, code: r.code, claimedSubject: r.authenticated ? undefined : requestOf(r).actor, field: r.field ?? undefined }, 'request refused');
      const source = sourceFor(r.clientAddr ?? 'unknown', Math.floor(now() / 1000));
      source.inSecond++;
      source.inMinute++;
      if (source.inMinute === opts.alertPerMinute) {
        r.log.warn({ refusalsThisMinute: source.inMinute, alertClientAddr: r.clientAddr }, 'burst of refusals from one client address');
        write(requestOf(r), eventOf(r, 'alert', 'refusal_burst'), r.log);
      }
      if (source.inSecond <= opts.auditedPerSecond && pending.size < maxPending) {
        return boundedWait(write(requestOf(r), eventOf(r, 'refused', detail), r.log));
      }
      let key = `${requestOf(r).actor}\u0000${detail}`;
      // A flood that varies the claimed subject must not grow the counts: past a bound they go unnamed.
      const named = source.counted.has(key) || source.counted.size < MAX_COUNTED;
      if (!named) key = `anonymous\u0000${detail}`;
      const counted = source.counted.get(key);
      if (counted) counted.count++;
      else source.counted.set(key, { refusal: named ? r : { ...r, subject: null }, detail, count: 1 });
      return Promise.resolve();
    },
    async flush() {
      for (const source of sources.values()) writeCounted(source);
      while (pending.size > 0) await Promise.all(pending);
    },
    async close() {
      clearInterval(sweep);
      await this.flush();
    },
  };
}
