import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Effect, PolicySet } from '../../../src/policy/types.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../../support/gateway.ts';
import {
  COLUMN,
  decryptDelta,
  ENCOUNTER_PHI,
  expectAbsentExcept,
  expectCleanErrors,
  expectedEffect,
  expectNoPhiInErrors,
  loadDefaultPolicy,
  maskSsn,
  PATIENT_PHI,
  PATIENT_SELECTION,
  snapshotDecrypts,
  zeroDelta,
  type PhiTypeName,
} from '../../support/phi-expect.ts';

// The role x field matrix of policies/default.yaml, over GraphQL against the real gateway.
// Expectations come from the policy FILE (parsed with the production loader, then interpreted
// here independently of src/policy/decide.ts) and are cross-checked against the contract's
// key facts, which are hard-coded below so that a drifting policy file cannot drag the test along.

let gw: TestGateway;
let policy: PolicySet;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
  policy = await loadDefaultPolicy();
});
afterAll(async () => gw?.close());

/** The contract's table (CONTRACT.md "Roles and the default policy"), written out by hand. */
const DEMOGRAPHICS = ['givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'] as const;
const CONTRACT_FACTS: Record<string, Record<string, Effect>> = {
  physician: { 'Patient.ssn': 'mask', 'Patient.mrn': 'allow', 'Encounter.notes': 'allow', 'Encounter.reason': 'allow', 'Encounter.diagnosisCodes': 'allow' },
  nurse: { 'Patient.ssn': 'mask', 'Patient.mrn': 'allow', 'Encounter.notes': 'deny', 'Encounter.reason': 'allow', 'Encounter.diagnosisCodes': 'allow' },
  registrar: {
    'Patient.ssn': 'allow',
    'Patient.mrn': 'allow',
    ...Object.fromEntries(DEMOGRAPHICS.map((f) => [`Patient.${f}`, 'allow' as const])),
    'Encounter.reason': 'deny',
    'Encounter.diagnosisCodes': 'deny',
    'Encounter.notes': 'deny',
  },
  billing: {
    'Patient.mrn': 'allow',
    ...Object.fromEntries(DEMOGRAPHICS.map((f) => [`Patient.${f}`, 'allow' as const])),
    'Patient.ssn': 'deny',
    'Encounter.diagnosisCodes': 'allow',
    'Encounter.reason': 'deny',
    'Encounter.notes': 'deny',
  },
  clinic_admin: Object.fromEntries(
    [...PATIENT_PHI.map((f) => `Patient.${f}`), ...ENCOUNTER_PHI.map((f) => `Encounter.${f}`)].map((k) => [k, 'deny' as const]),
  ),
  compliance: Object.fromEntries(
    [...PATIENT_PHI.map((f) => `Patient.${f}`), ...ENCOUNTER_PHI.map((f) => `Encounter.${f}`)].map((k) => [k, 'deny' as const]),
  ),
};
const CONTRACT_ROWS: Record<string, string> = {
  physician: 'care_team',
  nurse: 'care_team',
  registrar: 'clinic',
  billing: 'clinic',
  clinic_admin: 'clinic',
  compliance: 'none',
};

/** A seeded user of c-north for each role that sees rows. */
const USER_OF: Record<string, string> = {
  physician: 'dr-north-1',
  nurse: 'rn-north-1',
  registrar: 'reg-north',
  billing: 'bill-north',
  clinic_admin: 'admin-north',
};

const ONE = `query One($id: ID!) { patient(id: $id) { ${PATIENT_SELECTION} } }`;
const PAGE = `query Page { patients(first: 100) { edges { node { ${PATIENT_SELECTION} } } pageInfo { hasNextPage } } }`;

/** Seeded patients the principal may see, from the policy's row scopes (and the token's clinics). */
function visible(sub: string, roles: readonly string[], clinics: readonly string[]): SeedPatient[] {
  return gw.data.patients.filter(
    (p) =>
      clinics.includes(p.clinicId) &&
      roles.some((r) => {
        const rows = policy.roles.get(r)?.rows;
        return rows === 'clinic' || (rows === 'care_team' && p.careTeam.includes(sub));
      }),
  );
}

