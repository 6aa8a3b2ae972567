import type pg from 'pg';
import { PARTNER_ROLE } from '../policy/decide.ts';
import type { PolicySet, RolePolicy } from '../policy/types.ts';
import { CONTEXT_NAME } from './context-name.ts';

/**
 * What row security enforces for one role (phigate.role_scopes, schema/migrations/020_row_scopes.sql):
 * its row scope kind and the operations it may do. Written from the policy file by the migrator,
 * compared with the policy by the gateway at start-up.
 */
export interface RoleScope {
  readonly role: string;
  readonly rowScope: string;
  /** Sorted, so that two scopes compare by value. */
  readonly operations: readonly string[];
}

/** A policy whose roles or row scopes the database does not implement or does not enforce as written. */
export class RowScopeError extends Error {
  readonly code = 'ROW_SCOPE_MISMATCH';
  constructor(message: string) {
    super(message);
    this.name = 'RowScopeError';
  }
}

type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * The row scope kind that enforces a role's `rows`: as named, except that the API-key role sees a
 * clinic only through a live key, which is a scope of its own in the database.
 */
function kindOf(role: RolePolicy): string {
  return role.name === PARTNER_ROLE && role.rows === 'clinic' ? 'partner_key' : role.rows;
}

/** The rows phigate.role_scopes must hold for this policy, in the policy's order. */
export function roleScopesOf(policy: PolicySet): RoleScope[] {
  return [...policy.roles.values()].map((role) => {
    if (!CONTEXT_NAME.test(role.name)) {
      throw new RowScopeError(`roles.${role.name}: the database cannot name this role (lower-case letters, digits, _ and -, at most 63)`);
    }
    return { role: role.name, rowScope: kindOf(role), operations: [...role.operations].sort() };
  });
}

export async function readRoleScopes(db: Queryable): Promise<{ kinds: string[]; scopes: RoleScope[] }> {
  const kinds = await db.query<{ kind: string }>('SELECT kind FROM phigate.row_scope_kinds ORDER BY kind');
  const scopes = await db.query<{ role: string; row_scope: string; operations: string[] }>(
    'SELECT role, row_scope, operations FROM phigate.role_scopes ORDER BY role',
  );
  return {
    kinds: kinds.rows.map((r) => r.kind),
    scopes: scopes.rows.map((r) => ({ role: r.role, rowScope: r.row_scope, operations: [...r.operations].sort() })),
  };
}

const showOps = (ops: readonly string[]): string => `[${ops.join(', ')}]`;
const rowsOf = (scope: RoleScope): string => (scope.rowScope === 'partner_key' ? 'clinic' : scope.rowScope);

/** Refuses a role whose row scope the database has no SQL for, before anything is written. */
function assertImplemented(wanted: readonly RoleScope[], kinds: readonly string[]): void {
  for (const scope of wanted) {
    const forKeys = scope.role === PARTNER_ROLE;
    const offered = forKeys ? ['partner_key', 'none'].filter((k) => kinds.includes(k)) : kinds.filter((k) => k !== 'partner_key');
    if (offered.includes(scope.rowScope)) continue;
    const names = offered.map((k) => (k === 'partner_key' ? 'clinic' : k)).join(', ');
    throw new RowScopeError(
      `roles.${scope.role}.rows: ${rowsOf(scope)} is a row scope the database does not implement${forKeys ? ' for API keys' : ''} (it implements ${names})`,
    );
  }
}

/**
 * The first difference between what the policy says and what the database enforces, as one line
 * naming the role and the scope; null when they agree exactly.
 */
export function firstMismatch(wanted: readonly RoleScope[], actual: { kinds: readonly string[]; scopes: readonly RoleScope[] }): string | null {
  try {
    assertImplemented(wanted, actual.kinds);
  } catch (err) {
    return (err as Error).message;
  }
  const enforced = new Map(actual.scopes.map((s) => [s.role, s]));
  for (const scope of wanted) {
    const found = enforced.get(scope.role);
    if (!found) return `roles.${scope.role}: the database enforces no row scope for this role (the policy says rows: ${rowsOf(scope)})`;
    if (found.rowScope !== scope.rowScope) {
      return `roles.${scope.role}.rows: the policy says ${rowsOf(scope)} but the database enforces ${rowsOf(found)}`;
    }
    if (showOps(found.operations) !== showOps(scope.operations)) {
      return `roles.${scope.role}.operations: the policy says ${showOps(scope.operations)} but the database enforces ${showOps(found.operations)}`;
    }
  }
  const named = new Set(wanted.map((s) => s.role));
  const extra = actual.scopes.find((s) => !named.has(s.role));
  if (extra) return `roles.${extra.role}: the database enforces rows: ${rowsOf(extra)} for a role the policy does not name`;
  return null;
}

/**
 * Start-up: refuses a policy that is not exactly what row security enforces, so a renamed or
 * narrowed role is never silently different in the database.
 */
export async function assertRowScopes(db: Queryable, policy: PolicySet, source: string): Promise<void> {
  const wanted = roleScopesOf(policy);
  const mismatch = firstMismatch(wanted, await readRoleScopes(db));
  if (mismatch !== null) {
    throw new RowScopeError(`${source}: ${mismatch}; run \`npx phigate migrate\` with this policy file to make the database enforce it`);
  }
}

/**
 * Makes the database enforce the policy's row scopes: replaces phigate.role_scopes in one
 * transaction, as the table's owner. `db` is the migrator's connection, outside a transaction.
 */
export async function writeRoleScopes(db: Queryable, policy: PolicySet): Promise<RoleScope[]> {
  const wanted = roleScopesOf(policy);
  await db.query('BEGIN');
  try {
    await db.query('SET LOCAL ROLE phigate_owner');
    assertImplemented(wanted, (await readRoleScopes(db)).kinds);
    await db.query('DELETE FROM phigate.role_scopes');
    await db.query(
      `INSERT INTO phigate.role_scopes (role, row_scope, operations)
       SELECT s->>'role', s->>'rowScope', ARRAY(SELECT jsonb_array_elements_text(s->'operations'))
       FROM jsonb_array_elements($1::jsonb) s`,
      [JSON.stringify(wanted)],
    );
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK');
    throw err;
  }
  return wanted;
}
