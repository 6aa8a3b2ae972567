import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';

describe('PHIGATE_AUX_DATABASE_URL', () => {
  const app = 'postgres://gw:pw@pgbouncer:6432/phigate';
  it('defaults to DATABASE_URL (null) and is taken as given otherwise', () => {
    expect(loadConfig({ DATABASE_URL: app }).auxDatabaseUrl).toBeNull();
    expect(loadConfig({ DATABASE_URL: app, PHIGATE_AUX_DATABASE_URL: `${app}_aux` }).auxDatabaseUrl).toBe(`${app}_aux`);
  });

  it('needs DATABASE_URL, a postgres URL, and in production verified TLS', () => {
    expect(() => loadConfig({ PHIGATE_AUX_DATABASE_URL: app })).toThrow(/^DATABASE_URL: must be set when PHIGATE_AUX_DATABASE_URL is/);
    expect(() => loadConfig({ DATABASE_URL: app, PHIGATE_AUX_DATABASE_URL: 'http://x' })).toThrow(/^PHIGATE_AUX_DATABASE_URL: /);
    const production = {
      PHIGATE_ENV: 'production',
      DATABASE_URL: `${app}?sslmode=verify-full`,
      PHIGATE_OIDC_ISSUER: 'https://issuer.example.org',
      PHIGATE_KMS: 'aws',
      PHIGATE_KMS_KEY_ID: 'k',
      AWS_REGION: 'eu-west-2',
      PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'k-audit',
    };
    expect(() => loadConfig({ ...production, PHIGATE_AUX_DATABASE_URL: `${app}_aux` })).toThrow(/^PHIGATE_AUX_DATABASE_URL: production requires sslmode=verify-full/);
    expect(loadConfig({ ...production, PHIGATE_AUX_DATABASE_URL: `${app}_aux?sslmode=verify-full` }).auxDatabaseUrl).toContain('_aux');
  });
});
