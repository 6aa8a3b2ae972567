import type { Config } from '../../config.ts';
import { createLocalKeyProvider, loadOrCreateLocalMasterKey } from './local.ts';
import type { KeyProvider } from './provider.ts';

export async function keyProviderFromConfig(config: Config): Promise<KeyProvider> {
  if (config.kms.provider === 'aws') {
    // The AWS SDK is loaded only where it is configured: otherwise ~2.5 MB of live heap for the process's life, up to 1.5x that at the old space's peak (src/heap.ts).
    const { createAwsKeyProvider } = await import('./aws.ts');
    return createAwsKeyProvider({ keyId: config.kms.keyId, region: config.kms.region, endpoint: config.kms.endpoint });
  }
  return createLocalKeyProvider(await loadOrCreateLocalMasterKey(config.dataDir, config.kms.masterKeyBase64));
}
