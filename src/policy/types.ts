/** What a role may do with one PHI field: show it, show a masked form of it, or withhold it. */
export type Effect = 'allow' | 'mask' | 'deny';

/**
 * Which patient rows a role may see. PostgreSQL row security enforces the same scope again from
 * phigate.role_scopes, which migrate writes from the policy and start-up compares with it
 * (src/db/row-scopes.ts), so a policy mistake here cannot widen what the database returns.
 */
export type RowScope = 'care_team' | 'clinic' | 'none';

/**
 * How much PHI one principal may take out: patient rows and PHI field values (each value shown,
 * masked or not), per request and per minute. Minimum necessary as a number: a role that needs
 * one patient at a time cannot page through a clinic.
 */
export interface PhiLimits {
  readonly rowsPerRequest: number;
  readonly phiValuesPerRequest: number;
  readonly rowsPerMinute: number;
  readonly phiValuesPerMinute: number;
}

export interface RolePolicy {
  readonly name: string;
  /** Purpose of use written into every audit row the role causes. */
  readonly purpose: string;
  readonly mfaRequired: boolean;
  readonly rows: RowScope;
  /** Mutations the role may call. */
  readonly operations: ReadonlySet<string>;
  /** Keyed `Type.field`; holds every PHI field of the catalog, so a missing key is a bug, not a default. */
  readonly fields: ReadonlyMap<string, Effect>;
  /** Present exactly when the role reads PHI (see reads-phi.ts). */
  readonly limits: PhiLimits | null;
}

/**
 * Whom a break-glass grant may reach: patients of the clinics in the clinician's credentials, or
 * any clinic's. Who may break the glass and who reviews it are role operations
 * (`breakGlass`, `reviewBreakGlass`).
 */
export type BreakGlassReach = 'own_clinics' | 'all_clinics';

export interface PolicySet {
  readonly roles: ReadonlyMap<string, RolePolicy>;
  readonly breakGlass: { readonly reach: BreakGlassReach };
  readonly version: number;
}
