/**
 * Where one request's time went, seam by seam, to find what makes a slow request slow (issue 10's
 * p99 by id): each seam stamps performance.now() as the request passes it, and the summary line
 * carries the moments (`phasesMs`) as milliseconds since the context's start. Off unless the gateway is built
 * with `phaseTimings` (the bench): then one instance per request and a few clock reads; off, the
 * seams test one null.
 */
export class RequestPhases {
  /** The context is made: the credentials were checked. */
  contextMade = 0;
  /** Past admission (saturation, fair share, the deadline): the transaction's plugin begins. */
  admitted = 0;
  /** The transaction asked the pool for a connection, and had one. */
  connectAsked = 0;
  connected = 0;
  /** Execution (statements, decryption, the result's shape) is over. */
  executed = 0;
  /** The read's entry went to the audit writer, and the batch holding it committed. */
  writing = 0;
  written = 0;
  /** The read's own COMMIT was answered. */
  committed = 0;

  constructor(readonly startedAt: number) {}

  /** The moments in ms since the start (to 0.01 ms), in PHASES' order; -1 for one the request never reached. */
  toLog(): number[] {
    return PHASES.map((name) => (this[name] === 0 ? -1 : Math.round((this[name] - this.startedAt) * 100) / 100));
  }
}

/** The names of the summary line's `phasesMs`, in its order. */
export const PHASES = ['contextMade', 'admitted', 'connectAsked', 'connected', 'executed', 'writing', 'written', 'committed'] as const;