interface Checked {
  /** Decryptions the response justifies, per `table.column`. */
  readonly decrypts: Record<string, number>;
  /** Paths where a FIELD_DENIED error must be. */
  readonly deniedPaths: string[];
  /** Plaintext returned as allowed data. */
  readonly returned: Set<string>;
  /** Plaintext the principal must not have received (denied or masked fields). */
  readonly withheld: Set<string>;
}

const newChecked = (): Checked => ({ decrypts: zeroDelta(), deniedPaths: [], returned: new Set(), withheld: new Set() });

function checkField(
  out: Checked,
  path: readonly (string | number)[],
  type: PhiTypeName,
  field: string,
  actual: unknown,
  plain: string | readonly string[],
  effect: Effect,
): void {
  const where = `${path.join('.')} (${effect})`;
  const column = COLUMN[`${type}.${field}`];
  const plainTexts = typeof plain === 'string' ? [plain] : [...plain];
  if (effect === 'deny') {
    expect(actual, where).toBeNull();
    out.deniedPaths.push(JSON.stringify(path));
    for (const s of plainTexts) out.withheld.add(s);
    return;
  }
  if (column !== undefined) out.decrypts[column]! += 1;
  if (effect === 'mask') {
    expect(field, where).toBe('ssn');
    expect(actual, where).toBe(maskSsn(plain as string));
    expect(actual, where).toMatch(/^\*\*\*-\*\*-\d{4}$/);
    out.withheld.add(plain as string);
    out.withheld.add((plain as string).replace(/\D/g, ''));
    return;
  }
  expect(actual, where).toEqual(plain);
  for (const s of plainTexts) out.returned.add(s);
}

/** Checks one Patient node (and its encounters) against the seed and the policy. */
function checkPatient(out: Checked, node: any, prefix: readonly (string | number)[], seed: SeedPatient, sub: string, roles: readonly string[]): void {
  const onTeam = seed.careTeam.includes(sub);
  // The non-PHI rest of the result stands.
  expect(node.id).toBe(seed.id);
  expect(node.clinicId).toBe(seed.clinicId);
  for (const f of PATIENT_PHI) {
    checkField(out, [...prefix, f], 'Patient', f, node[f], seed[f], expectedEffect(policy, roles, onTeam, 'Patient', f).effect);
  }
  expect(node.encounters, `${seed.id} encounters`).toHaveLength(seed.encounters.length);
  node.encounters.forEach((e: any, i: number) => {
    const s = seed.encounters.find((x) => x.id === e.id);
    expect(s, `encounter ${e.id} is one of the patient's`).toBeDefined();
    expect(e.patientId).toBe(seed.id);
    for (const f of ENCOUNTER_PHI) {
      checkField(out, [...prefix, 'encounters', i, f], 'Encounter', f, e[f], s![f], expectedEffect(policy, roles, onTeam, 'Encounter', f).effect);
    }
  });
}

/** The errors are exactly the FIELD_DENIED errors at the denied paths; decryptions exactly as justified. */
function checkResponse(r: GqlResponse, out: Checked, delta: Record<string, number>): void {
  expect(r.status).toBe(200);
  const errors = r.body.errors ?? [];
  for (const e of errors) expect(e.extensions?.code, JSON.stringify(e.path)).toBe('FIELD_DENIED');
  expect(errors.map((e) => JSON.stringify(e.path)).sort()).toEqual([...out.deniedPaths].sort());
  // A denied column is never decrypted; an allowed or masked one once per value returned.
  expect(delta).toEqual(out.decrypts);
  expectCleanErrors(r);
  expectNoPhiInErrors(r, gw.data.patients);
  expectAbsentExcept(r.text, out.withheld, out.returned);
}

