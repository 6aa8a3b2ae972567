import { ConfigError, type Config } from '../../config.ts';
import type { NoteSigner } from './note.ts';
import { fileSigner, kmsSigner, KmsSigningKeyError, SigningKeyFileError } from './signer.ts';

/** The checkpoint signer the settings name; a key that cannot serve (file readable by others, KMS key unusable or not Ed25519) stops start-up naming the variable. */
/** `create: false` for commands that only read the log: a missing key file is an error, not a new key. */
export async function auditSigner(config: Config, opts: { readonly create?: boolean } = {}): Promise<NoteSigner> {
  const { signer, origin } = config.auditLog;
  if (signer.kind === 'kms') {
    if (config.kms.provider !== 'aws') throw new ConfigError('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID', 'is only used with PHIGATE_KMS=aws');
    try {
      return await kmsSigner({ keyId: signer.keyId, region: config.kms.region, endpoint: config.kms.endpoint, name: origin });
    } catch (err) {
      if (err instanceof KmsSigningKeyError) throw new ConfigError('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID', err.reason);
      throw err;
    }
  }
  try {
    return await fileSigner(signer.file, origin, opts);
  } catch (err) {
    if (err instanceof SigningKeyFileError) throw new ConfigError('PHIGATE_AUDIT_SIGNING_KEY_FILE', err.message);
    throw err;
  }
}
