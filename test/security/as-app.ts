import type pg from 'pg';
import type { TestGateway } from '../support/gateway.ts';

export interface AppContext {
  readonly roles: string;
  readonly actor: string;
  /** Comma-separated, as the gateway sets phigate.clinics. */
  readonly clinics: string;
}

/**
 * Runs `sql` as phigate_app with a request context set as the gateway sets it, below any
 * TypeScript, and rolls back. Resolves to the database's error, or null when it was accepted.
 */
export const asApp = (gw: TestGateway, ctx: AppContext, sql: string, params: unknown[]): Promise<pg.DatabaseError | null> =>
  gw.admin(async (c) => {
    await c.query('BEGIN');
    try {
      await c.query('SET LOCAL ROLE phigate_app');
      await c.query(`SELECT set_config('phigate.clinics', $1, true), set_config('phigate.roles', $2, true), set_config('phigate.actor', $3, true)`, [
        ctx.clinics,
        ctx.roles,
        ctx.actor,
      ]);
      await c.query(sql, params);
      return null;
    } catch (e) {
      return e as pg.DatabaseError;
    } finally {
      await c.query('ROLLBACK');
    }
  });
