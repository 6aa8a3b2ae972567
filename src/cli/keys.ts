import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import type { Config } from '../config.ts';
import { createAwsKeyProvider } from '../crypto/keys/aws.ts';
import { keyProviderFromConfig } from '../crypto/keys/from-config.ts';
import { createLocalKeyProvider } from '../crypto/keys/local.ts';
import type { KeyProvider } from '../crypto/keys/provider.ts';
import { createKeyring, type Keyring } from '../crypto/keys/keyring.ts';
import { createPgKeyStore } from '../db/key-store.ts';
import { createPool } from '../db/pool.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { isPhigateError } from '../errors.ts';
import { inKeyTransaction, type KeyAdmin } from '../records/key-admin.ts';
import { pendingReencryption, reencryptClinic, type ReencryptResult } from '../records/reencrypt.ts';
import { retireDataKey } from '../records/retire-key.ts';
import { rewrapKeys } from '../records/rewrap-keys.ts';
import { shredPatient } from '../records/shred-patient.ts';
import { progressBar } from './progress.ts';
import { INDEX_KEYS_USAGE } from './index-keys.ts';

type Values = Record<string, string | boolean | undefined>;

export class KeysCommandError extends Error {}

export const KEYS_USAGE = `  keys rotate [--clinic C] [--reencrypt] [--batch N]
                                new data-key version (every clinic, or C); --reencrypt then moves old
                                rows onto it in batches, and seals break-glass reasons kept in plaintext
                                (run again after a stop: it resumes)
  keys shred --patient ID --confirm
                                destroy the keys of one patient's PHI (irreversible; audited)
  keys retire --clinic C --version N
                                delete an old data-key version; refused while any row uses it
  keys rewrap --from-kms-key-id ID | --from-local-master-key-file FILE
                                master-key rotation: re-wrap every data key wrapped by the old
                                master key with the configured one; no row is touched`;

export const keysOptions = {
  clinic: { type: 'string' },
  reencrypt: { type: 'boolean' },
  batch: { type: 'string' },
  patient: { type: 'string' },
  confirm: { type: 'boolean' },
  version: { type: 'string' },
  'from-kms-key-id': { type: 'string' },
  'from-local-master-key-file': { type: 'string' },
} as const;

function wholeNumber(name: string, raw: string | boolean | undefined, fallback: number | null, max: number): number {
  if (raw === undefined && fallback !== null) return fallback;
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) throw new KeysCommandError(`--${name} must be a whole number from 1 to ${max}`);
  return Number(raw);
}

/**
 * The operator's key commands. They run as the migrator (PHIGATE_MIGRATE_URL) taking the role
 * phigate_keys in each transaction, since they act on every clinic's rows; each change is
 * recorded as `key` audit events in the transaction that makes it.
 */
