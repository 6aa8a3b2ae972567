import type pg from 'pg';

/** Where the next delivery starts: the first leaf and the smallest checkpoint size not yet delivered. */
export interface SinkPosition {
  readonly nextLeaf: number;
  readonly nextCheckpoint: number;
}

/**
 * A destination outside the database. Delivery calls `position` and then `write`, inside one
 * transaction holding the sink's lock (`client`); `write` returns only once the lines are durable
 * at the destination (`next` is where they end), and only then does delivery record the position.
 */
export interface Sink {
  /**
   * Stable name: the lock that keeps two deliverers of this sink apart, and its row of
   * phigate.audit_sink_cursors (`stdout`, or `file:<real directory>`, its links resolved).
   */
  readonly name: string;
  position(client: pg.PoolClient): Promise<SinkPosition>;
  write(lines: readonly string[], next: SinkPosition): Promise<void>;
}
