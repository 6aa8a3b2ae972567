import { createRequire } from 'node:module';
import pg from 'pg';
import { QueryBase, statementOf, type Statement } from './submit.ts';

// pg's own parameter serialisation (Date, Buffer, arrays, toPostgres, JSON), so that a grouped
// statement binds exactly what it would bind alone.
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue: (value: unknown) => unknown };

/** What the group writes through: pg's Connection (pg/lib/connection.js). */
interface Wire {
  readonly parsedStatements: Record<string, string>;
  /** Named statements whose Parse is on the wire and not yet answered (pg's own bookkeeping). */
  readonly submittedNamedStatements: Record<string, string>;
  parse(config: { text: string; name: string; types?: unknown }): void;
  bind(config: { portal: string; statement: string; values: readonly unknown[] }): void;
  describe(config: { type: 'P'; name: string }): void;
  execute(config: { portal: string }): void;
  sync(): void;
}

interface Part {
  readonly query: Statement;
  readonly values: readonly unknown[];
}

/** A statement of a group that PostgreSQL skipped because one before it failed. */
export class SkippedStatement extends Error {
  constructor(cause: unknown) {
    super('Statement not run: an earlier statement of its group failed.', { cause });
    this.name = 'SkippedStatement';
  }
}

/**
 * Several statements as one extended-protocol group: Bind, Describe and Execute for each (Parse for
 * an unnamed one, and for a named one this connection has not parsed yet) and a single Sync at the end. PostgreSQL then answers ReadyForQuery once, and
 * flushes its socket once, for the whole group instead of once per statement; inside a transaction
 * block a Sync ends nothing. A failed statement makes PostgreSQL skip the rest up to the Sync:
 * those are rejected with SkippedStatement, as they would have failed in the aborted transaction.
 *
 * To pg's client it is one query (it routes every answer to the query it is waiting on, and moves
 * on at ReadyForQuery); the group hands each answer to the statement it belongs to and moves on
 * at each CommandComplete.
 */
class Group extends QueryBase {
  private next = 0;
  private settled = false;
  /** The named statements this group parses: known to the connection once their Parse is answered. */
  private parsing: (string | undefined)[] = [];

  /** The statements, in the order they are sent. */
  constructor(readonly parts: readonly Part[]) {
    super('');
    this.callback = () => undefined;
  }

