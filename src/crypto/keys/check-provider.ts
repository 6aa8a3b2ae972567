import { ConfigError } from '../../config.ts';
import type { KeyProvider } from './provider.ts';

// Its own purpose: a wrapped key made here can never pass for a data key of any clinic.
const CHECK_CONTEXT = { purpose: 'startup-check', scope: '*', version: '0' } as const;

/**
 * Start-up check of the master key: a real GenerateDataKey and Decrypt round trip through the
 * provider. Refuses with a ConfigError naming `variable` and the provider's error name (never a
 * key, a wrapped blob or the service's message, which may carry the key's ARN and account).
 */
export async function assertKeyUsable(provider: KeyProvider, variable: string): Promise<void> {
  let generated: { plaintext: Buffer; wrapped: Buffer } | undefined;
  let same: boolean;
  try {
    generated = await provider.generateDataKey(CHECK_CONTEXT);
    const back = await provider.decryptDataKey(generated.wrapped, CHECK_CONTEXT);
    same = back.equals(generated.plaintext);
    back.fill(0);
  } catch (e) {
    const cause = (e as { cause?: unknown }).cause;
    const name = cause instanceof Error && /^[A-Za-z]{1,64}$/.test(cause.name) ? cause.name : 'unknown error';
    throw new ConfigError(variable, `the ${provider.name} key service cannot use the master key (${name}); start-up refused`);
  } finally {
    generated?.plaintext.fill(0);
  }
  if (!same) throw new ConfigError(variable, `the ${provider.name} key service returned a different key than it wrapped; start-up refused`);
}
