import pg from 'pg';

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
  return new Promise((resolve, reject) => {
    const query = new pg.Query<R>(text, values as unknown[] | undefined, (err, result) => (err ? reject(err) : resolve(result as unknown as pg.QueryResult<R>)));
    if (name !== undefined) (query as { name?: string }).name = name;
    client.query(query);
  });
}
