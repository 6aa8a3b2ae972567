import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { PATIENT_SELECTION } from '../../support/phi-expect.ts';

// A document served through views (src/graphql/views.ts) answers and audits as the same document
// served by the schema's resolvers: `@include(if: true)` on its root field keeps a document out of
// the views and changes nothing else. Compared for every role that reads PHI, on a page and a
// lookup, with denied and masked fields among them.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 24 });
});
afterAll(async () => gw?.close());

const PAGE = (d: string) => `query Page { patients(first: 100)${d} { edges { cursor node { ${PATIENT_SELECTION} } } pageInfo { hasNextPage endCursor } } }`;
const ONE = (d: string) => `query One($id: ID!) { patient(id: $id)${d} { ${PATIENT_SELECTION} } }`;
const FACTS = ['actor', 'actor_kind', 'role', 'purpose', 'break_glass', 'action', 'type_name', 'field', 'patient_id', 'record_id', 'detail'];

async function served(sub: string, query: string, variables?: Record<string, unknown>) {
  const r = await gw.gql(await gw.tokenFor(sub), query, variables);
  const rows = await gw.auditRows('request_id = $1', [r.headers.get('x-request-id')]);
  return { status: r.status, body: r.body, rows: rows.map((row) => FACTS.map((f) => row[f])) };
}

describe('views answer and audit as resolvers do', () => {
  for (const sub of ['dr-north-1', 'rn-north-1', 'reg-north', 'bill-north']) {
    it(`${sub}: the page and a lookup, the same body and the same audit rows in the same order`, async () => {
      const viewed = await served(sub, PAGE(''));
      const resolved = await served(sub, PAGE(' @include(if: true)'));
      expect(viewed.body.data?.patients.edges.length).toBeGreaterThan(0);
      expect(viewed.rows.length).toBeGreaterThan(0);
      expect(viewed).toEqual(resolved);
      const id = (viewed.body.data!.patients.edges[0] as { node: { id: string } }).node.id;
      const one = await served(sub, ONE(''), { id });
      expect(one.rows.length).toBeGreaterThan(0);
      expect(one).toEqual(await served(sub, ONE(' @include(if: true)'), { id }));
    });
  }
});
