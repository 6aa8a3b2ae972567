import pg from 'pg';

/** What a pg Result keeps of a RowDescription (pg/lib/result.js, `addFields`). */
interface ResultFields {
  fields: readonly FieldDescription[];
  _parsers: unknown[] | undefined;
  _prebuiltEmptyResultObject: Record<string, null> | null;
  _types: unknown;
  addFields(fields: readonly FieldDescription[]): void;
}

interface FieldDescription {
  readonly name: string;
  readonly dataTypeID: number;
  readonly format: string;
}

interface Described {
  readonly fields: readonly FieldDescription[];
  readonly parsers: unknown[] | undefined;
  readonly empty: Record<string, null> | null;
}

const sameFields = (a: readonly FieldDescription[], b: readonly FieldDescription[]): boolean => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]!.name !== b[i]!.name || a[i]!.dataTypeID !== b[i]!.dataTypeID || a[i]!.format !== b[i]!.format) return false;
  }
  return true;
};

// Per client's type parsers (each pg client has its own) and statement text: the row parsers and
// the empty row pg derived from the statement's last RowDescription. The texts are the code's own,
// a bounded set (transaction.ts names at most 512 of them).
const described = new WeakMap<object, Map<string, Described>>();
const MAX_DESCRIBED = 512;
const describedFor = (types: object): Map<string, Described> => {
  let byText = described.get(types);
  if (byText === undefined) described.set(types, (byText = new Map()));
  return byText;
};

/** The parts of pg's Query (pg/lib/query.js) that its client drives a query through. */
export interface QueryInternals {
  text: string;
  name?: string;
  values?: unknown[];
  types?: unknown;
  callback: ((err: Error | null, result: unknown) => void) | undefined;
  submit(connection: unknown): Error | null | undefined;
  handleRowDescription(msg: unknown): void;
  handleDataRow(msg: unknown): void;
  handleCommandComplete(msg: unknown, connection: unknown): void;
  handleEmptyQuery(connection: unknown): void;
  handleError(err: Error, connection: unknown): void;
  handleReadyForQuery(connection: unknown): void;
}

/** pg's Query as its client sees it, to extend. */
export const QueryBase = pg.Query as unknown as new (text: string, values?: unknown[], callback?: (err: Error | null, result: unknown) => void) => QueryInternals;

/**
 * A statement whose rows are parsed as pg parses them, with what pg derives from each answer's
 * RowDescription (a type parser per column, an empty row to copy per row) kept per statement text
 * and used again while the description is the same: pg derives both afresh for every statement.
 */
export class Statement extends QueryBase {
  override handleRowDescription(msg: { fields: readonly FieldDescription[] }): void {
    const self = this as unknown as { text: string; _result: ResultFields; _checkForMultirow(): void; _accumulateRows: boolean; callback: unknown };
    self._checkForMultirow();
    const result = self._result;
    const types = result._types;
    const byText = typeof types === 'object' && types !== null ? describedFor(types) : undefined;
    const known = byText?.get(self.text);
    if (known !== undefined && sameFields(known.fields, msg.fields)) {
      result.fields = msg.fields;
      result._parsers = known.parsers;
      result._prebuiltEmptyResultObject = known.empty;
    } else {
      result.addFields(msg.fields);
      if (byText !== undefined && (known !== undefined || byText.size < MAX_DESCRIBED)) {
        byText.set(self.text, { fields: msg.fields, parsers: result._parsers, empty: result._prebuiltEmptyResultObject });
      }
    }
    self._accumulateRows = Boolean(self.callback) || (this as unknown as pg.Query).listeners('row').length === 0;
  }
}

/**
 * Sends one statement on a client and resolves with its result, as `client.query(config)` does, for
 * less per statement: given a config object, pg copies it through its property descriptors
 * (`cloneQueryConfig`, the most expensive JS of a statement on the by-id path) and chains a second
 * promise onto the first only to rewrite a failure's stack. A Query built from the text, handed
 * over as a submittable, skips both; what is sent and what resolves are the same.
 */
export function submit<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  text: string,
  values?: readonly unknown[],
  name?: string,
): Promise<pg.QueryResult<R>> {
  return new Promise((resolve, reject) => client.query(statementOf(text, values, name, resolve, reject) as unknown as pg.Submittable));
}

/** The Statement of `text` that settles a promise with its result: submit's, and a group's part (one-sync.ts). */
export function statementOf<R extends pg.QueryResultRow>(
  text: string,
  values: readonly unknown[] | undefined,
  name: string | undefined,
  resolve: (result: pg.QueryResult<R>) => void,
  reject: (err: Error) => void,
): Statement {
  const query = new Statement(text, values as unknown[] | undefined, (err, result) => (err ? reject(err) : resolve(result as pg.QueryResult<R>)));
  if (name !== undefined) query.name = name;
  return query;
}
