import path from 'node:path';
import type { AeadMode } from './crypto/aead.ts';
import { cidrProblem, type ForwardedHeader } from './http/client-address.ts';

/**
 * Configuration is read once, at start-up, from the environment, validated and frozen; it is
 * passed down explicitly, never read from a global. A wrong value stops start-up with an error
 * that names the variable (and never echoes a secret value back).
 */
export type Env = 'development' | 'production';

export interface Config {
  readonly env: Env;
  readonly host: string;
  readonly port: number;
  /** Balancers (CIDRs) whose forwarding header is believed for the audit's client address; none: the socket's. */
  readonly trustedProxies: readonly string[];
  /** The header those balancers write: X-Forwarded-For, or RFC 7239 Forwarded. */
  readonly forwardedHeader: ForwardedHeader;
  /** `null`: /metrics on the main port; else only on this port (of `metricsHost`), so it need not be public. */
  readonly metricsPort: number | null;
  readonly metricsHost: string;
  readonly dataDir: string;
  readonly policyFile: string;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'silent';
  /** One more full GC after a full GC that kept far more than the recent ones (src/floating-garbage.ts). */
  readonly gcRecheck: boolean;
  /** `null` for the zero-config embedded PostgreSQL under `dataDir`. */
  readonly database: { readonly appUrl: string; readonly migrateUrl: string | null } | null;
  /**
   * Where the connections used beside a request's transaction go (the audit writer, key loads,
   * search counts); `null`: DATABASE_URL. Behind PgBouncer it names a pool of its own, so that
   * requests holding every server connection cannot starve the audit commit they wait for.
   */
  readonly auxDatabaseUrl: string | null;
  readonly embeddedPgPort: number;
  readonly oidc: {
    /** `null`: the built-in development issuer served by this process (development only). */
    readonly issuer: string | null;
    readonly audience: string;
    readonly rolesClaim: string;
    readonly clinicsClaim: string;
    /** The console's client id at the issuer (a public client: authorization code with PKCE). */
    readonly consoleClientId: string;
    readonly mfaAcrValues: readonly string[];
    readonly algorithms: readonly string[];
    readonly clockToleranceSeconds: number;
    /** Longest access-token lifetime accepted (`exp - iat`, and `exp` from now). */
    readonly maxTokenLifetimeSeconds: number;
    /** Oldest sign-in (`auth_time`) accepted for ordinary reads. */
    readonly maxAuthAgeSeconds: number;
    /** Most clinics one token may name; each is checked against the database. */
    readonly maxTokenClinics: number;
  };
  readonly kms:
    | { readonly provider: 'local'; readonly masterKeyBase64: string | null }
    | { readonly provider: 'aws'; readonly keyId: string; readonly region: string; readonly endpoint: string | null };
  readonly redisUrl: string | null;
  /** Prefix of every Redis key the gateway writes (several deployments may share one Redis). */
  readonly redisKeyPrefix: string;
  /** Partner API keys: defaults of new keys' rate limits, and how long a replica remembers a key. */
  readonly apiKeys: { readonly ratePerMinute: number; readonly burst: number; readonly cacheSeconds: number };
  readonly maxPageSize: number;
  /** Searches by an identifier (patientBySsn, patientByMrn) per principal and minute, across replicas. */
  readonly searchesPerMinute: number;
  /** GraphQL abuse limits: anything over them is refused with QUERY_TOO_COMPLEX before database work. */
  readonly limits: {
    readonly maxDepth: number;
    readonly maxAliases: number;
    readonly maxDirectives: number;
    readonly maxTokens: number;
    readonly maxFields: number;
    /** Query cost, where a list field multiplies its selection by its `first`. */
    readonly maxCost: number;
    /** The default and largest `first` of Patient.encounters: a patient's encounters per request, bounded in SQL and priced by it. */
    readonly maxEncounters: number;
    /** 0: batching off; N: at most N operations per HTTP request. */
    readonly maxBatch: number;
    readonly maxBodyBytes: number;
  };
  /** Roles that may introspect the schema; `*` for everyone. */
  readonly introspectionRoles: readonly string[];
  /** GraphiQL in the browser (development only: it needs a development dependency). */
  readonly graphiql: boolean;
  /** When set, only operations of this allow-list (hash -> document) are executed. */
  readonly trustedDocumentsFile: string | null;
  readonly corsOrigins: readonly string[];
  readonly timeouts: {
    readonly requestMs: number;
    readonly statementMs: number;
    readonly idleInTransactionMs: number;
    readonly shutdownGraceMs: number;
    /** A client must have sent its request headers within this, and the whole request within `bodyMs`. */
    readonly headersMs: number;
    readonly bodyMs: number;
    /**
     * An idle keep-alive connection is closed after this. Above the idle timeout of any balancer in
     * front (AWS ALB 60 s), so that the balancer closes first and never reuses a connection at the
     * moment the gateway closes it (ECONNRESET, a 502 to its client).
     */
    readonly keepAliveMs: number;
  };
  /** Per principal, per replica: executions at once, waiting behind them, and a request rate. */
  readonly principals: {
    readonly concurrency: number;
    readonly queue: number;
    readonly ratePerSecond: number;
    readonly burst: number;
  };
  /** Refused requests: audited one by one up to a rate per client address, then counted; an alert past a burst. */
  readonly refusals: {
    readonly auditedPerSecond: number;
    readonly alertPerMinute: number;
  };
  readonly pool: { readonly size: number; readonly queueLimit: number };
  /**
   * The audit writer's own connections (one batch in flight on each), the requests that may wait
   * for a batch, and how long a batch may wait for the entries of reads still running
   * (src/audit/writer.ts, GatherOptions: a share of the last commit's time, at most gatherMaxMs).
   */
  readonly audit: { readonly connections: number; readonly queueLimit: number; readonly gatherPercent: number; readonly gatherMaxMs: number };
  /**
   * Bounds of the unwrapped-key cache (clinic data keys, patient keys, the blind-index root): a key
   * is dropped and zero-filled after maxAgeMs, after maxUses, or when maxEntries are cached. New
   * writes use a rotated clinic key on every replica within min(60 s, maxAgeMs).
   */
  readonly keyCache: { readonly maxAgeMs: number; readonly maxUses: number; readonly maxEntries: number };
  /** Named prepared statements; off only for a pooler that cannot keep them (PgBouncer < 1.21). */
  readonly preparedStatements: boolean;
  /** PHIGATE_AEAD: which AES-256-GCM implementation opens and seals fields (src/crypto/aead.ts). */
  readonly aead: AeadMode;
  /** CA bundle that verifies the database's certificate (sslmode=verify-full). */
  readonly databaseCaFile: string | null;
  /** OTLP/HTTP traces endpoint; no spans are exported when unset. */
  readonly otelExporterUrl: string | null;
  /** How long finished spans wait to be exported together. */
  readonly otelScheduleDelayMs: number;
  /** Emergency access (breakGlass): what it takes to open a grant and how long one lasts. */
  readonly breakGlass: BreakGlassSettings;
  /** Where alerts (break-glass grants, ...) are POSTed as JSON; they are logged either way. */
  readonly alertWebhookUrl: string | null;
  /** The alert sweep of the audit trail (src/audit/alert-sweep.ts). */
  readonly alertSweep: AlertSweepSettings;
  /** The audit log as evidence: sealing, signed checkpoints, the outside sink (docs/audit-log.md). */
  readonly auditLog: AuditLogSettings;
  /** Audit events older than this many days may be removed by `phigate audit retain` (HIPAA: six years). */
  readonly auditRetentionDays: number;
}

