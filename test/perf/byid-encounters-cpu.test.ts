import { bearer, describeCpuPerRequest, type Prepared } from './cpu-per-request.ts';

// The gateway's CPU per read by id that asks for the patient's encounters (one statement since
// branch left2, two before), in one process:
//   PHIGATE_PERF_BYID_ENCOUNTERS=1 TEST_DATABASE_URL=... npx vitest run test/perf/byid-encounters-cpu.test.ts
// with PHIGATE_PERF_OTHER, PHIGATE_PERF_PROFILE and PHIGATE_PERF_HEAP as in cpu-per-request.ts.

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName familyName encounters { id occurredAt kind reason diagnosisCodes notes } } }';

describeCpuPerRequest({
  label: 'BYID_ENCOUNTERS',
  enabledBy: 'PHIGATE_PERF_BYID_ENCOUNTERS',
  patients: 200,
  concurrency: Number(process.env.PHIGATE_PERF_CONCURRENCY ?? 8),
  warmup: Number(process.env.PHIGATE_PERF_WARMUP ?? 4_000),
  round: Number(process.env.PHIGATE_PERF_ROUND ?? 1_000),
  rounds: Number(process.env.PHIGATE_PERF_ROUNDS ?? 7),
  prepare: async (gw) => {
    // Seeded physicians, each reading the patients of its care teams.
    const requests: Prepared[] = [];
    for (const dr of gw.data.staff.filter((s) => s.roles.includes('physician'))) {
      const token = await gw.issuer.token({ sub: dr.sub, roles: [...dr.roles], clinics: [...dr.clinics], mfa: true });
      for (const p of gw.data.patients.filter((x) => x.careTeam.includes(dr.sub) && x.encounters.length > 0)) {
        requests.push(bearer(JSON.stringify({ query: BY_ID, variables: { id: p.id } }), token));
      }
    }
    return requests;
  },
  check: (body) => {
    const json = JSON.parse(body) as { errors?: unknown; data?: { patient?: { encounters?: unknown[] } } };
    return json.errors || !json.data?.patient?.encounters?.length ? 'no patient with encounters in the answer' : null;
  },
});
