import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { bearer, describeCpuPerRequest, type Prepared } from './cpu-per-request.ts';

// The gateway's CPU per page, `patients(first: 100)` with encounters as the bench's page workload asks
// it (bench/README.md, "The gateway's CPU per page (branch pagegw)"), in one process:
//   PHIGATE_PERF_PAGE=1 TEST_DATABASE_URL=... npx vitest run test/perf/page-cpu.test.ts
// with PHIGATE_PERF_OTHER, PHIGATE_PERF_PROFILE and PHIGATE_PERF_HEAP as in cpu-per-request.ts.

const PAGE = `query PatientPage { patients(first: 100) { edges { node { ${['id', 'clinicId', ...PHI_FIELDS.Patient].join(' ')} encounters { id occurredAt kind } } } pageInfo { hasNextPage endCursor } } }`;

describeCpuPerRequest({
  label: 'PAGE',
  enabledBy: 'PHIGATE_PERF_PAGE',
  // Three clinics: a registrar of one sees a third of them, so 360 gives each page 100 patients.
  patients: 360,
  concurrency: Number(process.env.PHIGATE_PERF_CONCURRENCY ?? 4),
  warmup: Number(process.env.PHIGATE_PERF_WARMUP ?? 400),
  round: Number(process.env.PHIGATE_PERF_ROUND ?? 100),
  rounds: Number(process.env.PHIGATE_PERF_ROUNDS ?? 7),
  prepare: async (gw) => {
    const requests: Prepared[] = [];
    for (let i = 0; i < 50; i++) {
      const token = await gw.issuer.token({ sub: `reg-perf-${i}`, roles: ['registrar'], clinics: ['c-north'], mfa: true });
      requests.push(bearer(JSON.stringify({ query: PAGE }), token));
    }
    return requests;
  },
  check: (body) => {
    const json = JSON.parse(body) as { errors?: unknown; data?: { patients?: { edges?: unknown[] } } };
    if (json.errors) return JSON.stringify(json.errors).slice(0, 300);
    return json.data?.patients?.edges?.length === 100 ? null : 'not 100 patients';
  },
});