export interface AuditLogSettings {
  /** The checkpoints' origin line, also the signing key's name. */
  readonly origin: string;
  /** How often each gateway tries to seal, checkpoint and deliver to the sink. */
  readonly sealMs: number;
  /** Most events sealed in one transaction. */
  readonly sealBatch: number;
  readonly checkpointSeconds: number;
  readonly checkpointEvents: number;
  /** The checkpoint signing key: a 0600 Ed25519 PEM file (development) or a KMS key (PHIGATE_KMS=aws; required in production). */
  readonly signer: { readonly kind: 'file'; readonly file: string } | { readonly kind: 'kms'; readonly keyId: string };
  /** Directory of the JSON lines file sink; null: no file sink. */
  readonly sinkDir: string | null;
  readonly sinkMaxBytes: number;
  readonly sinkStdout: boolean;
}

/**
 * The alert sweep's thresholds. The sweep takes them from phigate.alert_settings, a row only the
 * database owner may change (schema/migrations/046_alert_thresholds_owned.sql), so that every
 * replica sweeps with the same rules and the app role's credential chooses none of them.
 */
export interface AlertThresholds {
  /** An actor reading more distinct patients than this in one clock minute. */
  readonly bulkPatientsPerMinute: number;
  /** An actor refused more fields than this in one clock minute. */
  readonly deniedFieldsPerMinute: number;
  /** Working hours, `HH:MM` local to `timeZone`; a read by a user outside [dayStart, dayEnd) alerts, once per local day. */
  readonly dayStart: string;
  readonly dayEnd: string;
  /** An IANA time zone (America/New_York). */
  readonly timeZone: string;
}

