import type { ApiKeyService } from '../records/api-keys.ts';
import type { RequestScope } from '../records/scope.ts';
import type { Loaders } from './loaders.ts';

export interface GraphQLContext extends RequestScope {
  readonly loaders: Loaders;
  readonly maxPageSize: number;
  /** performance.now() when the request's context was made: its `durationMs` counts from here. */
  readonly startedAt: number;
  /** Partner key management; null in a gateway built without it (the mutations then refuse). */
  readonly apiKeys: ApiKeyService | null;
}
