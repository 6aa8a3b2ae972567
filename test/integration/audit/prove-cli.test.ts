import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifierKey } from '../../../src/audit/log/note.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { deliver } from '../../../src/audit/sink/deliver.ts';
import { fileSink } from '../../../src/audit/sink/file.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { checkpointSignedAt } from '../../support/audit-checkpoint.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// `phigate audit prove | check-proof | verify` as an operator and a regulator run them: proofs
// made from the database are checked in a fresh process that has only the public key (no
// database, no settings: the environment it gets is nonsense), and one flipped byte fails them.
// A leaf is one audit record of three events: any of its events is proved by the record's leaf.

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ORIGIN = 'phigate.test/prove';
let db: TestDatabase;
let pool: Pool;
let dir: string;
let keyFile: string;
let vkey: string;
let events: string[];

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-prove-'));
  keyFile = path.join(dir, 'audit-signing-key.pem');
  const signer = await fileSigner(keyFile, ORIGIN);
  vkey = verifierKey(signer.name, signer.publicKey);
  // 13 records of three events (ssn, mrn, givenName) in three checkpoints (5, 9, 13): sizes that are not powers of two.
  for (const n of [5, 4, 4]) {
    await withClient(db.adminUrl, async (c) => {
      for (let i = 0; i < n; i++) {
        await c.query(
          `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
           VALUES ($1, 'dr-prove', 'user', 'physician', 'treatment', gen_random_uuid(), ARRAY['read', 'masked', 'read'], ARRAY['Patient', 'Patient', 'Patient'],
                   ARRAY['ssn', 'mrn', 'givenName'], ARRAY[NULL, NULL, NULL]::uuid[], ARRAY[NULL, NULL, NULL]::text[])`,
          [`req-prove-${i}`],
        );
      }
    });
    // The sealer stops below the oldest transaction running in the cluster (other test runs share it).
    for (let sealed = 0; sealed < n; ) {
      sealed += await sealAll(pool, 1000);
      if (sealed < n) await new Promise((r) => setTimeout(r, 50));
    }
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
  }
  events = await withClient(db.adminUrl, async (c) => (await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log ORDER BY leaf_index')).rows.map((r) => r.event_id));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['bin/phigate.js', ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

const operator = () => ({
  PHIGATE_ENV: 'development',
  PHIGATE_DATA_DIR: dir,
  DATABASE_URL: db.appUrl,
  PHIGATE_MIGRATE_URL: db.adminUrl,
  PHIGATE_AUDIT_LOG_ORIGIN: ORIGIN,
  PHIGATE_AUDIT_SIGNING_KEY_FILE: keyFile,
});
// What a regulator's machine has: none of the gateway's settings (and some that would not parse).
const offline = { DATABASE_URL: 'not a url', PHIGATE_ENV: 'neither' };

async function checked(proof: string, event: string | null = null): Promise<{ code: number | null; stdout: string }> {
  const r = await cli(['audit', 'check-proof', '--proof', await write(proof), '--key', vkey, ...(event === null ? [] : ['--event', event])], offline);
  return { code: r.code, stdout: r.stdout };
}

// Each CLI run is a fresh Node process loading the sources through tsx: seconds each on a busy machine.
describe('phigate audit prove and check-proof', { timeout: 120_000 }, () => {
  it('an inclusion proof from the database checks out offline with the public key alone; a flipped byte fails', async () => {
    // The second event of the record of leaf 6.
    const id = String(BigInt(events[6]!) + 1n);
    const proved = await cli(['audit', 'prove', '--event', id], operator());
    expect(proved.stderr).toBe('');
    expect(proved.code).toBe(0);
    expect(proved.stdout.split('\n').slice(0, 3)).toEqual(['c2sp.org/tlog-proof@v1', expect.stringMatching(/^extra [A-Za-z0-9+/=]+$/), 'index 6']);
    expect(proved.stdout).toContain(`\n${ORIGIN}\n13\n`);
    // The proof carries the leaf's canonical bytes: the whole record (v2).
    const extra = Buffer.from(proved.stdout.split('\n')[1]!.slice('extra '.length), 'base64');
    expect(extra.subarray(1, 1 + extra[0]!).toString('ascii')).toBe('phigate.audit_record.v2');
    // The first event of the record has the same proof.
    expect((await cli(['audit', 'prove', '--event', events[6]!], operator())).stdout).toBe(proved.stdout);

    const ok = await checked(proved.stdout, id);
    expect(ok).toMatchObject({ code: 0, stdout: expect.stringContaining(`proof: valid. event ${id}: masked Patient.mrn patient `) });
    expect(ok.stdout).toContain(`in record ${BigInt(events[6]!) >> 16n} (events ${events[6]} to ${BigInt(events[6]!) + 2n})`);
    expect(ok.stdout).toMatch(new RegExp(`entry 6 of the log ${ORIGIN} of 13 entries, signed at \\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z\\n$`));
    // Without --event: the whole entry.
    expect(await checked(proved.stdout)).toMatchObject({ code: 0, stdout: expect.stringContaining(`proof: valid. record ${BigInt(events[6]!) >> 16n} (events ${events[6]} to`) });
    // A valid proof, but not of the event named: an event of the next record, or past the record's last.
    expect(await checked(proved.stdout, events[7]!)).toMatchObject({ code: 1, stdout: expect.stringContaining(`proof: NOT VALID: event ${events[7]} is not in the entry`) });
    expect(await checked(proved.stdout, String(BigInt(events[6]!) + 3n))).toMatchObject({ code: 1 });

    // One byte of the audit path (the fifth line) changed.
    const lines = proved.stdout.split('\n');
    const hash = Buffer.from(lines[4]!, 'base64');
    hash[0]! ^= 0x01;
    lines[4] = hash.toString('base64');
    expect(await checked(lines.join('\n'))).toMatchObject({ code: 1, stdout: expect.stringContaining('proof: NOT VALID') });
    // Against an older checkpoint a verifier already holds.
    const older = await cli(['audit', 'prove', '--event', events[2]!, '--checkpoint', '5'], operator());
    expect(older.stdout).toContain(`\n${ORIGIN}\n5\n`);
    expect(await checked(older.stdout)).toMatchObject({ code: 0, stdout: expect.stringContaining(`entry 2 of the log ${ORIGIN} of 5 entries`) });
    // Another key: refused too.
    const other = await fileSigner(path.join(dir, 'other.pem'), ORIGIN);
    const wrongKey = await cli(['audit', 'check-proof', '--key', verifierKey(other.name, other.publicKey), '--proof', await write(proved.stdout)], offline);
    expect(wrongKey).toMatchObject({ code: 1, stdout: expect.stringContaining('not signed by this key') });
  });

  it('a consistency proof between two checkpoints checks out offline; a flipped byte fails', async () => {
    const proved = await cli(['audit', 'prove', '--from', '5', '--to', '13'], operator());
    expect(proved.code).toBe(0);
    expect(proved.stdout.split('\n').slice(0, 3)).toEqual(['phigate.audit/consistency-proof@v1', 'old 5', 'new 13']);
    expect(await checked(proved.stdout)).toMatchObject({ code: 0, stdout: expect.stringContaining(`extends its signed tree of 5 entries unchanged`) });
    const bytes = Buffer.from(proved.stdout);
    bytes[bytes.indexOf('\nnew 13\n') + 8]! ^= 0x01;
    expect(await checked(bytes.toString('utf8'))).toMatchObject({ code: 1 });
  });

  it('refuses to prove an event that is not there, and a proof request that names nothing', async () => {
    expect(await cli(['audit', 'prove', '--event', '99999999'], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining('there is no event 99999999') });
    // Past the last event of a real record.
    const past = String(BigInt(events[0]!) + 3n);
    expect(await cli(['audit', 'prove', '--event', past], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining(`there is no event ${past}`) });
    expect(await cli(['audit', 'prove'], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining('--event ID or --from N') });
  });

  it('audit verify exits 1 on a v3 record\'s listing row deleted, naming the record and slot, not the patient; 0 once it is back', async () => {
    const { id, patient } = await withClient(db.adminUrl, async (c) =>
      (await c.query<{ id: string; patient: string }>(
        `INSERT INTO phigate.audit_records_v3 (request_id, actor, actor_kind, role, purpose, patient_ids, actions, type_names, fields, record_ids, details)
         VALUES ('req-prove-page', 'dr-prove', 'user', 'physician', 'treatment', ARRAY[gen_random_uuid(), gen_random_uuid()], '{read}', '{Patient}', '{mrn}',
                 ARRAY[NULL, NULL]::uuid[], '{NULL}')
         RETURNING id::text AS id, patient_ids[2]::text AS patient`,
      )).rows[0]!,
    );
    const listed = await cli(['audit', 'verify'], operator());
    expect(listed).toMatchObject({ code: 0, stdout: expect.stringContaining('; 1 records of several patients matched their patient listing\n') });
    await withClient(db.adminUrl, async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = 2', [id]);
    });
    const first = String(BigInt(id) << 16n);
    const bad = await cli(['audit', 'verify'], operator());
    expect(bad).toMatchObject({ code: 1, stdout: `audit log: NOT VERIFIED: event ${first}: listing_missing\n` });
    expect(bad.stderr).toContain(`record ${id} (first event ${first}), slot 2:`);
    expect(bad.stdout + bad.stderr).not.toContain(patient);
    await withClient(db.adminUrl, (c) => c.query('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES ($1, $2, 2)', [patient, id]));
    expect(await cli(['audit', 'verify'], operator())).toMatchObject({ code: 0 });
  });

  it('audit verify exits 0 on the untouched log and 1 naming the tampered event', async () => {
    const clean = await cli(['audit', 'verify'], operator());
    expect(clean).toMatchObject({ code: 0, stdout: expect.stringContaining('audit log verified: 13 leaves (13 recomputed') });
    // --since says which leaves it recomputed: those past the last checkpoint signed by then.
    const later = await cli(['audit', 'verify', '--since', '2100-01-01'], operator());
    expect(later).toMatchObject({ code: 0, stdout: expect.stringMatching(/; --since 2100-01-01T00:00:00\.000Z: leaves (\d+) to the end recomputed \(checkpoint \1, signed at \S+Z, is the last signed at or before it\); leaves 0 to \d+ counted by their stored hashes under the signed roots/) });
    await withClient(db.adminUrl, async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query("UPDATE phigate.audit_records SET role = 'nurse' WHERE id = $1::bigint >> 16", [events[9]]);
    });
    const bad = await cli(['audit', 'verify'], operator());
    expect(bad).toMatchObject({ code: 1, stdout: `audit log: NOT VERIFIED: event ${events[9]}: event_altered\n` });
    const before = await cli(['audit', 'verify', '--since', '2001-01-01'], operator());
    expect(before).toMatchObject({ code: 1, stdout: `audit log: NOT VERIFIED: event ${events[9]}: event_altered\n` });
    expect(before.stderr).toContain('--since 2001-01-01T00:00:00.000Z: no checkpoint carries a signed time at or before it, so every leaf was recomputed');
    // The proof of an altered event is refused at the source.
    expect(await cli(['audit', 'prove', '--event', events[9]!], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining('differs from the event that was logged') });
    // Never a value of the event in what verify prints.
    expect(bad.stdout + bad.stderr).not.toContain('nurse');
  });
});

