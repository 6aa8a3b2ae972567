/**
 * The floor: the same rows from the plaintext copy (bench_plain) with `pg` in a bare node:http
 * handler, as the same login role under the same row security. No GraphQL, no token verification
 * (the JWT payload is only decoded for the identity), no crypto, no audit. Each request is one
 * round trip: BEGIN, set_config of the identity, the SELECT (or UPDATE) and COMMIT travel as one
 * simple-protocol message.
 */
import http from 'node:http';
import pg from 'pg';
import { PHI_CATALOGUE } from '../../src/policy/phi-fields.ts';

interface FloorConfig {
  appUrl: string;
  poolSize: number;
}
const cfg = JSON.parse(process.env.BENCH_TARGET ?? '{}') as FloorConfig;
const pool = new pg.Pool({ connectionString: cfg.appUrl, max: cfg.poolSize });
const lit = (v: string) => pg.Client.prototype.escapeLiteral(v);

// Each PHI column under its GraphQL field name, as phigate and PostGraphile answer.
const PATIENT = ['p.id', 'p.clinic_id AS "clinicId"']
  .concat(PHI_CATALOGUE.filter((s) => s.type === 'Patient').map((s) => (s.column === s.field ? `p.${s.column}` : `p.${s.column} AS "${s.field}"`)))
  .join(', ');

function identity(auth: string | undefined): string {
  const token = auth?.replace(/^Bearer /, '') ?? '';
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub: string; roles: string[]; clinics: string[] };
  return `BEGIN; SELECT set_config('phigate.actor', ${lit(claims.sub)}, true), set_config('phigate.roles', ${lit(claims.roles.join(','))}, true),
    set_config('phigate.clinics', ${lit(claims.clinics.join(','))}, true);`;
}

function sqlFor(url: URL): { sql: string; one: boolean } | null {
  const q = (k: string) => lit(url.searchParams.get(k) ?? '');
  switch (url.pathname) {
    case '/patient':
      return { sql: `SELECT ${PATIENT} FROM bench_plain.patients p WHERE p.id = ${q('id')}::uuid`, one: true };
    case '/by-ssn':
      return { sql: `SELECT ${PATIENT} FROM bench_plain.patients p WHERE p.ssn = ${q('ssn')} LIMIT 1`, one: true };
    case '/patients': {
      const first = Math.min(100, Number(url.searchParams.get('first') ?? 100));
      return {
        sql: `SELECT ${PATIENT}, (SELECT coalesce(json_agg(json_build_object('id', e.id, 'occurredAt', e.occurred_at, 'kind', e.kind) ORDER BY e.occurred_at DESC), '[]')
          FROM bench_plain.encounters e WHERE e.patient_id = p.id) AS encounters
          FROM bench_plain.patients p ORDER BY p.id LIMIT ${first}`,
        one: false,
      };
    }
    case '/update-phone':
      return { sql: `UPDATE bench_plain.patients p SET phone = ${q('phone')} WHERE p.id = ${q('id')}::uuid RETURNING p.id, p.phone, p.email`, one: true };
    default:
      return null;
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const q = sqlFor(url);
  if (!q) return void res.writeHead(404).end();
  let sql: string;
  try {
    sql = `${identity(req.headers.authorization)} ${q.sql}; COMMIT`;
  } catch {
    return void res.writeHead(401).end();
  }
  req.resume();
  pool.query(sql).then(
    (results) => {
      const rows = (results as unknown as pg.QueryResult[])[2]!.rows;
      const body = q.one ? { patient: rows[0] ?? null } : { patients: rows };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    },
    (err: Error) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ message: err.message }] })),
  );
});
server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as import('node:net').AddressInfo).port }));
process.on('SIGTERM', () => server.close(() => void pool.end().finally(() => process.exit(0))));
