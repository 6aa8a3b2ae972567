import type pg from 'pg';

/** Where the next delivery starts: the first leaf and the smallest checkpoint size not yet delivered. */
export interface SinkPosition {
  readonly nextLeaf: number;
  readonly nextCheckpoint: number;
}

/**
 * A destination outside the database. Delivery calls `position` and then `write`, inside one
 * transaction holding the sink's lock (`client`); `write` returns only once the lines are durable
 * at the destination, and only then may the position it records move on.
 */
export interface Sink {
  /** Stable name: the lock that keeps two deliverers of this sink apart. */
  readonly name: string;
  position(client: pg.PoolClient): Promise<SinkPosition>;
  write(lines: readonly string[], next: SinkPosition, client: pg.PoolClient): Promise<void>;
}