  override submit(connection: unknown): Error | null {
    // Serialised before anything is written: a value pg cannot bind fails the group whole, with
    // nothing of it on the wire.
    let bound: unknown[][];
    try {
      bound = this.parts.map((p) => p.values.map((v) => prepareValue(v)));
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
    const wire = connection as Wire;
    this.parts.forEach(({ query }, i) => {
      const name = query.name ?? '';
      if (name === '') wire.parse({ text: query.text, name: '', types: query.types });
      else if (wire.parsedStatements[name] !== query.text && wire.submittedNamedStatements[name] !== query.text) {
        // Parsed here, in the group, as pg's own Query would parse it alone: the group's statements
        // then share one Sync from a connection's first use on (a read's context and lookup must:
        // src/db/transaction.ts). Submitted now; recorded as parsed by pg (showCurrent).
        wire.parse({ text: query.text, name, types: query.types });
        wire.submittedNamedStatements[name] = query.text;
        this.parsing[i] = name;
      }
      wire.bind({ portal: '', statement: name, values: bound[i]! });
      wire.describe({ type: 'P', name: '' });
      wire.execute({ portal: '' });
    });
    wire.sync();
    this.showCurrent();
    return null;
  }

  private get current(): Statement | undefined {
    return this.parts[this.next]?.query;
  }

  override handleRowDescription(msg: unknown): void {
    this.current?.handleRowDescription(msg as { fields: [] });
  }

  override handleDataRow(msg: unknown): void {
    this.current?.handleDataRow(msg);
  }

  override handleCommandComplete(msg: unknown, connection: unknown): void {
    this.current?.handleCommandComplete(msg, connection);
    this.next++;
    this.showCurrent();
  }

  override handleEmptyQuery(connection: unknown): void {
    this.current?.handleEmptyQuery(connection);
    this.next++;
    this.showCurrent();
  }

  /**
   * pg's client records a prepared statement under the name and text of the query it is driving
   * when its ParseComplete arrives, and forgets a submitted one when an error does: the group shows
   * it the statement whose answers come next, so that each Parse the group sent is recorded, or
   * forgotten, exactly as pg would for that statement alone.
   */
  private showCurrent(): void {
    const self = this as unknown as { name: string | undefined; text: string };
    self.name = this.parsing[this.next];
    self.text = self.name === undefined ? '' : this.parts[this.next]!.query.text;
  }

  override handleError(err: Error, connection: unknown): void {
    if (this.settled) return;
    this.settled = true;
    // PostgreSQL skipped everything after the failure up to the Sync, Parse messages included:
    // those statements are not prepared, and are parsed again when next sent. (The failed one's
    // own Parse pg has recorded or forgotten already, by its ParseComplete or this error.)
    const wire = connection as Wire;
    for (let i = this.next + 1; i < this.parts.length; i++) {
      const name = this.parsing[i];
      if (name !== undefined) delete wire.submittedNamedStatements[name];
    }
    this.parts.forEach(({ query }, i) => {
      if (i < this.next) query.handleReadyForQuery(connection);
      else if (i === this.next) query.handleError(err, connection);
      else query.handleError(new SkippedStatement(err), connection);
    });
  }

  override handleReadyForQuery(connection: unknown): void {
    if (this.settled) return;
    if (this.next < this.parts.length) return this.handleError(new Error('The server ended a group of statements early.'), connection);
    this.settled = true;
    for (const { query } of this.parts) query.handleReadyForQuery(connection);
  }
}

interface Pending {
  readonly statements: Part[];
}

const pending = new WeakMap<pg.ClientBase, Pending>();

/**
 * Sends a statement on a client. Statements sent in the same tick leave in one socket write, and
 * those of them that can share a Sync (parameterised ones) as one group (Group above); a statement
 * without parameters (COMMIT, ROLLBACK: the simple protocol) goes alone, in order. process.nextTick runs after the microtasks queued
 * meanwhile, so a statement sent right after an `await` that has already settled still makes it.
 */
export function sendInTick<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  text: string,
  values?: readonly unknown[],
  name?: string,
): Promise<pg.QueryResult<R>> {
  return new Promise((resolve, reject) => {
    const query = statementOf(text, values, name, resolve, reject);
    let tick = pending.get(client);
    if (tick === undefined) {
      pending.set(client, (tick = { statements: [] }));
      const { stream } = (client as pg.Client).connection;
      stream.cork();
      process.nextTick(() => {
        pending.delete(client);
        flush(client, tick!.statements.splice(0));
        stream.uncork();
      });
    }
    tick.statements.push({ query, values: values ?? [] });
  });
}

/**
 * Whether PostgreSQL has answered the Parse of statement `name` with this text on the client's
 * session. Until it has, a failure earlier in the Parse's group makes PostgreSQL skip it while pg
 * already counts it as submitted, and a next holder of the client would only Bind it.
 */
export function isParsed(client: pg.ClientBase, name: string, text: string): boolean {
  return (client as unknown as { readonly connection: Wire }).connection.parsedStatements[name] === text;
}

/**
 * Hands what this tick has sent on the client to pg now, still unwritten until the tick ends:
 * before the client goes back to its pool, where its next holder may query it directly (pool.query
 * does), and that query must come after them, not inside their transaction.
 */
export function sendTickNow(client: pg.ClientBase): void {
  const tick = pending.get(client);
  if (tick !== undefined) flush(client, tick.statements.splice(0));
}

function flush(client: pg.ClientBase, statements: readonly Part[]): void {
  let run: Part[] = [];
  const send = () => {
    if (run.length === 1) client.query(run[0]!.query as unknown as pg.Submittable);
    else if (run.length > 1) client.query(groupOf(client, run) as unknown as pg.Submittable);
    run = [];
  };
  for (const part of statements) {
    const { query } = part;
    if (query.values !== undefined) {
      run.push(part);
    } else {
      send();
      client.query(query as unknown as pg.Submittable);
    }
  }
  send();
}

/** The client's type parsers for each statement, which pg gives only to the query it is handed. */
function groupOf(client: pg.ClientBase, parts: readonly Part[]): Group {
  const types = (client as unknown as { _types: unknown })._types;
  for (const { query } of parts) {
    const result = (query as unknown as { _result: { _types: unknown } })._result;
    result._types ??= types;
  }
  return new Group(parts);
}
