import { expect } from 'vitest';
import type { TestGateway } from '../support/gateway.ts';

/** A response as a browser or an attacker's script sees it: status, headers, raw text. */
export interface RawResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The parsed body, or null when it is not JSON. */
  readonly json: { data?: Record<string, any> | null; errors?: { message: string; extensions?: Record<string, any> }[] } | null;
}

export async function send(url: string, init: RequestInit & { duplex?: 'half' } = {}): Promise<RawResponse> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: RawResponse['json'] = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POST of a JSON body (any value, so that batches and persisted-document requests fit). */
export const postJson = (gw: TestGateway, body: unknown, token: string | null, headers: Record<string, string> = {}) =>
  send(gw.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

export const codes = (r: RawResponse): unknown[] => r.json?.errors?.map((e) => e.extensions?.code) ?? [];
export const reasons = (r: RawResponse): unknown[] => r.json?.errors?.map((e) => e.extensions?.reason) ?? [];

/**
 * Remembers what the gateway had done so far; `expectUntouched` then asserts that a refused
 * request reached no resolver: no request-summary line (the transaction plugin logs one for every
 * executed operation), no decryption, no key use, no audit row.
 */
export async function watch(gw: TestGateway) {
  const requests = () => gw.logs.filter((l) => l.msg === 'request').length;
  const keyUse = () => gw.keyring.stats.cacheHits + gw.keyring.stats.cacheMisses + gw.keyring.stats.kmsCalls;
  // A refusal's own `refused` row is the refusal trail's (refusals.test.ts), not a record touched;
  // an `alert` row is the periodic sweep's. Rows of requests sent before the watch began may land
  // inside it on a loaded machine (one did: 78 rows for 77), and are not the watched request's.
  const earlier = new Set(gw.logs.map((l) => l.requestId).filter((id) => typeof id === 'string'));
  const auditRows = async () => (await gw.auditRows(`action NOT IN ('refused', 'alert')`)).filter((r) => !earlier.has(r.request_id)).length;
  const before = { requests: requests(), decrypts: gw.cipher.stats.decrypts, keyUse: keyUse(), audit: await auditRows() };
  return {
    async expectUntouched() {
      expect(requests(), 'request-summary log lines').toBe(before.requests);
      expect(gw.cipher.stats.decrypts, 'decryptions').toBe(before.decrypts);
      expect(keyUse(), 'keyring use').toBe(before.keyUse);
      expect(await auditRows(), 'audit rows').toBe(before.audit);
    },
  };
}

/** No value of any seeded patient's PHI appears in the text. */
export function expectNoPhi(gw: TestGateway, text: string) {
  for (const p of gw.data.patients) {
    for (const v of [p.ssn, p.ssn.replace(/-/g, ''), p.mrn, p.email, p.address, p.phone]) if (v) expect(text).not.toContain(v);
  }
}
