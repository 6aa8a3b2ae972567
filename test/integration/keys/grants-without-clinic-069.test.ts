import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SHREDDED_VALUE } from '../../../src/crypto/envelope.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring, type Keyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../../../src/db/key-store.ts';
import { migrate, MIGRATIONS_DIR } from '../../../src/db/migrate.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import type { KeyAdmin } from '../../../src/records/key-admin.ts';
import { grantTextAad } from '../../../src/records/grant-text.ts';
import { reencryptClinic } from '../../../src/records/reencrypt.ts';
import { generateDataset, type SeedPatient } from '../../../src/seed/dataset.ts';
import { writeDataset } from '../../../src/seed/write.ts';
import { withClient } from '../../support/db.ts';
import { withDatabase } from '../../support/global-setup.ts';

// 069_break_glass_clinic_required.sql: grants written before 034 could have no clinic, or another
// clinic than their patient's, and `keys rotate --reencrypt` seals the texts of one clinic's grants
// at a time, so a legacy plaintext reason of a grant with no clinic was left in the clear after
// every clinic was done. One database is migrated to 068, given such grants as a client with the
// gateway role's rights could have left them, then migrated on and re-encrypted clinic by clinic.

const REASON = 'Legacy reason of a grant with no clinic (test reason)';
let dir: string;
let name: string;
let adminUrl: string;
let pool: Pool;
let keyring: Keyring;
let admin: KeyAdmin;
const data = generateDataset({ patients: 8, seed: 69 });
const sql = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(adminUrl, fn);

/** Migrates the database with the migrations numbered up to `last` (all when null). */
async function migrateTo(last: number | null): Promise<void> {
  const upTo = path.join(dir, `m-${last ?? 'all'}`);
  await mkdir(upTo);
  for (const f of (await readdir(MIGRATIONS_DIR)).filter((n) => n.endsWith('.sql'))) {
    if (last === null || Number(f.slice(0, 3)) <= last) await symlink(path.join(MIGRATIONS_DIR, f), path.join(upTo, f));
  }
  await migrate(adminUrl, { dir: upTo });
}

/**
 * A grant as the gateway role could leave one before 034 (inserted, its clinic then set to
 * anything or left null), with its texts as they are before 066: triggers off, as no trigger
 * of today would let it be written.
 */
async function oldGrant(patient: SeedPatient, clinicId: string | null, texts: { reason?: string; reasonSealed?: Buffer }): Promise<string> {
  return sql(async (c) => {
    await c.query('BEGIN');
    await c.query('SET LOCAL session_replication_role = replica');
    const { rows } = await c.query<{ id: string }>(
      `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, reason_sealed, request_id, granted_at, expires_at)
       VALUES ('dr-before-034', 'physician', $1, $2, false, $3, $4, 'before-034', now() - interval '30 days', now() - interval '30 days' + interval '1 hour')
       RETURNING id`,
      [patient.id, clinicId, texts.reason ?? null, texts.reasonSealed ?? null],
    );
    await c.query('COMMIT');
    return rows[0]!.id;
  });
}

const grant = (id: string) =>
  sql(async (c) => (await c.query('SELECT clinic_id, reason, reason_sealed FROM phigate.break_glass_grants WHERE id = $1', [id])).rows[0]);

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-069-'));
  const cluster = inject('phigateDb').adminUrl;
  name = `phigate_t_069_${randomBytes(5).toString('hex')}`;
  await withClient(cluster, (c) => c.query(`CREATE DATABASE ${name}`));
  adminUrl = withDatabase(cluster, name);
  pool = createPool(adminUrl, { max: 2 });
  keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store: createPgKeyStore(pool) });
  admin = { pool, actor: 'cli:grants-069-test' };
});
afterAll(async () => {
  await pool?.end();
  await withClient(inject('phigateDb').adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  await rm(dir, { recursive: true, force: true });
});

// One story in steps (068, the old grants, 069, re-encryption); never shuffled.
describe('069: every grant in a clinic', { shuffle: false }, () => {
  const [north, south] = data.clinics;
  const ofClinic = (clinicId: string) => data.patients.filter((p) => p.clinicId === clinicId);
  let withoutClinic: string;
  let elsewhere: string;
  let sealedElsewhere: string;
  let shreddedWithoutClinic: string;

  it('files the unsealed grants and every clinic-less one under their patient clinic, leaves a sealed one where it was sealed, and makes the clinic required', async () => {
    await migrateTo(68);
    await sql((c) => writeDataset(c, keyring, data));
    withoutClinic = await oldGrant(ofClinic(north!.id)[0]!, null, { reason: REASON });
    elsewhere = await oldGrant(ofClinic(north!.id)[1]!, south!.id, { reason: `${REASON}, filed elsewhere` });
    sealedElsewhere = await oldGrant(ofClinic(north!.id)[2]!, south!.id, { reasonSealed: SHREDDED_VALUE });
    // What `keys shred` left at 068 in a clinic-less grant of its patient (its marker goes into
    // every grant of the patient, whatever the grant's clinic), which must not keep 069 from
    // making the clinic required. Written as it was left: today's shred needs 072.
    shreddedWithoutClinic = await oldGrant(ofClinic(south!.id)[0]!, null, { reasonSealed: SHREDDED_VALUE });

    await migrateTo(null);
    expect(await grant(withoutClinic)).toMatchObject({ clinic_id: north!.id, reason: REASON });
    expect(await grant(elsewhere)).toMatchObject({ clinic_id: north!.id });
    expect(await grant(sealedElsewhere)).toMatchObject({ clinic_id: south!.id, reason_sealed: SHREDDED_VALUE });
    expect(await grant(shreddedWithoutClinic)).toMatchObject({ clinic_id: south!.id, reason_sealed: SHREDDED_VALUE });
    await expect(oldGrant(ofClinic(north!.id)[0]!, null, { reason: REASON })).rejects.toMatchObject({ code: '23502' });
  });

  it('leaves no plaintext reason anywhere once every clinic is re-encrypted, and the sealed reason opens under its patient key', async () => {
    const clinics = await sql(async (c) => (await c.query<{ scope: string }>(`SELECT DISTINCT scope FROM phigate.keyring WHERE purpose = 'data' ORDER BY scope`)).rows.map((r) => r.scope));
    for (const clinicId of clinics) expect((await reencryptClinic({ admin, keyring, clinicId })).remainingGrants).toBe(0);

    const plaintext = await sql(async (c) => (await c.query('SELECT id FROM phigate.break_glass_grants WHERE reason IS NOT NULL OR review_comment IS NOT NULL')).rows);
    expect(plaintext).toEqual([]);
    const sealed = await grant(withoutClinic);
    expect(sealed.reason_sealed.includes(Buffer.from('no clinic'))).toBe(false);
    const patient = ofClinic(north!.id)[0]!;
    expect(await createFieldCipher(keyring).decrypt(north!.id, grantTextAad(withoutClinic, patient.id, 'reason'), sealed.reason_sealed)).toBe(REASON);
    const events = await sql(async (c) => (await c.query("SELECT detail, grant_id, break_glass FROM phigate.audit_events WHERE action = 'key' AND record_id = $1", [withoutClinic])).rows);
    expect(events).toEqual([{ detail: 'sealed', grant_id: null, break_glass: false }]);
  });
});
