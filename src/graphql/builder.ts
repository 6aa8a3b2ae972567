import SchemaBuilder from '@pothos/core';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { PhigateError } from '../errors.ts';
import { canPerform, mfaBlocks, usableRoles } from '../policy/decide.ts';
import type { GraphQLContext } from './context.ts';

export interface AuthScopes {
  /** May see patient rows at all: some role with a row scope, its MFA requirement met. */
  patientReader: boolean;
  /** May call the named mutation (policies/: `operations`). */
  operation: string;
}

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  AuthScopes: AuthScopes;
  DefaultFieldNullability: false;
}>({
  plugins: [ScopeAuthPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    // Scopes are computed once per request from the principal and the policy.
    authScopes: (ctx) => ({
      patientReader: usableRoles(ctx.policy, ctx.principal).some((r) => r.rows !== 'none'),
      operation: (name: string) => canPerform(ctx.policy, ctx.principal, name),
    }),
    unauthorizedError: (_parent, ctx) =>
      mfaBlocks(ctx.policy, ctx.principal)
        ? new PhigateError('MFA_REQUIRED', 'This requires a sign-in with multi-factor authentication.')
        : new PhigateError('FORBIDDEN', 'You may not do this.'),
  },
});

builder.queryType({});
builder.mutationType({});
