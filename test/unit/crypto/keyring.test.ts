import { randomBytes } from 'node:crypto';
import { PhigateError } from '../../../src/errors.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import type { KeyProvider } from '../../../src/crypto/keys/provider.ts';
import { describeKeyring } from './keyring-contract.ts';

describeKeyring('local', async () => {
  const real = createLocalKeyProvider(randomBytes(32));
  let broken = false;
  const outage = (): never => {
    throw new PhigateError('KEY_UNAVAILABLE', 'injected outage', { reason: 'kms_error' });
  };
  // The real local provider, behind a switch that simulates an outage.
  const provider: KeyProvider = {
    name: real.name,
    keyRef: real.keyRef,
    generateDataKey: async (context) => (broken ? outage() : real.generateDataKey(context)),
    decryptDataKey: async (wrapped, context) => (broken ? outage() : real.decryptDataKey(wrapped, context)),
    wrapDataKey: async (plaintext, context) => (broken ? outage() : real.wrapDataKey(plaintext, context)),
  };
  return {
    provider,
    breakKms: async () => {
      broken = true;
    },
    repairKms: async () => {
      broken = false;
    },
    remoteCalls: () => null,
    close: async () => undefined,
  };
});