/** The hand-written contract facts, checked straight on the response values. */
function checkContractFacts(role: string, node: any, seed: SeedPatient): void {
  const facts = CONTRACT_FACTS[role]!;
  const value = (key: string, e?: any) => {
    const [type, field] = key.split('.') as [string, string];
    return type === 'Patient' ? node[field] : e[field];
  };
  for (const [key, effect] of Object.entries(facts)) {
    const [type, field] = key.split('.') as [string, string];
    if (type === 'Patient') {
      const plain = (seed as any)[field] as string;
      if (effect === 'deny') expect(value(key), `${role} ${key}`).toBeNull();
      else if (effect === 'mask') expect(value(key), `${role} ${key}`).toBe(`***-**-${seed.ssn.slice(-4)}`);
      else expect(value(key), `${role} ${key}`).toBe(plain);
    } else {
      expect(node.encounters.length).toBeGreaterThan(0);
      for (const e of node.encounters) {
        const plain = (seed.encounters.find((x) => x.id === e.id) as any)[field];
        if (effect === 'deny') expect(value(key, e), `${role} ${key}`).toBeNull();
        else expect(value(key, e), `${role} ${key}`).toEqual(plain);
      }
    }
  }
}

describe('the policy file agrees with the contract', () => {
  it('every hard-coded contract fact is what policies/default.yaml says', () => {
    for (const [role, facts] of Object.entries(CONTRACT_FACTS)) {
      const p = policy.roles.get(role);
      expect(p, role).toBeDefined();
      expect(p!.rows, `${role} rows`).toBe(CONTRACT_ROWS[role]);
      expect(p!.mfaRequired, `${role} mfa`).toBe(true);
      for (const [key, effect] of Object.entries(facts)) expect(p!.fields.get(key), `${role} ${key}`).toBe(effect);
    }
    // And the file decides every PHI field for every role it names (nothing by default).
    for (const [name, p] of policy.roles) {
      expect(p.fields.size, name).toBe(PATIENT_PHI.length + ENCOUNTER_PHI.length);
    }
  });
});

describe('role x field matrix over GraphQL', () => {
  for (const role of Object.keys(USER_OF)) {
    describe(role, () => {
      it('patient(id): every PHI field allowed / masked / denied as the policy says, decrypting only what is shown', async () => {
        const sub = USER_OF[role]!;
        const staff = gw.staff(sub);
        expect(staff.roles).toEqual([role]);
        const seen = visible(sub, staff.roles, staff.clinics);
        expect(seen.length, 'the seed gives this role patients to see').toBeGreaterThan(0);
        // The patient with the most encounters, so list positions are exercised.
        const seed = [...seen].sort((a, b) => b.encounters.length - a.encounters.length)[0]!;

        const token = await gw.tokenFor(sub);
        const before = snapshotDecrypts(gw);
        const r = await gw.gql(token, ONE, { id: seed.id });
        const delta = decryptDelta(before, snapshotDecrypts(gw));

        expect(r.body.data?.patient, JSON.stringify(r.body.errors)).not.toBeNull();
        const out = newChecked();
        checkPatient(out, r.body.data!.patient, ['patient'], seed, sub, staff.roles);
        checkResponse(r, out, delta);
        checkContractFacts(role, r.body.data!.patient, seed);
        // Something was actually checked in each direction the role has.
        const effects = new Set([...policy.roles.get(role)!.fields.values()]);
        if (effects.has('deny')) expect(out.deniedPaths.length).toBeGreaterThan(0);
        if (effects.has('allow')) expect(out.returned.size).toBeGreaterThan(0);
      });

      it('patients page: the same matrix on every visible patient, exact rows, exact decryptions', async () => {
        const sub = USER_OF[role]!;
        const staff = gw.staff(sub);
        const seen = visible(sub, staff.roles, staff.clinics);
        const token = await gw.tokenFor(sub);
        const before = snapshotDecrypts(gw);
        const r = await gw.gql(token, PAGE);
        const delta = decryptDelta(before, snapshotDecrypts(gw));

        expect(r.body.data?.patients, JSON.stringify(r.body.errors?.slice(0, 2))).toBeTruthy();
        const edges = r.body.data!.patients.edges as { node: any }[];
        expect(r.body.data!.patients.pageInfo.hasNextPage).toBe(false);
        expect(edges.map((e) => e.node.id).sort()).toEqual(seen.map((p) => p.id).sort());
        const out = newChecked();
        edges.forEach((edge, i) => {
          const seed = seen.find((p) => p.id === edge.node.id)!;
          checkPatient(out, edge.node, ['patients', 'edges', i, 'node'], seed, sub, staff.roles);
          checkContractFacts(role, edge.node, seed);
        });
        checkResponse(r, out, delta);
      });
    });
  }
});

