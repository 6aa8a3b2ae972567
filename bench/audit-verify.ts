import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { parseVerifierKey, verifierKey } from '../src/audit/log/note.ts';
import { checkpoint, sealRound } from '../src/audit/log/seal.ts';
import { fileSigner } from '../src/audit/log/signer.ts';
import { proveEvent } from '../src/audit/verify/prove.ts';
import { verifyLog } from '../src/audit/verify/verify.ts';
import { createPool } from '../src/db/pool.ts';
import { migrate } from '../src/db/migrate.ts';

/**
 * `audit verify` and `audit prove` on a generated log:
 *   npx tsx bench/audit-verify.ts <superuser url> [events]
 * creates a scratch database on that server, writes `events` audit rows (1,000 per transaction),
 * seals them with a checkpoint every 10,000, then times verify (every leaf recomputed) and one
 * inclusion proof, which it prints. Drops the database afterwards.
 */
const [adminUrl, countArg] = process.argv.slice(2);
if (!adminUrl) {
  process.stderr.write('usage: tsx bench/audit-verify.ts <superuser postgres url> [events]\n');
  process.exit(2);
}
const events = Number(countArg ?? 100_000);
const name = `phigate_bench_${randomBytes(4).toString('hex')}`;
const dbUrl = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
})();

const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
const dir = await mkdtemp(path.join(tmpdir(), 'phigate-bench-verify-'));
try {
  await migrate(dbUrl);
  const signer = await fileSigner(path.join(dir, 'key.pem'), 'phigate.bench/audit');
  const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
  const pool = createPool(dbUrl, { max: 2 });
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  let t = performance.now();
  for (let done = 0; done < events; done += 1000) {
    await c.query(
      `INSERT INTO phigate.audit_events (request_id, actor, actor_kind, role, purpose, action, type_name, field, patient_id, client_addr, batch_id)
       SELECT 'req-' || g / 9, 'dr-bench-' || g % 50, 'user', 'physician', 'treatment', 'read', 'Patient', 'ssn', gen_random_uuid(), '10.0.0.1', gen_random_uuid()
       FROM generate_series($1::int, $2::int) g`,
      [done, Math.min(done + 1000, events) - 1],
    );
  }
  const wrote = performance.now() - t;
  t = performance.now();
  let sealed = 0;
  while (sealed < events) {
    const r = await sealRound(pool, 10_000);
    const n = r.busy ? 0 : r.sealed;
    sealed += n;
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    // Sealing waits for the oldest transaction running in the cluster.
    if (n === 0) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const sealMs = performance.now() - t;
  t = performance.now();
  const report = await verifyLog({ client: c, verifier });
  const verifyMs = performance.now() - t;
  if (report.problem !== null) throw new Error(`verify failed: ${report.problem.message}`);
  const id = (await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log WHERE leaf_index = $1', [Math.floor(events / 3)])).rows[0]!.event_id;
  t = performance.now();
  await proveEvent(c, id);
  const firstProveMs = performance.now() - t;
  t = performance.now();
  const proof = await proveEvent(c, id);
  const proveMs = performance.now() - t;
  const hashes = proof.split('\n\n')[0]!.split('\n').length - 3;
  const rate = (n: number, ms: number) => `${Math.round((n / ms) * 1000).toLocaleString('en-US')}/s`;
  process.stdout.write(
    [
      `events: ${events.toLocaleString('en-US')} (${report.checkpoints} checkpoints)`,
      `write: ${(wrote / 1000).toFixed(1)} s`,
      `seal + sign: ${(sealMs / 1000).toFixed(1)} s, ${rate(events, sealMs)}`,
      `verify (every leaf recomputed from its row, every root and signature): ${(verifyMs / 1000).toFixed(1)} s, ${rate(events, verifyMs)}`,
      `prove one event: ${firstProveMs.toFixed(0)} ms the first time (caching the tile roots), then ${proveMs.toFixed(0)} ms; ${hashes} hashes, ${Buffer.byteLength(proof)} bytes`,
    ].join('\n') + `\n\n${proof}`,
  );
  await c.end();
  await pool.end();
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
  await rm(dir, { recursive: true, force: true });
}
