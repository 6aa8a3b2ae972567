import type pg from 'pg';
import { TEST_APP_ROLE } from './global-setup.ts';

/**
 * Puts `c`'s open transaction under a request's context, as the app role, with generic plans: what
 * the gateway's prepared statements settle on, forced so that the first EXPLAIN EXECUTE shows it.
 */
export async function underRequestContext(c: pg.Client, context: { actor: string; roles: string; clinics: string }): Promise<void> {
  await c.query(`SELECT set_config('phigate.actor', $1, true), set_config('phigate.roles', $2, true), set_config('phigate.clinics', $3, true),
                        set_config('plan_cache_mode', 'force_generic_plan', true)`, [context.actor, context.roles, context.clinics]);
  await c.query(`SET LOCAL ROLE ${TEST_APP_ROLE}`);
}

/** The text of the first statement `send` sends through the client it is handed (which runs nothing). */
export async function firstStatementOf(send: (client: never) => Promise<unknown>): Promise<string> {
  const captured: string[] = [];
  await send({ query: async (text: string) => (captured.push(text), { rows: [] }) } as never);
  return captured[0]!;
}

/** `EXPLAIN ANALYZE` of `EXECUTE <execute>` (a statement prepared in `c`), without costs or timings. */
export async function planOfExecute(c: pg.Client, execute: string): Promise<string> {
  const { rows } = await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE ${execute}`);
  return rows.map((r) => r['QUERY PLAN']).join('\n');
}
