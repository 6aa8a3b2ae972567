import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assembleApp, endAppPools } from '../../src/app.ts';
import { openNote, parseVerifierKey, verifierKey } from '../../src/audit/log/note.ts';
import { kmsSigner } from '../../src/audit/log/signer.ts';
import { loadConfig } from '../../src/config.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { assertTlsConnection, InsecureDatabaseConnectionError, pgConnection } from '../../src/db/tls.ts';
import { createLogger } from '../../src/log.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startFakeKms, type FakeKms } from '../support/fake-kms.ts';
import { startTlsPostgres, type TlsPostgres } from '../support/tls-postgres.ts';

// Transport security to the database, against a real PostgreSQL that accepts only TLS >= 1.2 and
// SCRAM-SHA-256: the gateway's pool verifies the server, and production refuses anything weaker.

const ROLE = 'phigate_tls_gateway';
const PASSWORD = 'tls-test-only';

let server: TlsPostgres;
const pools: Pool[] = [];

const pool = (url: string, caFile: string | null = null): Pool => {
  const p = createPool(url, { max: 1, caFile });
  pools.push(p);
  return p;
};

/** The error a first query on `p` fails with. */
const refusal = (p: Pool): Promise<Error> => p.query('SELECT 1').then(() => Promise.reject(new Error('connected')), (e: Error) => e);

beforeAll(async () => {
  server = await startTlsPostgres();
  const admin = new pg.Client(pgConnection(server.url('postgres', server.superuserPassword, 'localhost', 'sslmode=verify-full'), server.caFile));
  await admin.connect();
  try {
    await admin.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
  } finally {
    await admin.end();
  }
}, 30_000);

afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await server?.stop();
});

