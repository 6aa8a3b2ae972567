import type { BreakGlassScope } from '../records/break-glass.ts';
import type { ApiKeyService } from '../records/api-keys.ts';
import type { RequestFacts } from '../http/request-id.ts';
import type { RequestPhases } from '../telemetry/phases.ts';
import type { Loaders } from './loaders.ts';

export interface GraphQLContext extends BreakGlassScope {
  readonly loaders: Loaders;
  readonly maxPageSize: number;
  /** The default and largest `first` of Patient.encounters (PHIGATE_MAX_ENCOUNTERS). */
  readonly maxEncounters: number;
  /** performance.now() when the request's context was made: its `durationMs` counts from here. */
  readonly startedAt: number;
  /** The moments the request passed each seam (GatewayDeps.phaseTimings); null when not kept. */
  readonly phases: RequestPhases | null;
  /** Who asks and from where, for lines written without `log` (the summary line, requestFields). */
  readonly facts: RequestFacts;
  /** Run by the request-transaction plugin once the request committed (alerts); never on rollback. */
  readonly committed: ReadonlyArray<() => void>;
  /** Partner key management; null in a gateway built without it (the mutations then refuse). */
  readonly apiKeys: ApiKeyService | null;
}
