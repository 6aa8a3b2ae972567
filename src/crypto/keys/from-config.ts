import type { Config } from '../../config.ts';
import { createAwsKeyProvider } from './aws.ts';
import { createLocalKeyProvider, loadOrCreateLocalMasterKey } from './local.ts';
import type { KeyProvider } from './provider.ts';

export async function keyProviderFromConfig(config: Config): Promise<KeyProvider> {
  if (config.kms.provider === 'aws') {
    return createAwsKeyProvider({ keyId: config.kms.keyId, region: config.kms.region, endpoint: config.kms.endpoint });
  }
  return createLocalKeyProvider(await loadOrCreateLocalMasterKey(config.dataDir, config.kms.masterKeyBase64));
}