describe('database TLS', () => {
  it('the gateway pool connects with verify-full, over TLS >= 1.2, with a SCRAM-SHA-256 password', async () => {
    const p = pool(server.url(ROLE, PASSWORD, 'localhost', 'sslmode=verify-full'), server.caFile);
    const { rows } = await p.query<{ ssl: boolean; version: string; user: string }>(
      'SELECT s.ssl, s.version, current_user AS user FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()',
    );
    expect(rows[0]).toMatchObject({ ssl: true, user: ROLE });
    expect(['TLSv1.2', 'TLSv1.3']).toContain(rows[0]!.version);
    await expect(assertTlsConnection(p)).resolves.toBeUndefined();

    const admin = pool(server.url('postgres', server.superuserPassword, 'localhost', 'sslmode=verify-full'), server.caFile);
    const stored = await admin.query<{ scram: boolean }>(`SELECT rolpassword LIKE 'SCRAM-SHA-256$%' AS scram FROM pg_authid WHERE rolname = $1`, [ROLE]);
    expect(stored.rows[0]?.scram).toBe(true);
  });

  it('the CA may also come from the URL (sslrootcert), as libpq reads it', async () => {
    const query = `sslmode=verify-full&sslrootcert=${encodeURIComponent(server.caFile)}`;
    await expect(assertTlsConnection(pool(server.url(ROLE, PASSWORD, 'localhost', query)))).resolves.toBeUndefined();
  });

  it('a plaintext connection is refused by the server', async () => {
    const e = await refusal(pool(server.url(ROLE, PASSWORD, 'localhost', 'sslmode=disable')));
    expect(e.message).toMatch(/no pg_hba\.conf entry.*no encryption/);
  });

  it('a server whose certificate another CA signed is refused', async () => {
    const e = await refusal(pool(server.url(ROLE, PASSWORD, 'localhost', 'sslmode=verify-full'), server.otherCaFile));
    expect((e as NodeJS.ErrnoException).code).toMatch(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
  });

  it('a certificate that does not name the host connected to is refused', async () => {
    // Same server, same CA, but reached as 127.0.0.1: the certificate names only localhost.
    const e = await refusal(pool(server.url(ROLE, PASSWORD, '127.0.0.1', 'sslmode=verify-full'), server.caFile));
    expect((e as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('verify-ca checks the chain but not the name; require still verifies', async () => {
    await expect(assertTlsConnection(pool(server.url(ROLE, PASSWORD, '127.0.0.1', 'sslmode=verify-ca'), server.caFile))).resolves.toBeUndefined();
    const e = await refusal(pool(server.url(ROLE, PASSWORD, '127.0.0.1', 'sslmode=require'), server.caFile));
    expect((e as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('a client that offers at most TLS 1.1 is refused by the server', async () => {
    const { connectionString } = pgConnection(server.url(ROLE, PASSWORD, 'localhost', 'sslmode=verify-full'));
    // The weakest client Node can still be made into: TLS 1.0-1.1 and security level 0, so the
    // refusal below is the server's (ssl_min_protocol_version), not the client's own.
    const old = new pg.Client({
      connectionString,
      ssl: { ca: await readFile(server.caFile, 'utf8'), minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' },
    });
    old.on('error', () => undefined);
    const e = await old.connect().then(() => Promise.reject(new Error('connected')), (err: NodeJS.ErrnoException) => err);
    await old.end().catch(() => undefined);
    // Alert 70 (protocol_version) is sent by the server: the client did offer TLS 1.1.
    expect(e.message).toMatch(/alert protocol version/);
  });

  it('URLs that would connect without verifying the server are refused before connecting', () => {
    const base = server.url(ROLE, PASSWORD, 'localhost', '');
    for (const mode of ['prefer', 'allow', 'no-verify']) expect(() => pgConnection(`${base}sslmode=${mode}`)).toThrow(/DATABASE_URL: sslmode must be/);
    expect(() => pgConnection(`${base}sslmode=verify-ca`)).toThrow(/PHIGATE_DATABASE_CA_FILE/);
    expect(() => pgConnection(`${base}sslmode=verify-full`, path.join(server.caFile, 'missing'))).toThrow(/PHIGATE_DATABASE_CA_FILE: the CA file .* cannot be read/);
    const { connectionString, ssl } = pgConnection(`${base}sslmode=verify-full&sslrootcert=${encodeURIComponent(server.caFile)}`);
    expect(connectionString).not.toMatch(/ssl/);
    expect(ssl).toMatchObject({ rejectUnauthorized: true, minVersion: 'TLSv1.2' });
  });
});

describe('production refuses a database connection without TLS', () => {
  let plain: TestDatabase;
  beforeAll(async () => {
    plain = await createTestDatabase();
  });
  afterAll(async () => plain?.drop());

  it('the check passes over TLS and fails on a server without TLS', async () => {
    await expect(assertTlsConnection(pool(server.url(ROLE, PASSWORD, 'localhost', 'sslmode=verify-full'), server.caFile))).resolves.toBeUndefined();
    await expect(assertTlsConnection(pool(plain.appUrl))).rejects.toThrow(InsecureDatabaseConnectionError);
  });

  it('assembleApp in production stops start-up on a plaintext connection, naming DATABASE_URL', async () => {
    const config = loadConfig(
      {
        PHIGATE_ENV: 'production',
        DATABASE_URL: 'postgres://gw:pw@db.internal:5432/phigate?sslmode=verify-full',
        PHIGATE_OIDC_ISSUER: 'https://idp.example.org/realms/phigate',
        PHIGATE_KMS: 'aws',
        PHIGATE_KMS_KEY_ID: 'alias/phigate',
        AWS_REGION: 'eu-west-1',
        PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'alias/phigate-audit',
      },
      path.resolve(import.meta.dirname, '../..'),
    );
    // The URL a misbehaving proxy or a wrong setting might really lead to: plaintext.
    await expect(assembleApp(config, plain.appUrl, createLogger('silent'))).rejects.toThrow(/^DATABASE_URL: production requires TLS 1\.2/);
  });
});

describe('a production start with PHIGATE_KMS=aws', () => {
  // The whole start-up of assembleApp as production runs it: verified TLS to the database, the
  // master key proven through the KMS, and the audit log's checkpoints signed by a KMS Ed25519 key
  // (one GetPublicKey at start-up, KMS Sign for each checkpoint), all through the real
  // @aws-sdk/client-kms against the loopback KMS. The issuer is unreachable, which start-up
  // tolerates (tokens are refused until it answers).
  const credentials = { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-access-key' };
  let kms: FakeKms;
  let signingKey: string;
  let dataDir: string;
  const env = (): Record<string, string> => ({
    PHIGATE_ENV: 'production',
    DATABASE_URL: server.url(ROLE, PASSWORD, 'localhost', 'sslmode=verify-full'),
    PHIGATE_DATABASE_CA_FILE: server.caFile,
    PHIGATE_OIDC_ISSUER: 'https://127.0.0.1:9/realms/phigate',
    PHIGATE_KMS: 'aws',
    PHIGATE_KMS_KEY_ID: 'data-key',
    AWS_REGION: 'us-east-1',
    PHIGATE_KMS_ENDPOINT: kms.endpoint,
    PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: signingKey,
    PHIGATE_AUDIT_LOG_ORIGIN: 'phigate.test/production',
    PHIGATE_DATA_DIR: dataDir,
  });

  beforeAll(async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
    kms = await startFakeKms();
    const client = new KMSClient({ region: 'us-east-1', endpoint: kms.endpoint, credentials });
    signingKey = (await client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_EDWARDS25519', KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'phigate-prod-'));
    const superuser = `${server.url('postgres', server.superuserPassword, 'localhost', 'sslmode=verify-full')}&sslrootcert=${encodeURIComponent(server.caFile)}`;
    await migrate(superuser);
    const admin = new pg.Client(pgConnection(superuser));
    await admin.connect();
    try {
      await admin.query(`GRANT phigate_app TO ${ROLE}`);
    } finally {
      await admin.end();
    }
  }, 120_000);
  afterAll(async () => {
    await kms?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('starts, and signs its checkpoints with KMS Sign; no key file is made', async () => {
    const config = loadConfig(env(), path.resolve(import.meta.dirname, '../..'));
    const before = { ...kms.calls };
    const app = await assembleApp(config, config.database!.appUrl, createLogger('silent'));
    try {
      expect(kms.calls.GetPublicKey).toBe(before.GetPublicKey + 1);
      await app.auditWriter.write({
        request: { requestId: 'production-start', actor: 'dr-prod', actorKind: 'user', clientAddr: '10.0.0.1' },
        events: [{ action: 'read', typeName: 'Patient', field: 'ssn', patientId: randomUUID(), recordId: null, role: 'physician', purpose: 'treatment', breakGlass: false }],
      });
      const round = await app.auditLog.round(true);
      expect(round.checkpoint).toBeGreaterThan(0);
      expect(kms.calls.Sign).toBeGreaterThan(before.Sign);
      const { rows } = await app.logPool.query<{ note: string }>('SELECT note FROM phigate.audit_checkpoints ORDER BY tree_size DESC LIMIT 1');
      const publicKey = (await kmsSigner({ keyId: signingKey, region: 'us-east-1', endpoint: kms.endpoint, name: 'phigate.test/production', credentials })).publicKey;
      expect(openNote(rows[0]!.note, parseVerifierKey(verifierKey('phigate.test/production', publicKey))!)).not.toBeNull();
      await expect(stat(path.join(dataDir, 'audit-signing-key.pem'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await app.auditLog.stop();
      await app.auditWriter.close();
      await app.partnerKeys.close();
      await endAppPools(app);
    }
  });

  it('refuses to start with a signing key that is not Ed25519, naming the variable', async () => {
    const client = new KMSClient({ region: 'us-east-1', endpoint: kms.endpoint, credentials });
    const p256 = (await client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
    const config = loadConfig({ ...env(), PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: p256 }, path.resolve(import.meta.dirname, '../..'));
    await expect(assembleApp(config, config.database!.appUrl, createLogger('silent'))).rejects.toThrow(
      /^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: the key is not an Ed25519 signing key \(key spec ECC_NIST_P256/,
    );
  });
});
