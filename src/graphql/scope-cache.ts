import { RequestCache } from '@pothos/plugin-scope-auth';
import type { GraphQLContext } from './context.ts';

/**
 * Drops the request's entry in Pothos' scope cache once its execution is over. That cache is a
 * WeakMap keyed by the context whose value (the request's scopes) holds the context: a cycle
 * through an old WeakMap's entry that V8's scavenges treat as live, so every field resolved with
 * `authScopes` kept its whole request (context, transaction, loaders, the HTTP request) until the
 * next full GC: ~12 KB promoted a `patient(id)`, most of what filled the old space (bench/README.md,
 * "What kept a read's objects alive past its end"). Scopes are computed again from the context if
 * an abandoned execution still asks for them, so releasing early changes no decision.
 */
export function releaseScopeCache(ctx: GraphQLContext): void {
  RequestCache.clearForContext(ctx);
}
