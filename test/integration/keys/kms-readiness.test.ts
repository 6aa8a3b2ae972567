import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createAwsKeyProvider } from '../../../src/crypto/keys/aws.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { startFakeKms, type FakeKms } from '../../support/fake-kms.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { createMemoryKeyStore } from '../../unit/crypto/keyring-contract.ts';

// Issue 14, item 7, over HTTP: /readyz while the loopback KMS is stopped and started again.
let kms: FakeKms;
let gw: TestGateway;
beforeAll(async () => {
  kms = await startFakeKms();
  const provider = createAwsKeyProvider({
    keyId: '1234abcd-12ab-34cd-56ef-1234567890ab',
    region: 'us-east-1',
    endpoint: kms.endpoint,
    credentials: { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-access-key' },
  });
  const keyring = createKeyring({ provider, store: createMemoryKeyStore() });
  await keyring.blindIndexKey('patients.ssn', 'c-north');
  gw = await startTestGateway({ patients: 2, gatewayOptions: { keyring, cipher: createFieldCipher(keyring) } });
});
afterAll(async () => {
  await gw?.close();
  await kms?.close();
});

const readyz = async () => {
  const res = await fetch(gw.url.replace(/\/graphql$/, '/readyz'));
  return { status: res.status, body: (await res.json()) as { ready: boolean; degraded?: boolean; checks: Record<string, string> } };
};

/** /readyz until `until` holds; the checks are cached for 2 s, so a change shows within a few polls. */
async function pollReadyz(until: (r: Awaited<ReturnType<typeof readyz>>) => boolean) {
  for (let i = 0; i < 60; i++) {
    const r = await readyz();
    if (until(r)) return r;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error('readyz never reached the expected state');
}

describe('/readyz and the KMS', () => {
  it('says the KMS is down (degraded, still serving with cached keys), then recovers by itself', async () => {
    expect((await pollReadyz((r) => r.body.checks.kms === 'ok')).body).toMatchObject({ ready: true, checks: { keys: 'ok', kms: 'ok' } });
    await kms.fail('refuse');
    const down = await pollReadyz((r) => r.body.checks.kms === 'unavailable');
    expect(down.status).toBe(200);
    expect(down.body).toMatchObject({ ready: true, degraded: true, checks: { keys: 'ok', kms: 'unavailable' } });
    await kms.fail(null);
    const back = await pollReadyz((r) => r.body.checks.kms === 'ok');
    expect(back.body).toEqual({ ready: true, checks: { database: 'ok', keys: 'ok', kms: 'ok', issuer: 'ok' } });
  });
});