export async function runKeys(positionals: readonly string[], v: Values, config: Config, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [action, ...extra] = positionals;
  if (!action || !['rotate', 'shred', 'retire', 'rewrap'].includes(action) || extra.length > 0) throw new KeysCommandError(`keys needs one of rotate, rotate-index, shred, retire, rewrap\n${KEYS_USAGE}\n${INDEX_KEYS_USAGE}`);
  const from = action === 'rewrap' ? await previousProvider(v, config) : null;
  if (action === 'shred') {
    if (typeof v.patient !== 'string') throw new KeysCommandError('keys shred needs --patient ID');
    if (v.confirm !== true) {
      throw new KeysCommandError(`keys shred destroys the keys of patient ${v.patient}: its PHI becomes unreadable in this database for good and its visit dates are erased; backups taken before keep them until they expire (docs/shredding.md). Add --confirm to do it.`);
    }
  }
  if (action === 'retire' && typeof v.clinic !== 'string') throw new KeysCommandError('keys retire needs --clinic C and --version N');
  const retireVersion = action === 'retire' ? wholeNumber('version', v.version, null, 0xffff_ffff) : 0;
  const batchSize = wholeNumber('batch', v.batch, 100, 10_000);

  const urls = await databaseUrls(config, err);
  if (!urls.migrateUrl) {
    await urls.stop();
    throw new KeysCommandError('PHIGATE_MIGRATE_URL: is required for key commands on an external database');
  }
  const pool = createPool(urls.migrateUrl, { max: 3, caFile: config.databaseCaFile, applicationName: 'phigate-keys-cli' });
  const admin: KeyAdmin = { pool, actor: `cli:${userInfo().username}` };
  try {
    if (action === 'shred') {
      const outcome = await shredPatient(admin, v.patient as string);
      out(outcome === 'shredded' ? `shredded patient ${v.patient}: its keys are destroyed and its times in the clear erased` : `patient ${v.patient} was already shredded; its rows are marked again`);
      return 0;
    }
    if (from !== null) {
      const to = await keyProviderFromConfig(config);
      if (to.name === from.name && to.keyRef === from.keyRef) throw new KeysCommandError('the old master key is the configured one; configure the new one first');
      const { rewrapped, alreadyDone } = await rewrapKeys(admin, from, to);
      out(`re-wrapped ${rewrapped} keys under ${to.keyRef} (${alreadyDone} were already); restart every gateway with the new master key now`);
      return 0;
    }
    if (action === 'retire') {
      // Within this, every replica has moved its writes to the newer version (README, "Keys").
      const writeBoundMs = Math.min(60_000, config.keyCache.maxAgeMs) + config.timeouts.requestMs;
      const { patientKeys } = await retireDataKey(admin, v.clinic as string, retireVersion, writeBoundMs);
      out(`retired data key version ${retireVersion} of ${v.clinic as string} (and ${patientKeys} patient keys it wrapped)`);
      return 0;
    }
    const keyring = createKeyring({ provider: await keyProviderFromConfig(config), store: createPgKeyStore(pool) });
    const clinics = typeof v.clinic === 'string' ? [await existingClinic(admin, v.clinic)] : await allClinics(admin);
    const stop = new AbortController();
    const onSignal = () => {
      err('stopping after the batch in flight; run the same command again to resume');
      stop.abort();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const writeBoundMs = Math.min(60_000, config.keyCache.maxAgeMs);
      let remaining = 0;
      for (const clinicId of clinics) {
        remaining += await rotateClinic(admin, keyring, clinicId, { reencrypt: v.reencrypt === true, batchSize, signal: stop.signal, writeBoundMs }, out);
      }
      return remaining > 0 ? 1 : 0;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  } catch (e) {
    if (isPhigateError(e) && (e.code === 'BAD_USER_INPUT' || e.code === 'FORBIDDEN')) throw new KeysCommandError(e.message);
    throw e;
  } finally {
    await pool.end();
    await urls.stop();
  }
}

/** The master key being retired, named by the command line; the new one is the configured one. */
async function previousProvider(v: Values, config: Config): Promise<KeyProvider> {
  const kmsKeyId = v['from-kms-key-id'];
  const file = v['from-local-master-key-file'];
  if ((typeof kmsKeyId === 'string') === (typeof file === 'string')) throw new KeysCommandError('keys rewrap needs one of --from-kms-key-id ID or --from-local-master-key-file FILE');
  if (typeof kmsKeyId === 'string') {
    if (config.kms.provider !== 'aws') throw new KeysCommandError('--from-kms-key-id needs PHIGATE_KMS=aws (and AWS_REGION) for the old key as for the new one');
    return createAwsKeyProvider({ keyId: kmsKeyId, region: config.kms.region, endpoint: config.kms.endpoint });
  }
  const key = await readFile(file as string).catch(() => null);
  if (key === null || key.length !== 32) throw new KeysCommandError(`--from-local-master-key-file: ${file as string} must be a readable file of exactly 32 bytes`);
  try {
    return createLocalKeyProvider(key);
  } finally {
    key.fill(0);
  }
}

async function existingClinic(admin: KeyAdmin, clinicId: string): Promise<string> {
  const found = await inKeyTransaction(admin, async (c) => (await c.query('SELECT 1 FROM phigate.clinics WHERE id = $1', [clinicId])).rowCount);
  if (!found) throw new KeysCommandError(`--clinic: no clinic has the id ${clinicId}`);
  return clinicId;
}

async function allClinics(admin: KeyAdmin): Promise<string[]> {
  return inKeyTransaction(admin, async (c) => (await c.query<{ scope: string }>(`SELECT DISTINCT scope FROM phigate.keyring WHERE purpose = 'data' ORDER BY scope`)).rows.map((r) => r.scope));
}

/** Rotates one clinic, unless a re-encryption onto its current version is unfinished: that is resumed instead. */
async function rotateClinic(
  admin: KeyAdmin,
  keyring: Keyring,
  clinicId: string,
  opts: { reencrypt: boolean; batchSize: number; signal: AbortSignal; writeBoundMs: number },
  out: (s: string) => void,
): Promise<number> {
  const reencrypt = (label: string) =>
    reencryptClinic({ admin, keyring, clinicId, batchSize: opts.batchSize, signal: opts.signal, onProgress: progressBar(label, process.stderr) });
  const report = (r: ReencryptResult) =>
    out(
      `${clinicId}: ${r.patients} patients, ${r.grants} break-glass grants, ${r.values} values re-encrypted onto version ${r.target}; ${r.remaining} patients, ${r.remainingGrants} grants left${r.unreadable ? `, ${r.unreadable} rows unreadable` : ''}`,
    );
  if (opts.reencrypt) {
    // A clinic without a data key yet has nothing to resume: it gets its first version below.
    const pending = await pendingReencryption(admin, clinicId).catch((e: unknown) => {
      if (isPhigateError(e) && e.code === 'BAD_USER_INPUT') return null;
      throw e;
    });
    if (pending && pending.patients + pending.grants > 0) {
      out(
        `${clinicId}: a re-encryption onto version ${pending.target} is unfinished (${pending.patients} patients, ${pending.grants} break-glass grants); resuming it, no new version made`,
      );
      const r = await reencrypt(`${clinicId} re-encrypting`);
      report(r);
      return r.remaining + r.remainingGrants;
    }
  }
  const version = await keyring.rotate('data', clinicId);
  await inKeyTransaction(admin, async (_c, record) => record({ typeName: 'ClinicKey', field: clinicId, patientId: null, recordId: null, detail: `rotated:v${version}` }));
  out(`${clinicId}: data key version ${version} created; new writes use it on every replica within ${Math.ceil(opts.writeBoundMs / 1000)} s`);
  if (!opts.reencrypt) return 0;
  const r = await reencrypt(`${clinicId} re-encrypting`);
  report(r);
  return r.remaining + r.remainingGrants;
}
