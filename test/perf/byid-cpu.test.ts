import { bearer, describeCpuPerRequest, type Prepared } from './cpu-per-request.ts';

// The gateway's CPU per read by id, in one process (bench/README.md, "The gateway's own CPU per read
// by id, second round"):
//   PHIGATE_PERF_BYID=1 TEST_DATABASE_URL=... npx vitest run test/perf/byid-cpu.test.ts
// with PHIGATE_PERF_OTHER, PHIGATE_PERF_PROFILE and PHIGATE_PERF_HEAP as in cpu-per-request.ts.

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName familyName birthDate mrn } }';

describeCpuPerRequest({
  label: 'BYID',
  enabledBy: 'PHIGATE_PERF_BYID',
  patients: 200,
  concurrency: Number(process.env.PHIGATE_PERF_CONCURRENCY ?? 8),
  warmup: Number(process.env.PHIGATE_PERF_WARMUP ?? 6_000),
  round: Number(process.env.PHIGATE_PERF_ROUND ?? 1_500),
  rounds: Number(process.env.PHIGATE_PERF_ROUNDS ?? 7),
  prepare: async (gw) => {
    const north = gw.data.patients.filter((p) => p.clinicId === 'c-north');
    const requests: Prepared[] = [];
    for (let i = 0; i < 200; i++) {
      const token = await gw.issuer.token({ sub: `reg-perf-${i}`, roles: ['registrar'], clinics: ['c-north'], mfa: true });
      requests.push(bearer(JSON.stringify({ query: BY_ID, variables: { id: north[i % north.length]!.id } }), token));
    }
    return requests;
  },
  check: (body) => {
    const json = JSON.parse(body) as { errors?: unknown; data?: { patient?: unknown } };
    return json.errors || !json.data?.patient ? 'no patient in the answer' : null;
  },
});