export interface AlertSweepSettings {
  /** How often each replica tries to sweep (one at a time sweeps; the others skip). */
  readonly sweepSeconds: number;
  /**
   * The thresholds the environment names (PHIGATE_ALERT_*), only those set. `phigate migrate`
   * writes them into phigate.alert_settings as the owner; a gateway only compares them with that
   * row at start-up (src/audit/alert-thresholds.ts), since the sweep takes nothing from it.
   */
  readonly thresholds: Partial<AlertThresholds>;
}

/** phigate.alert_settings as migration 046 creates it. */
export const ALERT_DEFAULTS: AlertThresholds = Object.freeze({
  bulkPatientsPerMinute: 50,
  deniedFieldsPerMinute: 20,
  dayStart: '06:00',
  dayEnd: '20:00',
  timeZone: 'UTC',
});

export const ALERT_SWEEP_SECONDS = 15;

/** The variable that names each threshold; working hours are one variable for both ends. */
export const ALERT_THRESHOLD_VARIABLES = Object.freeze({
  bulkPatientsPerMinute: 'PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE',
  deniedFieldsPerMinute: 'PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE',
  workingHours: 'PHIGATE_ALERT_WORKING_HOURS',
  timeZone: 'PHIGATE_ALERT_TIME_ZONE',
});

/**
 * The thresholds' ranges. phigate.alert_settings refuses what falls outside them, and working hours
 * and time zones that workingHours() and timeZone() below refuse
 * (schema/migrations/046_alert_thresholds_owned.sql, as 042's sweep with arguments did). A change
 * here needs a migration there: test/integration/audit/alert-thresholds.test.ts fails until both
 * sides agree.
 */
export const ALERT_BOUNDS = Object.freeze({
  bulkPatientsPerMinute: Object.freeze({ min: 1, max: 1_000_000 }),
  deniedFieldsPerMinute: Object.freeze({ min: 1, max: 1_000_000 }),
});

export interface BreakGlassSettings {
  readonly grantMinutes: number;
  /** How recent the multi-factor sign-in must be. */
  readonly maxAuthAgeSeconds: number;
  readonly minReasonLength: number;
  /** Grants one user may open in any 24 hours. */
  readonly dailyLimit: number;
  /** A grant unreviewed for longer is reported as overdue in /metrics. */
  readonly reviewAfterHours: number;
}

export const BREAK_GLASS_DEFAULTS: BreakGlassSettings = Object.freeze({
  grantMinutes: 60,
  maxAuthAgeSeconds: 600,
  minReasonLength: 20,
  dailyLimit: 3,
  reviewAfterHours: 72,
});

export class ConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Source = Readonly<Record<string, string | undefined>>;

const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

function text(src: Source, name: string): string | null {
  const v = src[name];
  if (v === undefined) return null;
  const t = v.trim();
  if (t === '') throw new ConfigError(name, 'is set but empty');
  return t;
}

function oneOf<T extends string>(src: Source, name: string, allowed: readonly T[], fallback: T): T {
  const v = text(src, name) ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(name, `must be one of ${allowed.join(', ')}`);
  return v as T;
}

function int(src: Source, name: string, fallback: number, min: number, max: number): number {
  const v = text(src, name);
  if (v === null) return fallback;
  if (!/^\d+$/.test(v)) throw new ConfigError(name, 'must be a whole number');
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}`);
  return n;
}

function list(src: Source, name: string, fallback: readonly string[]): string[] {
  const v = text(src, name);
  if (v === null) return [...fallback];
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

/**
 * `credentials: false` for what the gateway requests over HTTP (src/net/outbound-request.ts refuses
 * a URL with user:password@): caught at start-up, naming the variable, instead of at the first request.
 */
function url(src: Source, name: string, protocols: readonly string[], { credentials = true } = {}): string | null {
  const v = text(src, name);
  if (v === null) return null;
  let parsed: URL;
  try {
    parsed = new URL(v);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (!protocols.includes(parsed.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}`);
  if (!credentials && (parsed.username !== '' || parsed.password !== '')) throw new ConfigError(name, 'must not carry credentials (user:password@)');
  return v;
}

/**
 * OpenTelemetry's own variables follow its specification, where an empty value means unset: an
 * operator (or compose's `${VAR:-}`) may pass one through empty.
 */