describe('compliance and unknown roles see no patient', () => {
  it('compliance: patients and patient(id) are FORBIDDEN, nothing decrypted', async () => {
    const token = await gw.tokenFor('compliance-1');
    const seed = gw.data.patients[0]!;
    const before = snapshotDecrypts(gw);
    const page = await gw.gql(token, PAGE);
    const one = await gw.gql(token, ONE, { id: seed.id });
    expect(decryptDelta(before, snapshotDecrypts(gw))).toEqual(zeroDelta());

    expect(page.body.data ?? null).toBeNull();
    expect(page.body.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
    expect(page.body.errors?.[0]?.path).toEqual(['patients']);
    expect(one.body.data?.patient ?? null).toBeNull();
    expect(one.body.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
    for (const r of [page, one]) {
      expectCleanErrors(r);
      expectNoPhiInErrors(r, gw.data.patients);
      expectAbsentExcept(r.text, [seed.ssn, seed.mrn, seed.email, ...seed.encounters.map((e) => e.notes)]);
    }
  });

  it('a token whose roles are all unknown strings: FORBIDDEN (not MFA_REQUIRED), nothing decrypted', async () => {
    const seed = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
    for (const mfa of [true, false]) {
      // Near-misses and lookalikes of real role names grant nothing.
      const token = await gw.tokenFor('dr-north-1', { mfa, roles: ['Physician', 'doctor', 'registrar ', 'admin', '*'], clinics: ['c-north'] });
      const before = snapshotDecrypts(gw);
      const page = await gw.gql(token, PAGE);
      const one = await gw.gql(token, ONE, { id: seed.id });
      const me = await gw.gql(token, '{ me { subject roles } }');
      expect(decryptDelta(before, snapshotDecrypts(gw))).toEqual(zeroDelta());

      expect(page.body.data ?? null).toBeNull();
      expect(page.body.errors?.map((e) => e.extensions?.code), `mfa=${mfa}`).toEqual(['FORBIDDEN']);
      expect(one.body.data?.patient ?? null).toBeNull();
      expect(one.body.errors?.map((e) => e.extensions?.code), `mfa=${mfa}`).toEqual(['FORBIDDEN']);
      // The caller is authenticated, it just holds no role the policy knows.
      expect(me.body.errors).toBeUndefined();
      expect(me.body.data!.me).toEqual({ subject: 'dr-north-1', roles: [] });
      for (const r of [page, one]) {
        expectCleanErrors(r);
        expectNoPhiInErrors(r, gw.data.patients);
        expectAbsentExcept(r.text, [seed.ssn, seed.mrn, seed.givenName, seed.familyName, seed.email]);
      }
    }
  });
});

describe('several roles: the most generous effect among the roles that cover the row', () => {
  const sub = 'dr-north-1';
  const roles = ['registrar', 'physician'];

  it('a registrar who is also a physician sees notes only for care-team patients', async () => {
    const token = await gw.tokenFor(sub, { roles, clinics: ['c-north'] });
    const onTeam = gw.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(sub))!;
    const offTeam = gw.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(sub))!;
    expect(onTeam && offTeam).toBeTruthy();

    // Off the care team: only the registrar covers the row.
    let before = snapshotDecrypts(gw);
    const off = await gw.gql(token, ONE, { id: offTeam.id });
    let delta = decryptDelta(before, snapshotDecrypts(gw));
    let out = newChecked();
    checkPatient(out, off.body.data!.patient, ['patient'], offTeam, sub, roles);
    checkResponse(off, out, delta);
    // Hard-coded: full SSN (registrar), no clinical field, notes never decrypted.
    expect(off.body.data!.patient.ssn).toBe(offTeam.ssn);
    for (const e of off.body.data!.patient.encounters) {
      expect(e.notes).toBeNull();
      expect(e.reason).toBeNull();
      expect(e.diagnosisCodes).toBeNull();
    }
    expect(delta['encounters.notes']).toBe(0);
    expect(delta['encounters.reason']).toBe(0);
    const notesDenied = (off.body.errors ?? []).filter((e) => e.path?.at(-1) === 'notes');
    expect(notesDenied).toHaveLength(offTeam.encounters.length);
    for (const n of offTeam.encounters.map((e) => e.notes)) expect(off.text).not.toContain(n);

    // On the care team: the physician role covers the row too, and notes are shown.
    before = snapshotDecrypts(gw);
    const on = await gw.gql(token, ONE, { id: onTeam.id });
    delta = decryptDelta(before, snapshotDecrypts(gw));
    out = newChecked();
    checkPatient(out, on.body.data!.patient, ['patient'], onTeam, sub, roles);
    checkResponse(on, out, delta);
    expect(on.body.errors).toBeUndefined();
    expect(on.body.data!.patient.ssn).toBe(onTeam.ssn); // registrar's allow beats physician's mask
    expect(on.body.data!.patient.encounters.map((e: any) => e.notes).sort()).toEqual(onTeam.encounters.map((e) => e.notes).sort());
    expect(delta['encounters.notes']).toBe(onTeam.encounters.length);
  });

  it('the same user as a physician alone does not see the off-team patient at all', async () => {
    const token = await gw.tokenFor(sub, { roles: ['physician'], clinics: ['c-north'] });
    const offTeam = gw.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(sub))!;
    const before = snapshotDecrypts(gw);
    const r = await gw.gql(token, ONE, { id: offTeam.id });
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data).toEqual({ patient: null });
    expect(decryptDelta(before, snapshotDecrypts(gw))).toEqual(zeroDelta());
  });
});

