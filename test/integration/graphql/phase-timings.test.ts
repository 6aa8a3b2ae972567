import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHASES } from '../../../src/telemetry/phases.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// GatewayDeps.phaseTimings (the bench's p99 analysis, bench/p99-phases.ts): the summary line says
// when the request passed each seam; a gateway built without it writes the line as before.

let timed: TestGateway;
let plain: TestGateway;
beforeAll(async () => {
  timed = await startTestGateway({ patients: 12, gatewayOptions: { phaseTimings: true } });
  plain = await startTestGateway({ replicaOf: timed });
});
afterAll(async () => {
  await plain?.close();
  await timed?.close();
});

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName ssn } }';
const at = (phases: number[], name: (typeof PHASES)[number]) => phases[PHASES.indexOf(name)]!;

describe('phase timings on the summary line', () => {
  it('a read by id passes every seam, in order', async () => {
    const token = await timed.tokenFor('reg-north');
    const id = timed.data.patients.find((p) => p.clinicId === 'c-north')!.id;
    const r = await timed.gql(token, BY_ID, { id });
    expect(r.body.errors).toBeUndefined();
    const line = timed.lastRequestLog()!;
    expect(line).toMatchObject({ outcome: 'committed', requestId: r.headers.get('x-request-id') });
    const phases = line.phasesMs as number[];
    expect(phases).toHaveLength(PHASES.length);
    expect(phases.every((ms) => ms >= 0)).toBe(true);
    const order = ['contextMade', 'admitted', 'connectAsked', 'connected', 'executed', 'writing', 'written'] as const;
    for (let i = 1; i < order.length; i++) expect(at(phases, order[i]!)).toBeGreaterThanOrEqual(at(phases, order[i - 1]!));
    expect(at(phases, 'committed')).toBeGreaterThanOrEqual(at(phases, 'connected'));
    expect(line.durationMs).toBeGreaterThanOrEqual(at(phases, 'written'));
  });

  it('a query that touches no data takes no connection and writes no entry: those moments are -1', async () => {
    const r = await timed.gql(await timed.tokenFor('reg-north'), '{ me { subject } }');
    expect(r.body.data?.me?.subject).toBe('reg-north');
    const phases = timed.lastRequestLog()!.phasesMs as number[];
    for (const name of ['connectAsked', 'connected', 'writing', 'written'] as const) expect(at(phases, name)).toBe(-1);
    expect(at(phases, 'executed')).toBeGreaterThanOrEqual(at(phases, 'admitted'));
  });

  it('without phaseTimings the summary line carries none', async () => {
    const token = await plain.tokenFor('reg-north');
    const r = await plain.gql(token, BY_ID, { id: plain.data.patients.find((p) => p.clinicId === 'c-north')!.id });
    expect(r.body.errors).toBeUndefined();
    const line = plain.lastRequestLog()!;
    expect(line.outcome).toBe('committed');
    expect(line).not.toHaveProperty('phasesMs');
  });
});