function workingHours(src: Source, name: string, fallback: string): [string, string] {
  // phigate.alert_settings refuses the times this refuses (schema/migrations/046_alert_thresholds_owned.sql).
  const v = text(src, name) ?? fallback;
  const m = /^([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):[0-5]\d|24:00)$/.exec(v);
  if (!m) throw new ConfigError(name, 'must be two times as HH:MM-HH:MM (e.g. 06:00-20:00; 22:00-06:00 spans midnight)');
  const [start, end] = v.split('-') as [string, string];
  if (start === end) throw new ConfigError(name, 'must name two different times (00:00-24:00: all day)');
  return [start, end];
}

function timeZone(src: Source, name: string, fallback: string): string {
  // phigate.alert_settings takes only the zones of pg_timezone_names, in any case, as Intl does (046).
  const v = text(src, name) ?? fallback;
  try {
    new Intl.DateTimeFormat('en', { timeZone: v });
  } catch {
    throw new ConfigError(name, 'must be an IANA time zone (e.g. America/New_York, UTC)');
  }
  return v;
}

function otelVariable(src: Source, name: string): Source {
  return src[name]?.trim() === '' ? { ...src, [name]: undefined } : src;
}

function requireTls(name: string, dbUrl: string): void {
  const mode = new URL(dbUrl).searchParams.get('sslmode');
  if (mode !== 'verify-full' && mode !== 'verify-ca') {
    throw new ConfigError(name, 'production requires sslmode=verify-full (or verify-ca) on the database connection');
  }
}

