import { bearer, describeCpuPerRequest, type Prepared } from './cpu-per-request.ts';

// The gateway's CPU per `patientBySsn` at one connection, as the bench's by-SSN workload asks it
// (bench/README.md, "The gateway's own steps on the by-SSN path"), in one process:
//   PHIGATE_PERF_BYSSN=1 TEST_DATABASE_URL=... npx vitest run test/perf/byssn-cpu.test.ts
// with PHIGATE_PERF_OTHER, PHIGATE_PERF_PROFILE and PHIGATE_PERF_HEAP as in cpu-per-request.ts.

const BY_SSN = 'query PatientBySsn($ssn: String!) { patientBySsn(ssn: $ssn) { id clinicId mrn ssn givenName familyName } }';

describeCpuPerRequest({
  label: 'BYSSN',
  enabledBy: 'PHIGATE_PERF_BYSSN',
  patients: 200,
  concurrency: Number(process.env.PHIGATE_PERF_CONCURRENCY ?? 1),
  warmup: Number(process.env.PHIGATE_PERF_WARMUP ?? 3_000),
  round: Number(process.env.PHIGATE_PERF_ROUND ?? 1_000),
  rounds: Number(process.env.PHIGATE_PERF_ROUNDS ?? 7),
  prepare: async (gw) => {
    const north = gw.data.patients.filter((p) => p.clinicId === 'c-north');
    // A search finds one patient only where its SSN is the clinic's only one.
    const ssns = north.map((p) => p.ssn).filter((s, _i, all) => all.filter((t) => t === s).length === 1);
    const requests: Prepared[] = [];
    for (let i = 0; i < 200; i++) {
      const token = await gw.issuer.token({ sub: `reg-perf-${i}`, roles: ['registrar'], clinics: ['c-north'], mfa: true });
      requests.push(bearer(JSON.stringify({ query: BY_SSN, variables: { ssn: ssns[i % ssns.length]! } }), token));
    }
    return requests;
  },
  check: (body) => {
    const json = JSON.parse(body) as { errors?: unknown; data?: { patientBySsn?: { ssn?: unknown } | null } };
    if (json.errors) return JSON.stringify(json.errors).slice(0, 300);
    return typeof json.data?.patientBySsn?.ssn === 'string' ? null : 'no patient in the answer';
  },
});