describe('phigate audit retain', { timeout: 120_000 }, () => {
  it('asks for --confirm, then removes what is past the period (here nothing) and is audited either way', async () => {
    expect(await cli(['audit', 'retain'], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining('run again with --confirm') });
    const r = await cli(['audit', 'retain', '--confirm'], operator());
    expect(r).toMatchObject({ code: 0, stderr: '', stdout: expect.stringMatching(/^retention: removed no events older than .*; no sink configured or delivered to, so none bounds the run; .*audited as event \d+\n$/) });
    const id = /event (\d+)\n$/.exec(r.stdout)![1];
    const row = await withClient(db.adminUrl, async (c) => (await c.query('SELECT action, actor_kind, detail FROM phigate.audit_events WHERE id = $1', [id])).rows[0]);
    expect(row).toEqual({ action: 'retention', actor_kind: 'system', detail: 'leaves:0-0' });
  });

  // HIPAA keeps audit records six years: a shorter period, by mistake or on purpose, must be asked for by name.
  it('refuses a period under six years, from --days or the setting, removing nothing', async () => {
    const runs = () => withClient(db.adminUrl, async (c) => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM phigate.audit_retention_runs')).rows[0]!.n);
    const before = await runs();
    const byOption = await cli(['audit', 'retain', '--days', '1', '--confirm'], operator());
    expect(byOption).toMatchObject({ code: 2, stdout: '' });
    expect(byOption.stderr).toBe(
      'phigate: retention refused: --days 1 is under six years (2192 days), which audit records are kept for (HIPAA 164.316(b)(2)); nothing was removed. To remove younger events anyway, add --below-six-years (the run is then audited as an alert)\n',
    );
    const bySetting = await cli(['audit', 'retain', '--confirm'], { ...operator(), PHIGATE_AUDIT_RETENTION_DAYS: '2191' });
    expect(bySetting).toMatchObject({ code: 2, stderr: expect.stringContaining('retention refused: PHIGATE_AUDIT_RETENTION_DAYS=2191 is under six years') });
    // The dry run says so too, before asking for --confirm.
    expect(await cli(['audit', 'retain', '--days', '30'], operator())).toMatchObject({ code: 2, stderr: expect.stringContaining('--below-six-years') });
    expect(await runs()).toBe(before);
  });

  it('runs a shorter period when told by name, audits it as an alert beside the run, and the log still verifies', async () => {
    // A database of its own: two records from two days ago, sealed and signed then.
    const young = await createTestDatabase();
    const youngPool = createPool(young.appUrl, { max: 2, applicationName: 'phigate-audit' });
    try {
      const signer = await fileSigner(keyFile, ORIGIN);
      await withClient(young.adminUrl, (c) =>
        c.query(
          `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
           SELECT now() - interval '2 days', 'req-young-' || g, 'dr-young', 'user', 'physician', 'treatment', gen_random_uuid(), ARRAY['read'],
                  ARRAY['Patient'], ARRAY['mrn'], ARRAY[NULL]::uuid[], ARRAY[NULL]::text[]
           FROM generate_series(1, 2) g`,
        ),
      );
      const sealEverything = async (n: number, signedAt: Date | null = null) => {
        for (let sealed = 0; sealed < n; ) {
          sealed += await sealAll(youngPool, 1000);
          if (sealed < n) await new Promise((r) => setTimeout(r, 50));
        }
        if (signedAt === null) await checkpoint(youngPool, signer, { seconds: 0, events: 1, force: true });
        else await checkpointSignedAt(youngPool, signer, signedAt);
      };
      await sealEverything(2, new Date(Date.now() - 2 * 86_400_000 + 60_000));
      const env = { ...operator(), DATABASE_URL: young.appUrl, PHIGATE_MIGRATE_URL: young.adminUrl };

      const r = await cli(['audit', 'retain', '--days', '1', '--below-six-years', '--confirm'], env);
      expect(r).toMatchObject({ code: 0, stdout: expect.stringMatching(/^retention: removed 2 events \(leaves 0 to 1\) older than .*audited as event \d+\n$/) });
      expect(r.stderr).toMatch(/^warning: retention of 1 days, under six years \(2192 days\), as --below-six-years asks; audited as an alert \(request retain-[0-9a-f-]+\)\n$/);
      const id = /event (\d+)\n$/.exec(r.stdout)![1];
      const rows = await withClient(young.adminUrl, async (c) =>
        (
          await c.query(
            `SELECT action, actor_kind, type_name, detail FROM phigate.audit_events
              WHERE request_id = (SELECT request_id FROM phigate.audit_events WHERE id = $1) ORDER BY id`,
            [id],
          )
        ).rows,
      );
      expect(rows).toEqual([
        { action: 'alert', actor_kind: 'system', type_name: 'AuditLog', detail: 'retention_below_floor:1' },
        { action: 'retention', actor_kind: 'system', type_name: 'AuditLog', detail: 'leaves:0-2' },
      ]);
      // The alert and the retention event are sealed like any others, and the log verifies.
      await sealEverything(1);
      expect(await cli(['audit', 'verify'], env)).toMatchObject({ code: 0 });
    } finally {
      await youngPool.end();
      await young.drop();
    }
  });

  it('stays behind the file sink and says how far; refuses, removing nothing, when the sink cannot be read', async () => {
    // A database of its own: four records of three events from seven years ago, the sink holding the first two.
    const old = await createTestDatabase();
    const oldPool = createPool(old.appUrl, { max: 2, applicationName: 'phigate-audit' });
    const sinkDir = path.join(dir, `sink-${old.name}`);
    try {
      const signer = await fileSigner(keyFile, ORIGIN);
      for (const round of [0, 1]) {
        await withClient(old.adminUrl, (c) =>
          c.query(
            `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
             SELECT now() - interval '7 years', 'req-old-' || g, 'dr-old', 'user', 'physician', 'treatment', gen_random_uuid(), ARRAY['read', 'read', 'read'],
                    ARRAY['Patient', 'Patient', 'Patient'], ARRAY['ssn', 'mrn', 'givenName'], ARRAY[NULL, NULL, NULL]::uuid[], ARRAY[NULL, NULL, NULL]::text[]
             FROM generate_series(1, 2) g`,
          ),
        );
        for (let sealed = 0; sealed < 2; ) {
          sealed += await sealAll(oldPool, 1000);
          if (sealed < 2) await new Promise((r) => setTimeout(r, 50));
        }
        await checkpointSignedAt(oldPool, signer, new Date(Date.now() - 7 * 365 * 86_400_000));
        if (round === 0) await deliver(oldPool, await fileSink(sinkDir, 1 << 20), 1000);
      }
      const env = { ...operator(), DATABASE_URL: old.appUrl, PHIGATE_MIGRATE_URL: old.adminUrl };
      const runs = () => withClient(old.adminUrl, async (c) => (await c.query('SELECT from_leaf, to_leaf, sink_bound FROM phigate.audit_retention_runs ORDER BY id')).rows);

      const missing = path.join(dir, `no-sink-${old.name}`);
      const refused = await cli(['audit', 'retain', '--confirm'], { ...env, PHIGATE_AUDIT_SINK_DIR: missing });
      expect(refused).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr).toBe(`phigate: retention refused: the audit sink file:${missing} cannot be read (ENOENT), so retention cannot tell what it has delivered; nothing was removed\n`);
      expect(await runs()).toEqual([]);

      const r = await cli(['audit', 'retain', '--confirm'], { ...env, PHIGATE_AUDIT_SINK_DIR: sinkDir });
      expect(r.stderr).toBe('');
      expect(r).toMatchObject({ code: 0, stdout: expect.stringMatching(/^retention: removed 6 events \(leaves 0 to 1\) older than .*; held back 2 leaves past retention that the sink file:\S+ \(at leaf 2\) has not delivered yet; .*audited as event \d+\n$/) });
      expect(r.stdout).toContain(`file:${sinkDir} (at leaf 2)`);
      expect(await runs()).toEqual([{ from_leaf: '0', to_leaf: '2', sink_bound: '2' }]);
    } finally {
      await oldPool.end();
      await old.drop();
    }
  });
});

async function write(text: string): Promise<string> {
  const file = path.join(dir, `proof-${Math.random().toString(36).slice(2)}.tlog-proof`);
  await writeFile(file, text);
  return file;
}
