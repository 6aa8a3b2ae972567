import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

const prodBase = {
  PHIGATE_ENV: 'production',
  DATABASE_URL: 'postgres://gw:pw@db.internal:5432/phigate?sslmode=verify-full',
  PHIGATE_OIDC_ISSUER: 'https://idp.example.org/realms/phigate',
  PHIGATE_KMS: 'aws',
  PHIGATE_KMS_KEY_ID: 'alias/phigate',
  AWS_REGION: 'eu-west-1',
  PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'alias/phigate-audit',
};

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env, '/srv');
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('gives the zero-config development defaults', () => {
    const c = loadConfig({}, '/srv');
    expect(c.env).toBe('development');
    expect(c.database).toBeNull();
    expect(c.oidc.issuer).toBeNull();
    expect(c.kms.provider).toBe('local');
    expect([c.host, c.port, c.dataDir, c.oidc.audience]).toEqual(['127.0.0.1', 4000, '/srv/.phigate', 'phigate']);
    // Above AWS ALB's 60 s idle timeout: the balancer, not the gateway, closes an idle connection.
    expect(c.timeouts.keepAliveMs).toBeGreaterThan(60_000);
    expect(loadConfig({ PHIGATE_KEEP_ALIVE_TIMEOUT_MS: '120000' }, '/srv').timeouts.keepAliveMs).toBe(120_000);
  });

  it('is frozen all the way down', () => {
    const c = loadConfig({}, '/srv');
    expect(Object.isFrozen(c) && Object.isFrozen(c.oidc) && Object.isFrozen(c.oidc.algorithms)).toBe(true);
    expect(() => ((c as { port: number }).port = 1)).toThrow();
  });

  it('accepts a complete production configuration', () => {
    const c = loadConfig(prodBase, '/srv');
    expect(c.env).toBe('production');
    expect(c.kms).toEqual({ provider: 'aws', keyId: 'alias/phigate', region: 'eu-west-1', endpoint: null });
    expect(c.auditLog.signer).toEqual({ kind: 'kms', keyId: 'alias/phigate-audit' });
  });

  it.each([
    [{ PHIGATE_PORT: 'http' }, 'PHIGATE_PORT'],
    [{ PHIGATE_PORT: '70000' }, 'PHIGATE_PORT'],
    [{ PHIGATE_ENV: 'staging' }, 'PHIGATE_ENV'],
    [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'mysql://x@y/z' }, 'DATABASE_URL'],
    [{ PHIGATE_MIGRATE_URL: 'postgres://m@h/d' }, 'DATABASE_URL'],
    [{ PHIGATE_KMS: 'vault' }, 'PHIGATE_KMS'],
    [{ PHIGATE_KMS: 'aws', AWS_REGION: 'eu-west-1' }, 'PHIGATE_KMS_KEY_ID'],
    [{ PHIGATE_KMS: 'aws', PHIGATE_KMS_KEY_ID: 'k' }, 'AWS_REGION'],
    [{ PHIGATE_LOCAL_MASTER_KEY: Buffer.alloc(16).toString('base64') }, 'PHIGATE_LOCAL_MASTER_KEY'],
    [{ PHIGATE_OIDC_ALGORITHMS: 'RS256,HS256' }, 'PHIGATE_OIDC_ALGORITHMS'],
    [{ PHIGATE_OIDC_ALGORITHMS: 'none' }, 'PHIGATE_OIDC_ALGORITHMS'],
    [{ PHIGATE_OIDC_CLOCK_SKEW_SECONDS: '3600' }, 'PHIGATE_OIDC_CLOCK_SKEW_SECONDS'],
    [{ PHIGATE_OIDC_AUDIENCE: '  ' }, 'PHIGATE_OIDC_AUDIENCE'],
    [{ PHIGATE_OIDC_AUDIENCE: 'phigate-console' }, 'PHIGATE_OIDC_AUDIENCE'],
    [{ PHIGATE_CONSOLE_CLIENT_ID: 'phigate' }, 'PHIGATE_OIDC_AUDIENCE'],
    [{ PHIGATE_OIDC_AUDIENCE: 'gateway', PHIGATE_CONSOLE_CLIENT_ID: 'gateway' }, 'PHIGATE_OIDC_AUDIENCE'],
    [{ REDIS_URL: 'http://cache' }, 'REDIS_URL'],
    [{ PHIGATE_LOG_LEVEL: 'verbose' }, 'PHIGATE_LOG_LEVEL'],
    [{ PHIGATE_GC_RECHECK: 'true' }, 'PHIGATE_GC_RECHECK'],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'collector:4318' }, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://collector:4317' }, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'],
    [{ OTEL_BSP_SCHEDULE_DELAY: '5s' }, 'OTEL_BSP_SCHEDULE_DELAY'],
    [{ OTEL_BSP_SCHEDULE_DELAY: '0' }, 'OTEL_BSP_SCHEDULE_DELAY'],
    [{ PHIGATE_PREPARED_STATEMENTS: 'yes' }, 'PHIGATE_PREPARED_STATEMENTS'],
    [{ PHIGATE_AEAD: 'openssl' }, 'PHIGATE_AEAD'],
    [{ PHIGATE_AUDIT_SINK_DIR: '/var/audit\nsink' }, 'PHIGATE_AUDIT_SINK_DIR'],
    [{ PHIGATE_AUDIT_SINK_DIR: '/var/\u001b[2Jaudit' }, 'PHIGATE_AUDIT_SINK_DIR'],
    [{ PHIGATE_AUDIT_SINK_DIR: `/${'a'.repeat(4096)}` }, 'PHIGATE_AUDIT_SINK_DIR'],
    [{ PHIGATE_OIDC_MAX_TOKEN_LIFETIME_SECONDS: '31536000' }, 'PHIGATE_OIDC_MAX_TOKEN_LIFETIME_SECONDS'],
    [{ PHIGATE_OIDC_MAX_AUTH_AGE_SECONDS: '12h' }, 'PHIGATE_OIDC_MAX_AUTH_AGE_SECONDS'],
    [{ PHIGATE_MAX_TOKEN_CLINICS: '0' }, 'PHIGATE_MAX_TOKEN_CLINICS'],
    [{ PHIGATE_HEADERS_TIMEOUT_MS: '40000' }, 'PHIGATE_HEADERS_TIMEOUT_MS'],
    [{ PHIGATE_BODY_TIMEOUT_MS: '50' }, 'PHIGATE_BODY_TIMEOUT_MS'],
    [{ PHIGATE_KEEP_ALIVE_TIMEOUT_MS: '65s' }, 'PHIGATE_KEEP_ALIVE_TIMEOUT_MS'],
    [{ PHIGATE_KEEP_ALIVE_TIMEOUT_MS: '0' }, 'PHIGATE_KEEP_ALIVE_TIMEOUT_MS'],
    [{ PHIGATE_PRINCIPAL_CONCURRENCY: '10' }, 'PHIGATE_PRINCIPAL_CONCURRENCY'],
    [{ PHIGATE_PRINCIPAL_RATE: '0' }, 'PHIGATE_PRINCIPAL_RATE'],
    [{ PHIGATE_PRINCIPAL_BURST: '-1' }, 'PHIGATE_PRINCIPAL_BURST'],
    [{ PHIGATE_PRINCIPAL_QUEUE: 'many' }, 'PHIGATE_PRINCIPAL_QUEUE'],
    [{ PHIGATE_REFUSALS_AUDITED_PER_SECOND: '0' }, 'PHIGATE_REFUSALS_AUDITED_PER_SECOND'],
    [{ PHIGATE_REFUSAL_ALERT_PER_MINUTE: '' }, 'PHIGATE_REFUSAL_ALERT_PER_MINUTE'],
    [{ PHIGATE_SEARCHES_PER_MINUTE: '0' }, 'PHIGATE_SEARCHES_PER_MINUTE'],
    [{ PHIGATE_SEARCHES_PER_MINUTE: 'unlimited' }, 'PHIGATE_SEARCHES_PER_MINUTE'],
    [{ PHIGATE_REDIS_KEY_PREFIX: 'phi gate' }, 'PHIGATE_REDIS_KEY_PREFIX'],
    [{ PHIGATE_API_KEY_RATE_PER_MINUTE: '0' }, 'PHIGATE_API_KEY_RATE_PER_MINUTE'],
    [{ PHIGATE_API_KEY_BURST: 'many' }, 'PHIGATE_API_KEY_BURST'],
    [{ PHIGATE_API_KEY_CACHE_SECONDS: '61' }, 'PHIGATE_API_KEY_CACHE_SECONDS'],
    [{ PHIGATE_GRAPHIQL: 'yes' }, 'PHIGATE_GRAPHIQL'],
    [{ PHIGATE_ALERT_WEBHOOK_URL: 'https://user:secret@hooks.example.org/alerts' }, 'PHIGATE_ALERT_WEBHOOK_URL'],
    [{ PHIGATE_OIDC_ISSUER: 'https://user:secret@idp.example.org/realms/phigate' }, 'PHIGATE_OIDC_ISSUER'],
  ])('refuses %j naming %s', (env, variable) => {
    const e = refusal(env as Record<string, string>);
    expect(e.variable).toBe(variable);
    expect(e.message.startsWith(`${variable}: `)).toBe(true);
  });

  it.each([
    [{ DATABASE_URL: undefined }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://gw:pw@db/phigate' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://gw:pw@db/phigate?sslmode=require' }, 'DATABASE_URL'],
    [{ PHIGATE_OIDC_ISSUER: undefined }, 'PHIGATE_OIDC_ISSUER'],
    [{ PHIGATE_OIDC_ISSUER: 'http://idp.example.org' }, 'PHIGATE_OIDC_ISSUER'],
    [{ PHIGATE_KMS: 'local' }, 'PHIGATE_KMS'],
    [{ PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: undefined }, 'PHIGATE_AUDIT_SIGNING_KMS_KEY_ID'],
    [{ PHIGATE_GRAPHIQL: 'on' }, 'PHIGATE_GRAPHIQL'],
  ])('production refuses %j (naming %s)', (over, variable) => {
    const env = { ...prodBase, ...over } as Record<string, string | undefined>;
    for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
    expect(refusal(env as Record<string, string>).variable).toBe(variable);
  });

  it('serves GraphiQL in development unless told not to, and never in production', () => {
    expect(loadConfig({}, '/srv').graphiql).toBe(true);
    expect(loadConfig({ PHIGATE_GRAPHIQL: 'off' }, '/srv').graphiql).toBe(false);
    expect(loadConfig(prodBase, '/srv').graphiql).toBe(false);
    expect(loadConfig({ ...prodBase, PHIGATE_GRAPHIQL: 'off' }, '/srv').graphiql).toBe(false);
  });

  it('collects one cycle\'s floating garbage again unless told not to', () => {
    expect(loadConfig({}, '/srv').gcRecheck).toBe(true);
    expect(loadConfig({ PHIGATE_GC_RECHECK: 'off' }, '/srv').gcRecheck).toBe(false);
  });

  it('allows 30 searches by identifier a minute unless told otherwise', () => {
    expect(loadConfig({}, '/srv').searchesPerMinute).toBe(30);
    expect(loadConfig({ PHIGATE_SEARCHES_PER_MINUTE: '120' }, '/srv').searchesPerMinute).toBe(120);
  });

  it('gives partner keys a rate limit and a short key cache by default', () => {
    expect(loadConfig({}).apiKeys).toEqual({ ratePerMinute: 600, burst: 60, cacheSeconds: 5 });
    expect(loadConfig({}).redisKeyPrefix).toBe('phigate:');
    expect(loadConfig({ PHIGATE_API_KEY_CACHE_SECONDS: '0' }).apiKeys.cacheSeconds).toBe(0);
  });

  it('prepares statements unless told off', () => {
    expect(loadConfig({}, '/srv').preparedStatements).toBe(true);
    expect(loadConfig({ PHIGATE_PREPARED_STATEMENTS: 'off' }, '/srv').preparedStatements).toBe(false);
  });

  it('takes the native AES-GCM addon when it loads unless told otherwise', () => {
    expect(loadConfig({}, '/srv').aead).toBe('auto');
    expect(loadConfig({ PHIGATE_AEAD: 'native' }, '/srv').aead).toBe('native');
    expect(loadConfig({ PHIGATE_AEAD: 'node' }, '/srv').aead).toBe('node');
  });

  it('reads span export from the OpenTelemetry variables, where an empty value means unset', () => {
    expect(loadConfig({}, '/srv')).toMatchObject({ otelExporterUrl: null, otelScheduleDelayMs: 5_000 });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '', OTEL_BSP_SCHEDULE_DELAY: ' ' }, '/srv')).toMatchObject({ otelExporterUrl: null, otelScheduleDelayMs: 5_000 });
    const c = loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://collector.internal:4318/v1/traces', OTEL_BSP_SCHEDULE_DELAY: '1000' }, '/srv');
    expect(c).toMatchObject({ otelExporterUrl: 'https://collector.internal:4318/v1/traces', otelScheduleDelayMs: 1_000 });
  });

  it('reads the alert thresholds, working hours and time zone it is given, refusing what it cannot use', () => {
    // Unset, none: the sweep's thresholds are the database's (migration 046), compared only with those set.
    expect(loadConfig({}, '/srv').alertSweep).toEqual({ sweepSeconds: 15, thresholds: {} });
    const c = loadConfig({ PHIGATE_ALERT_WORKING_HOURS: '22:00-06:00', PHIGATE_ALERT_TIME_ZONE: 'America/New_York', PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: '200' }, '/srv');
    expect(c.alertSweep.thresholds).toEqual({ dayStart: '22:00', dayEnd: '06:00', timeZone: 'America/New_York', bulkPatientsPerMinute: 200 });
    expect(loadConfig({ PHIGATE_ALERT_WORKING_HOURS: '00:00-24:00' }, '/srv').alertSweep.thresholds).toEqual({ dayStart: '00:00', dayEnd: '24:00' });
    expect(loadConfig({ PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE: '7', PHIGATE_ALERT_SWEEP_SECONDS: '60' }, '/srv').alertSweep).toEqual({ sweepSeconds: 60, thresholds: { deniedFieldsPerMinute: 7 } });
    for (const [name, value] of [
      ['PHIGATE_ALERT_WORKING_HOURS', '9-17'],
      ['PHIGATE_ALERT_WORKING_HOURS', '08:00-08:00'],
      ['PHIGATE_ALERT_WORKING_HOURS', '25:00-06:00'],
      ['PHIGATE_ALERT_TIME_ZONE', 'Mars/Olympus'],
      ['PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE', '0'],
      ['PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE', 'many'],
      ['PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE', ''],
      ['PHIGATE_ALERT_SWEEP_SECONDS', '0'],
    ] as const) {
      expect(refusal({ [name]: value }).variable, `${name}=${value}`).toBe(name);
    }
  });

  it('keeps audit events six years (2192 days) unless told otherwise, and refuses a period it cannot use', () => {
    expect(loadConfig({}).auditRetentionDays).toBe(2192);
    expect(loadConfig({ PHIGATE_AUDIT_RETENTION_DAYS: '3653' }).auditRetentionDays).toBe(3653);
    for (const value of ['0', 'six years', '40000']) {
      expect(refusal({ PHIGATE_AUDIT_RETENTION_DAYS: value }).variable, value).toBe('PHIGATE_AUDIT_RETENTION_DAYS');
    }
  });

  it("lets an audit batch wait for running reads up to half its last commit and 5 ms unless told otherwise, and refuses a bound it cannot use", () => {
    expect(loadConfig({}).audit).toMatchObject({ gatherPercent: 50, gatherMaxMs: 5 });
    expect(loadConfig({ PHIGATE_AUDIT_GATHER_PERCENT: '0', PHIGATE_AUDIT_GATHER_MAX_MS: '20' }).audit).toMatchObject({ gatherPercent: 0, gatherMaxMs: 20 });
    for (const value of ['101', '-1', 'half']) expect(refusal({ PHIGATE_AUDIT_GATHER_PERCENT: value }).variable, value).toBe('PHIGATE_AUDIT_GATHER_PERCENT');
    for (const value of ['0', '1001', '2.5']) expect(refusal({ PHIGATE_AUDIT_GATHER_MAX_MS: value }).variable, value).toBe('PHIGATE_AUDIT_GATHER_MAX_MS');
  });

  it('never echoes a secret value in its message', () => {
    const secret = 'postgres://gw:s3cr3t-pw@db/phigate';
    const e = refusal({ ...prodBase, DATABASE_URL: secret });
    expect(e.message).not.toContain('s3cr3t');
  });
});
