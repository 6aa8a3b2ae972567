/**
 * PostgreSQL's CPU for one page of the break-glass review queue (breakGlassGrants, migration 068):
 * `npx tsx bench/grant-queue.ts --db NAME [--rounds R] [--calls N] [--migrate] [--clinics C]
 * [--variants before,fanout,queue] [--jit on|off]` against BENCH_DATABASE_URL (a superuser URL;
 * default the local cluster on 127.0.0.1:5432).
 *
 * `--migrate` creates database NAME, migrates it to this tree's head and writes 200,000 grants in
 * C clinics (default 10, of 20,000 each; 5% unreviewed), a clinic `c-small` of 5, 400 grants per
 * clinician (once; later runs reuse it). With C = 10 the principals are the four below; otherwise
 * reviewers of all C clinics, of 50 (PHIGATE_MAX_TOKEN_CLINICS' default) and of one. One
 * connection of the app role, under each principal's request context
 * and generic plans as the gateway runs them, reads the first page of 50 N times per variant, the
 * variants taking turns for R rounds, so that a machine whose load moves during the run moves both
 * alike. Prints the backend's CPU per page (utime + stime of /proc/PID/stat, so PostgreSQL must
 * run on this machine), each round, per principal and variant:
 * - `before`: the statement before paging, which left the choice of rows to row security and sorted them;
 * - `fanout`: listGrants as 068 left it, `first` grants of every clinic in the token, merged;
 * - `queue`: src/db/break-glass.ts listGrants as it is (one grant a clinic bounds the page, then
 *   the clinics and grants up to that bound, through index 068, merged).
 * `--jit` sets PostgreSQL's jit for the connection (default: the server's setting, as the gateway).
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { listGrants } from '../src/db/break-glass.ts';
import type { RequestTransaction } from '../src/db/transaction.ts';
import { procStat } from './cpu.ts';
import { scratchDatabase } from './scratch-db.ts';

const { values } = parseArgs({
  options: {
    db: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    calls: { type: 'string', default: '100' },
    migrate: { type: 'boolean', default: false },
    clinics: { type: 'string', default: '10' },
    variants: { type: 'string', default: 'before,queue' },
    jit: { type: 'string' },
  },
});
const CLINICS = Number(values.clinics);
const ROUNDS = Number(values.rounds);
const CALLS = Number(values.calls);
const db = await scratchDatabase(values.db, values.migrate);

if (values.migrate) {
  const c = new pg.Client({ connectionString: db.admin });
  await c.connect();
  // The owner writes the grants with their clinic, as if bound at insert: no patients needed.
  await c.query('SET session_replication_role = replica');
  await c.query(`INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at, reviewed_at, reviewed_by, review_outcome)
    SELECT 'dr-' || (g % 500), 'physician', gen_random_uuid(), 'c-' || (g % ${CLINICS}), false, 'bench', 'bench', t, t + interval '1 hour',
           CASE WHEN g < 190000 THEN t + interval '2 hours' END, CASE WHEN g < 190000 THEN 'bench-reviewer' END, CASE WHEN g < 190000 THEN 'justified' END
    FROM generate_series(1, 200000) g, LATERAL (SELECT timestamptz '2024-01-01' + g * interval '3 minutes' AS t) x`);
  await c.query(`INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at)
    SELECT 'dr-small', 'physician', gen_random_uuid(), 'c-small', false, 'bench', 'bench', t, t + interval '1 hour'
    FROM generate_series(1, 5) g, LATERAL (SELECT timestamptz '2025-06-01' + g * interval '1 day' AS t) x`);
  await c.query('ANALYZE phigate.break_glass_grants');
  await c.end();
}

const BEFORE = `SELECT * FROM phigate.break_glass_grants WHERE ($1::boolean IS FALSE OR reviewed_at IS NULL)
  ORDER BY (reviewed_at IS NULL) DESC, granted_at, id LIMIT $2`;
// The statement 068 shipped: `first` grants of every clinic in the token, then merged.
const FANOUT = `SELECT id, actor, role, patient_id, clinic_id, cross_clinic, reason, reason_sealed, granted_at, expires_at, revoked_at, revoked_by,
  reviewed_at, reviewed_by, review_outcome, review_comment, review_comment_sealed, (revoked_at IS NULL AND expires_at > clock_timestamp()) AS active,
  (extract(epoch FROM granted_at) * 1000000)::bigint::text AS granted_us FROM (
    SELECT g.* FROM unnest(phigate.ctx_clinics()) AS c(id) CROSS JOIN LATERAL (
      SELECT * FROM phigate.break_glass_grants WHERE phigate.ctx_reviewer() AND clinic_id = c.id
      ORDER BY (reviewed_at IS NOT NULL) ASC, granted_at ASC, id ASC LIMIT $1) g
    UNION (SELECT * FROM phigate.break_glass_grants WHERE actor = phigate.ctx_actor() ORDER BY (reviewed_at IS NOT NULL) ASC, granted_at ASC, id ASC LIMIT $1)
  ) g ORDER BY (reviewed_at IS NOT NULL) ASC, granted_at ASC, id ASC LIMIT $1`;
const clinicList = (n: number) => Array.from({ length: n }, (_, i) => `c-${i}`).join(',');
const PRINCIPALS =
  CLINICS === 10
    ? [
        { name: 'reviewer of a clinic of 20,000', actor: 'bench-compliance', roles: 'compliance', clinics: 'c-3' },
        { name: 'reviewer of three such clinics', actor: 'bench-compliance', roles: 'compliance', clinics: 'c-1,c-2,c-3' },
        { name: 'reviewer of a clinic of 5', actor: 'bench-compliance', roles: 'compliance', clinics: 'c-small' },
        { name: 'clinician with 400 grants', actor: 'dr-7', roles: 'physician', clinics: 'c-7' },
      ]
    : [
        { name: `reviewer of all ${CLINICS} clinics`, actor: 'bench-compliance', roles: 'compliance', clinics: clinicList(CLINICS) },
        { name: 'reviewer of 50 clinics', actor: 'bench-compliance', roles: 'compliance', clinics: clinicList(50) },
        { name: 'reviewer of one clinic', actor: 'bench-compliance', roles: 'compliance', clinics: 'c-3' },
      ];

const c = new pg.Client({ connectionString: db.app });
await c.connect();
const pid: number = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
const cpuMs = () => procStat(pid)?.cpuMs ?? Number.NaN;
// Named statements, as the gateway's pools prepare them, each planned once per connection.
let named = 0;
const statements = new Map<string, string>();
const tx = {
  query: (text: string, params: readonly unknown[] = []) => {
    if (!statements.has(text)) statements.set(text, `grant_queue_${named++}`);
    return c.query({ name: statements.get(text)!, text, values: [...params] });
  },
} as unknown as RequestTransaction;
const ALL_VARIANTS: Record<string, () => Promise<unknown>> = {
  before: () => tx.query(BEFORE, [false, 50]),
  fanout: () => tx.query(FANOUT, [50]),
  queue: () => listGrants(tx, { unreviewedOnly: false, from: null, backward: false, limit: 50 }),
};
const VARIANTS = Object.fromEntries(values.variants!.split(',').map((v) => [v, ALL_VARIANTS[v]!]));
if (values.jit !== undefined) await c.query(`SET jit = ${values.jit === 'off' ? 'off' : 'on'}`);

for (const p of PRINCIPALS) {
  await c.query('BEGIN READ ONLY');
  await c.query(
    `SELECT set_config('phigate.actor', $1, true), set_config('phigate.actor_kind', 'user', true), set_config('phigate.roles', $2, true),
            set_config('phigate.clinics', $3, true), set_config('plan_cache_mode', 'force_generic_plan', true)`,
    [p.actor, p.roles, p.clinics],
  );
  const perRound: Record<string, string[]> = Object.fromEntries(Object.keys(VARIANTS).map((v) => [v, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, read] of Object.entries(VARIANTS)) {
      const start = cpuMs();
      for (let i = 0; i < CALLS; i++) await read();
      perRound[name]!.push(((cpuMs() - start) / CALLS).toFixed(2));
    }
  }
  await c.query('ROLLBACK');
  console.log(`${p.name}: ms of backend CPU per page, each round: ${Object.entries(perRound).map(([v, r]) => `${v} ${r.join(' ')}`).join('; ')}`);
}
await c.end();