export function loadConfig(src: Source = process.env, cwd: string = process.cwd()): Config {
  const env = oneOf(src, 'PHIGATE_ENV', ['development', 'production'] as const, 'development');
  const production = env === 'production';
  const dataDir = path.resolve(cwd, text(src, 'PHIGATE_DATA_DIR') ?? '.phigate');

  const appUrl = url(src, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const migrateUrl = url(src, 'PHIGATE_MIGRATE_URL', ['postgres:', 'postgresql:']);
  if (appUrl === null && migrateUrl !== null) throw new ConfigError('DATABASE_URL', 'must be set when PHIGATE_MIGRATE_URL is');
  if (production) {
    if (appUrl === null) throw new ConfigError('DATABASE_URL', 'is required in production (the embedded database is for development)');
    requireTls('DATABASE_URL', appUrl);
  }

  const auxDatabaseUrl = url(src, 'PHIGATE_AUX_DATABASE_URL', ['postgres:', 'postgresql:']);
  if (auxDatabaseUrl !== null && appUrl === null) throw new ConfigError('DATABASE_URL', 'must be set when PHIGATE_AUX_DATABASE_URL is');
  if (production && auxDatabaseUrl !== null) requireTls('PHIGATE_AUX_DATABASE_URL', auxDatabaseUrl);

  const issuer = url(src, 'PHIGATE_OIDC_ISSUER', production ? ['https:'] : ['https:', 'http:'], { credentials: false });
  if (production && issuer === null) throw new ConfigError('PHIGATE_OIDC_ISSUER', 'is required in production (the development issuer is refused)');

  const algorithms = list(src, 'PHIGATE_OIDC_ALGORITHMS', ['RS256', 'PS256', 'ES256', 'EdDSA']);
  for (const a of algorithms) {
    if (!ASYMMETRIC_ALGS.includes(a)) throw new ConfigError('PHIGATE_OIDC_ALGORITHMS', `only asymmetric algorithms are allowed (${ASYMMETRIC_ALGS.join(', ')})`);
  }
  if (algorithms.length === 0) throw new ConfigError('PHIGATE_OIDC_ALGORITHMS', 'must name at least one algorithm');

  const provider = oneOf(src, 'PHIGATE_KMS', ['local', 'aws'] as const, 'local');
  let kms: Config['kms'];
  if (provider === 'aws') {
    const keyId = text(src, 'PHIGATE_KMS_KEY_ID');
    if (keyId === null) throw new ConfigError('PHIGATE_KMS_KEY_ID', 'is required when PHIGATE_KMS=aws');
    const region = text(src, 'AWS_REGION');
    if (region === null) throw new ConfigError('AWS_REGION', 'is required when PHIGATE_KMS=aws');
    kms = { provider, keyId, region, endpoint: url(src, 'PHIGATE_KMS_ENDPOINT', ['https:', 'http:']) };
  } else {
    if (production) throw new ConfigError('PHIGATE_KMS', 'production refuses the local key provider; use aws');
    const masterKeyBase64 = text(src, 'PHIGATE_LOCAL_MASTER_KEY');
    if (masterKeyBase64 !== null && Buffer.from(masterKeyBase64, 'base64').length !== 32) {
      throw new ConfigError('PHIGATE_LOCAL_MASTER_KEY', 'must be 32 bytes, base64-encoded');
    }
    kms = { provider, masterKeyBase64 };
  }

  const config: Config = {
    env,
    host: text(src, 'PHIGATE_HOST') ?? '127.0.0.1',
    port: int(src, 'PHIGATE_PORT', 4000, 0, 65535),
    trustedProxies: list(src, 'PHIGATE_TRUSTED_PROXIES', []).map((cidr) => {
      const problem = cidrProblem(cidr);
      if (problem !== null) throw new ConfigError('PHIGATE_TRUSTED_PROXIES', `${problem} (expected comma-separated CIDRs such as 10.0.0.0/8, fd00::/8)`);
      return cidr;
    }),
    forwardedHeader: oneOf(src, 'PHIGATE_FORWARDED_HEADER', ['x-forwarded-for', 'forwarded'] as const, 'x-forwarded-for'),
    metricsPort: text(src, 'PHIGATE_METRICS_PORT') === null ? null : int(src, 'PHIGATE_METRICS_PORT', 0, 0, 65535),
    metricsHost: text(src, 'PHIGATE_METRICS_HOST') ?? text(src, 'PHIGATE_HOST') ?? '127.0.0.1',
    dataDir,
    policyFile: path.resolve(cwd, text(src, 'PHIGATE_POLICY_FILE') ?? 'policies/default.yaml'),
    logLevel: oneOf(src, 'PHIGATE_LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'silent'] as const, 'info'),
    gcRecheck: oneOf(src, 'PHIGATE_GC_RECHECK', ['on', 'off'] as const, 'on') === 'on',
    database: appUrl === null ? null : { appUrl, migrateUrl },
    auxDatabaseUrl,
    embeddedPgPort: int(src, 'PHIGATE_EMBEDDED_PG_PORT', 54329, 1024, 65535),
    oidc: {
      issuer,
      audience: text(src, 'PHIGATE_OIDC_AUDIENCE') ?? 'phigate',
      rolesClaim: text(src, 'PHIGATE_OIDC_ROLES_CLAIM') ?? 'roles',
      clinicsClaim: text(src, 'PHIGATE_OIDC_CLINICS_CLAIM') ?? 'clinics',
      consoleClientId: text(src, 'PHIGATE_CONSOLE_CLIENT_ID') ?? 'phigate-console',
      mfaAcrValues: list(src, 'PHIGATE_OIDC_MFA_ACR', []),
      algorithms,
      clockToleranceSeconds: int(src, 'PHIGATE_OIDC_CLOCK_SKEW_SECONDS', 30, 0, 300),
      maxTokenLifetimeSeconds: int(src, 'PHIGATE_OIDC_MAX_TOKEN_LIFETIME_SECONDS', 86_400, 60, 604_800),
      maxAuthAgeSeconds: int(src, 'PHIGATE_OIDC_MAX_AUTH_AGE_SECONDS', 43_200, 60, 2_592_000),
      maxTokenClinics: int(src, 'PHIGATE_MAX_TOKEN_CLINICS', 50, 1, 1000),
    },
    kms,
    redisUrl: url(src, 'REDIS_URL', ['redis:', 'rediss:']),
    redisKeyPrefix: (() => {
      const p = text(src, 'PHIGATE_REDIS_KEY_PREFIX') ?? 'phigate:';
      if (!/^[A-Za-z0-9:_.-]{1,64}$/.test(p)) throw new ConfigError('PHIGATE_REDIS_KEY_PREFIX', 'must be 1 to 64 letters, digits or : _ . -');
      return p;
    })(),
    apiKeys: {
      ratePerMinute: int(src, 'PHIGATE_API_KEY_RATE_PER_MINUTE', 600, 1, 1_000_000),
      burst: int(src, 'PHIGATE_API_KEY_BURST', 60, 1, 1_000_000),
      cacheSeconds: int(src, 'PHIGATE_API_KEY_CACHE_SECONDS', 5, 0, 60),
    },
    maxPageSize: int(src, 'PHIGATE_MAX_PAGE_SIZE', 100, 1, 1000),
    searchesPerMinute: int(src, 'PHIGATE_SEARCHES_PER_MINUTE', 30, 1, 100_000),
    limits: {
      maxDepth: int(src, 'PHIGATE_MAX_DEPTH', 8, 2, 64),
      maxAliases: int(src, 'PHIGATE_MAX_ALIASES', 15, 0, 1000),
      maxDirectives: int(src, 'PHIGATE_MAX_DIRECTIVES', 10, 0, 1000),
      maxTokens: int(src, 'PHIGATE_MAX_TOKENS', 2000, 50, 100_000),
      maxFields: int(src, 'PHIGATE_MAX_FIELDS', 300, 10, 100_000),
      maxCost: int(src, 'PHIGATE_MAX_COST', 20_000, 10, 10_000_000),
      maxEncounters: int(src, 'PHIGATE_MAX_ENCOUNTERS', 10, 1, 1000),
      maxBatch: int(src, 'PHIGATE_MAX_BATCH', 0, 0, 50),
      maxBodyBytes: int(src, 'PHIGATE_MAX_BODY_BYTES', 100_000, 1_000, 10_000_000),
    },
    introspectionRoles: list(src, 'PHIGATE_INTROSPECTION_ROLES', production ? [] : ['*']),
    graphiql: graphiql(src, production),
    trustedDocumentsFile: (() => {
      const f = text(src, 'PHIGATE_TRUSTED_DOCUMENTS_FILE');
      return f === null ? null : path.resolve(cwd, f);
    })(),
    corsOrigins: list(src, 'PHIGATE_CORS_ORIGINS', []),
    timeouts: {
      requestMs: int(src, 'PHIGATE_REQUEST_TIMEOUT_MS', 15_000, 100, 300_000),
      statementMs: int(src, 'PHIGATE_STATEMENT_TIMEOUT_MS', 5_000, 100, 300_000),
      idleInTransactionMs: int(src, 'PHIGATE_IDLE_TX_TIMEOUT_MS', 10_000, 100, 300_000),
      shutdownGraceMs: int(src, 'PHIGATE_SHUTDOWN_GRACE_MS', 10_000, 0, 300_000),
      headersMs: int(src, 'PHIGATE_HEADERS_TIMEOUT_MS', 10_000, 100, 300_000),
      bodyMs: int(src, 'PHIGATE_BODY_TIMEOUT_MS', 30_000, 100, 300_000),
      keepAliveMs: int(src, 'PHIGATE_KEEP_ALIVE_TIMEOUT_MS', 65_000, 1_000, 600_000),
    },
    principals: {
      concurrency: int(src, 'PHIGATE_PRINCIPAL_CONCURRENCY', 4, 1, 500),
      queue: int(src, 'PHIGATE_PRINCIPAL_QUEUE', 32, 0, 10_000),
      ratePerSecond: int(src, 'PHIGATE_PRINCIPAL_RATE', 20, 1, 100_000),
      burst: int(src, 'PHIGATE_PRINCIPAL_BURST', 40, 1, 100_000),
    },
    refusals: {
      auditedPerSecond: int(src, 'PHIGATE_REFUSALS_AUDITED_PER_SECOND', 10, 1, 10_000),
      alertPerMinute: int(src, 'PHIGATE_REFUSAL_ALERT_PER_MINUTE', 60, 1, 1_000_000),
    },
    pool: {
      size: int(src, 'PHIGATE_POOL_SIZE', 10, 1, 500),
      queueLimit: int(src, 'PHIGATE_POOL_QUEUE_LIMIT', 100, 0, 100_000),
    },
    audit: {
      connections: int(src, 'PHIGATE_AUDIT_CONNECTIONS', 2, 1, 16),
      queueLimit: int(src, 'PHIGATE_AUDIT_QUEUE_LIMIT', 1_000, 1, 100_000),
      gatherPercent: int(src, 'PHIGATE_AUDIT_GATHER_PERCENT', 50, 0, 100),
      gatherMaxMs: int(src, 'PHIGATE_AUDIT_GATHER_MAX_MS', 5, 1, 1_000),
    },
    keyCache: {
      maxAgeMs: int(src, 'PHIGATE_KEY_CACHE_MAX_AGE_SECONDS', 300, 1, 86_400) * 1000,
      maxUses: int(src, 'PHIGATE_KEY_CACHE_MAX_USES', 1_000_000, 1, 4_294_967_295),
      maxEntries: int(src, 'PHIGATE_KEY_CACHE_MAX_ENTRIES', 20_000, 1, 1_000_000),
    },
    preparedStatements: oneOf(src, 'PHIGATE_PREPARED_STATEMENTS', ['on', 'off'] as const, 'on') === 'on',
    aead: oneOf<AeadMode>(src, 'PHIGATE_AEAD', ['auto', 'native', 'node'], 'auto'),
    databaseCaFile: (() => {
      const f = text(src, 'PHIGATE_DATABASE_CA_FILE');
      return f === null ? null : path.resolve(cwd, f);
    })(),
    otelExporterUrl: url(otelVariable(src, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'), 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', ['http:', 'https:']),
    // The specification's variable and default; the SDK no longer reads it itself.
    otelScheduleDelayMs: int(otelVariable(src, 'OTEL_BSP_SCHEDULE_DELAY'), 'OTEL_BSP_SCHEDULE_DELAY', 5_000, 1, 300_000),
    breakGlass: {
      grantMinutes: int(src, 'PHIGATE_BREAK_GLASS_MINUTES', BREAK_GLASS_DEFAULTS.grantMinutes, 1, 1440),
      maxAuthAgeSeconds: int(src, 'PHIGATE_BREAK_GLASS_MAX_AUTH_AGE_SECONDS', BREAK_GLASS_DEFAULTS.maxAuthAgeSeconds, 30, 86_400),
      minReasonLength: int(src, 'PHIGATE_BREAK_GLASS_MIN_REASON_LENGTH', BREAK_GLASS_DEFAULTS.minReasonLength, 1, 500),
      dailyLimit: int(src, 'PHIGATE_BREAK_GLASS_DAILY_LIMIT', BREAK_GLASS_DEFAULTS.dailyLimit, 1, 100),
      reviewAfterHours: int(src, 'PHIGATE_BREAK_GLASS_REVIEW_HOURS', BREAK_GLASS_DEFAULTS.reviewAfterHours, 1, 8_760),
    },
    alertWebhookUrl: url(src, 'PHIGATE_ALERT_WEBHOOK_URL', production ? ['https:'] : ['https:', 'http:'], { credentials: false }),
    alertSweep: alertSweepSettings(src),
    auditLog: auditLogSettings(src, cwd, dataDir, provider, production),
    auditRetentionDays: int(src, 'PHIGATE_AUDIT_RETENTION_DAYS', 2192, 1, 36_525),
  };
  // The console's ID tokens carry its client id as `aud`: were it also the API's audience, any ID
  // token the issuer gave the console would pass as an access token.
  if (config.oidc.audience === config.oidc.consoleClientId) {
    throw new ConfigError('PHIGATE_OIDC_AUDIENCE', "must differ from PHIGATE_CONSOLE_CLIENT_ID: the console's ID tokens name its client id as their audience, and would pass as access tokens");
  }
  if (config.timeouts.headersMs > config.timeouts.bodyMs) throw new ConfigError('PHIGATE_HEADERS_TIMEOUT_MS', 'must not exceed PHIGATE_BODY_TIMEOUT_MS');
  if (config.principals.concurrency >= config.pool.size && config.pool.size > 1) {
    throw new ConfigError('PHIGATE_PRINCIPAL_CONCURRENCY', 'must be below PHIGATE_POOL_SIZE, or one principal could take every connection');
  }
  for (const o of config.corsOrigins) {
    if (o !== '*' && !/^https?:\/\/[^/\s]+$/.test(o)) throw new ConfigError('PHIGATE_CORS_ORIGINS', 'must list origins like https://app.example.org (scheme and host, no path)');
  }
  if (production && config.corsOrigins.includes('*')) throw new ConfigError('PHIGATE_CORS_ORIGINS', 'production refuses * for a PHI API');
  return deepFreeze(config);
}

/**
 * On by default in development; `off` lets a development gateway run from the image, which has no
 * development dependencies (docker-compose.yml). Production never serves it.
 */
function graphiql(src: Source, production: boolean): boolean {
  const on = oneOf(src, 'PHIGATE_GRAPHIQL', ['on', 'off'] as const, production ? 'off' : 'on') === 'on';
  if (production && on) throw new ConfigError('PHIGATE_GRAPHIQL', 'production never serves GraphiQL');
  return on;
}

/**
 * The thresholds `src` names, checked as the gateway's settings are, each refusal naming its
 * variable; the ones not set are left out. `phigate alerts thresholds` checks its options here too.
 */
export function alertThresholdsOf(src: Source): Partial<AlertThresholds> {
  const v = ALERT_THRESHOLD_VARIABLES;
  const { bulkPatientsPerMinute: bulk, deniedFieldsPerMinute: denied } = ALERT_BOUNDS;
  const set = (name: string) => src[name] !== undefined;
  const hours = set(v.workingHours) ? workingHours(src, v.workingHours, '') : null;
  return {
    ...(set(v.bulkPatientsPerMinute) && { bulkPatientsPerMinute: int(src, v.bulkPatientsPerMinute, 0, bulk.min, bulk.max) }),
    ...(set(v.deniedFieldsPerMinute) && { deniedFieldsPerMinute: int(src, v.deniedFieldsPerMinute, 0, denied.min, denied.max) }),
    ...(hours && { dayStart: hours[0], dayEnd: hours[1] }),
    ...(set(v.timeZone) && { timeZone: timeZone(src, v.timeZone, '') }),
  };
}

function alertSweepSettings(src: Source): AlertSweepSettings {
  return {
    sweepSeconds: int(src, 'PHIGATE_ALERT_SWEEP_SECONDS', ALERT_SWEEP_SECONDS, 1, 3600),
    thresholds: alertThresholdsOf(src),
  };
}

function auditLogSettings(src: Source, cwd: string, dataDir: string, kms: 'local' | 'aws', production: boolean): AuditLogSettings {
  const origin = text(src, 'PHIGATE_AUDIT_LOG_ORIGIN') ?? 'phigate.local/audit';
  // The origin is also the signed note's key name: printable ASCII, no space, no '+'.
  if (!/^[\x21-\x2a\x2c-\x7e]{1,128}$/.test(origin)) {
    throw new ConfigError('PHIGATE_AUDIT_LOG_ORIGIN', "must be 1 to 128 printable ASCII characters without spaces or '+' (e.g. example.org/phigate/audit)");
  }
  const keyFile = text(src, 'PHIGATE_AUDIT_SIGNING_KEY_FILE');
  const kmsKeyId = text(src, 'PHIGATE_AUDIT_SIGNING_KMS_KEY_ID');
  // Either way the key is outside the database. Production signs in the KMS only: a key file on
  // the gateway's disk is a copy of the signing key that anyone holding the host could take.
  // Development (with either key provider) keeps the file default.
  if (production && kms === 'aws' && kmsKeyId === null) {
    throw new ConfigError('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID', 'is required in production with PHIGATE_KMS=aws: the id or ARN of a KMS key with key spec ECC_NIST_EDWARDS25519 and key usage SIGN_VERIFY that signs the audit checkpoints');
  }
  let signer: AuditLogSettings['signer'];
  if (kmsKeyId !== null) {
    if (kms !== 'aws') throw new ConfigError('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID', 'is only used with PHIGATE_KMS=aws');
    if (keyFile !== null) throw new ConfigError('PHIGATE_AUDIT_SIGNING_KEY_FILE', 'cannot be set together with PHIGATE_AUDIT_SIGNING_KMS_KEY_ID');
    signer = { kind: 'kms', keyId: kmsKeyId };
  } else {
    signer = { kind: 'file', file: path.resolve(cwd, keyFile ?? path.join(dataDir, 'audit-signing-key.pem')) };
  }
  const sinkDir = auditSinkDir(src, cwd);
  return {
    origin,
    sealMs: int(src, 'PHIGATE_AUDIT_SEAL_MS', 1_000, 10, 3_600_000),
    sealBatch: int(src, 'PHIGATE_AUDIT_SEAL_BATCH', 10_000, 1, 1_000_000),
    checkpointSeconds: int(src, 'PHIGATE_AUDIT_CHECKPOINT_SECONDS', 10, 1, 86_400),
    checkpointEvents: int(src, 'PHIGATE_AUDIT_CHECKPOINT_EVENTS', 10_000, 1, 100_000_000),
    signer,
    sinkDir,
    sinkMaxBytes: int(src, 'PHIGATE_AUDIT_SINK_MAX_BYTES', 64 * 1024 * 1024, 4096, 2 ** 40),
    sinkStdout: oneOf(src, 'PHIGATE_AUDIT_SINK_STDOUT', ['on', 'off'] as const, 'off') === 'on',
  };
}

// The deliverer reports the sink's position in a row named 'file:<absolute directory>', which
// migration 037 limits to 4,101 characters without control characters: a directory it refuses
// would fail every delivery round, so it stops start-up instead.
const MAX_SINK_DIR_CHARS = 4096;
function auditSinkDir(src: Source, cwd: string): string | null {
  const dir = text(src, 'PHIGATE_AUDIT_SINK_DIR');
  if (dir === null) return null;
  return checkSinkDir(path.resolve(cwd, dir), false);
}

/**
 * The same limits for the directory the sink's path resolves to once its links are followed
 * (src/audit/sink/file.ts), which names the row; the message says which spelling broke them.
 */
export function checkSinkDir(dir: string, linksResolved: boolean): string {
  const as = linksResolved ? 'once its links are resolved' : 'as an absolute path';
  if (/[\p{Cc}\u2028\u2029]/u.test(dir)) throw new ConfigError('PHIGATE_AUDIT_SINK_DIR', `must not contain control characters${linksResolved ? ` ${as}` : ''}`);
  if (dir.length > MAX_SINK_DIR_CHARS) throw new ConfigError('PHIGATE_AUDIT_SINK_DIR', `must be at most ${MAX_SINK_DIR_CHARS} characters ${as}`);
  return dir;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
