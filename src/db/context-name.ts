/**
 * A role or clinic id as the request context carries it (set_config in src/db/transaction.ts):
 * what the database's own checks accept for a role (schema/migrations/020_row_scopes.sql,
 * 012_break_glass.sql), so a name the gateway lets through is one the database can hold.
 */
export const CONTEXT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
