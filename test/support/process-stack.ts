import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createKeyring } from '../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../../src/db/key-store.ts';
import { createPool } from '../../src/db/pool.ts';
import { generateDataset, type Dataset } from '../../src/seed/dataset.ts';
import { writeDataset } from '../../src/seed/write.ts';
import { createTestDatabase, withClient, type TestDatabase } from './db.ts';
import { startTestIssuer, type TestIssuer } from './oidc-issuer.ts';

/** What a gateway started as its own process (node --import tsx src/main.ts) runs against. */
export interface ProcessStack {
  readonly db: TestDatabase;
  readonly issuer: TestIssuer;
  readonly dataDir: string;
  readonly data: Dataset;
  readonly masterKey: Buffer;
  /** The environment such a process gets: nothing inherited but PATH, so no PHIGATE_* or OTEL_* of the machine. */
  readonly env: Record<string, string>;
  close(): Promise<void>;
}

/** Writes the dataset sealed under a local master key, as `phigate seed` would for a process given that key. */
export async function writeSealedDataset(db: TestDatabase, masterKey: Buffer, data: Dataset): Promise<void> {
  const pool = createPool(db.appUrl, { max: 2 });
  try {
    const keyring = createKeyring({ provider: createLocalKeyProvider(masterKey), store: createPgKeyStore(pool) });
    await withClient(db.adminUrl, (c) => writeDataset(c, keyring, data));
  } finally {
    await pool.end();
  }
}

/** A fresh database seeded under a local master key, a loopback issuer and a data directory. */
export async function startProcessStack(opts: { patients: number; seed: number }): Promise<ProcessStack> {
  const db = await createTestDatabase();
  const issuer = await startTestIssuer();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-proc-'));
  const data = generateDataset(opts);
  const masterKey = randomBytes(32);
  await writeSealedDataset(db, masterKey, data);
  return {
    db,
    issuer,
    dataDir,
    data,
    masterKey,
    env: {
      PATH: process.env.PATH ?? '',
      PHIGATE_ENV: 'development',
      PHIGATE_HOST: '127.0.0.1',
      PHIGATE_PORT: '0',
      PHIGATE_DATA_DIR: dataDir,
      ...db.gatewayEnv,
      PHIGATE_OIDC_ISSUER: issuer.issuer,
      PHIGATE_LOCAL_MASTER_KEY: masterKey.toString('base64'),
    },
    async close() {
      await issuer.close();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