describe('another clinic', () => {
  it('a c-north physician asking patient(id) of a c-south patient gets null, no error, no decryption', async () => {
    const token = await gw.tokenFor('dr-north-1');
    const south = gw.data.patients.filter((p) => p.clinicId === 'c-south');
    expect(south.length).toBeGreaterThan(1);
    for (const seed of south.slice(0, 3)) {
      const before = snapshotDecrypts(gw);
      const r = await gw.gql(token, ONE, { id: seed.id });
      expect(decryptDelta(before, snapshotDecrypts(gw))).toEqual(zeroDelta());
      expect(r.status).toBe(200);
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data).toEqual({ patient: null });
      expectAbsentExcept(r.text, [seed.ssn, seed.mrn, seed.givenName, seed.familyName, seed.email, ...seed.encounters.map((e) => e.notes)]);
    }
  });

  it('a c-north registrar cannot reach a c-south patient either, nor by claiming it on its care team', async () => {
    const seed = gw.data.patients.find((p) => p.clinicId === 'c-south')!;
    const southDoc = seed.careTeam.find((s) => s.startsWith('dr-'))!;
    // A token for the south patient's own physician, but whose clinics claim only c-north.
    for (const token of [await gw.tokenFor('reg-north'), await gw.tokenFor(southDoc, { clinics: ['c-north'] })]) {
      const before = snapshotDecrypts(gw);
      const r = await gw.gql(token, ONE, { id: seed.id });
      expect(decryptDelta(before, snapshotDecrypts(gw))).toEqual(zeroDelta());
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data).toEqual({ patient: null });
    }
  });
});
