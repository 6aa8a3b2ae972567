import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCheckpoint, parseCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { auditSigner } from '../../../../src/audit/log/from-config.ts';
import { openNote, parseVerifierKey, signNote, verifierKey } from '../../../../src/audit/log/note.ts';
import { kmsSigner } from '../../../../src/audit/log/signer.ts';
import { ConfigError, loadConfig } from '../../../../src/config.ts';
import { startFakeKms, type FakeKms } from '../../../support/fake-kms.ts';

// Checkpoints signed by a KMS asymmetric key through the real @aws-sdk/client-kms, against the
// loopback KMS endpoint: the private key never leaves the KMS; the public key comes from it.

const credentials = { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-access-key' };
let kms: FakeKms;
let keyId: string;
beforeAll(async () => {
  kms = await startFakeKms();
  const client = new KMSClient({ region: 'us-east-1', endpoint: kms.endpoint, credentials });
  const created = await client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_EDWARDS25519', KeyUsage: 'SIGN_VERIFY' }));
  keyId = created.KeyMetadata!.KeyId!;
});
afterAll(async () => kms?.close());

describe('kmsSigner', () => {
  it('signs a checkpoint with KMS Sign (ED25519_SHA_512, RAW) that verifies with the key from GetPublicKey', async () => {
    const signer = await kmsSigner({ keyId, region: 'us-east-1', endpoint: kms.endpoint, name: 'phigate.test/audit', credentials });
    const before = { ...kms.calls };
    const body = formatCheckpoint({ origin: 'phigate.test/audit', size: 42, root: Buffer.alloc(32, 7) });
    const note = await signNote(body, signer);
    expect(kms.calls.Sign).toBe(before.Sign + 1);
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    expect(parseCheckpoint(openNote(note, verifier)!)).toEqual({ origin: 'phigate.test/audit', size: 42, root: Buffer.alloc(32, 7) });
    expect(openNote(note.replace('\n42\n', '\n43\n'), verifier)).toBeNull();
  });

  it('is what PHIGATE_AUDIT_SIGNING_KMS_KEY_ID gives (PHIGATE_KMS=aws only), and an unknown key stops it; without it the file key signs', async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
    const env = {
      PHIGATE_KMS: 'aws',
      PHIGATE_KMS_KEY_ID: 'data-key',
      AWS_REGION: 'us-east-1',
      PHIGATE_KMS_ENDPOINT: kms.endpoint,
      PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: keyId,
      PHIGATE_AUDIT_LOG_ORIGIN: 'example.org/phigate',
    };
    const signer = await auditSigner(loadConfig(env));
    expect(signer.name).toBe('example.org/phigate');
    const direct = await kmsSigner({ keyId, region: 'us-east-1', endpoint: kms.endpoint, name: 'x', credentials });
    expect(signer.publicKey.equals(direct.publicKey)).toBe(true);
    await expect(auditSigner(loadConfig({ ...env, PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'no-such-key' }))).rejects.toThrow();
    expect(loadConfig({ ...env, PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: undefined }, '/srv').auditLog.signer).toEqual({ kind: 'file', file: '/srv/.phigate/audit-signing-key.pem' });
    expect(() => loadConfig({ PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: keyId })).toThrow(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: is only used with PHIGATE_KMS=aws/);
    expect(() => loadConfig({ ...env, PHIGATE_AUDIT_SIGNING_KEY_FILE: 'k.pem' })).toThrow(/^PHIGATE_AUDIT_SIGNING_KEY_FILE:/);
    expect(() => loadConfig({ PHIGATE_AUDIT_LOG_ORIGIN: 'has space' })).toThrow(/^PHIGATE_AUDIT_LOG_ORIGIN:/);
  });
});

describe('production with PHIGATE_KMS=aws signs in the KMS only', () => {
  const production = () => ({
    PHIGATE_ENV: 'production',
    DATABASE_URL: 'postgres://gw:pw@db.internal:5432/phigate?sslmode=verify-full',
    PHIGATE_OIDC_ISSUER: 'https://idp.example.org/realms/phigate',
    PHIGATE_KMS: 'aws',
    PHIGATE_KMS_KEY_ID: 'data-key',
    AWS_REGION: 'us-east-1',
    PHIGATE_KMS_ENDPOINT: kms.endpoint,
    PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: keyId,
  });
  const refusal = async (env: Record<string, string>): Promise<ConfigError> => {
    const err = await auditSigner(loadConfig(env, '/srv')).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  };

  it('refuses a configuration without PHIGATE_AUDIT_SIGNING_KMS_KEY_ID, never falling back to the file key; development keeps the file', () => {
    const { PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: _, ...without } = production();
    expect(() => loadConfig(without, '/srv')).toThrow(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: is required in production with PHIGATE_KMS=aws/);
    expect(() => loadConfig({ ...without, PHIGATE_AUDIT_SIGNING_KEY_FILE: '/srv/k.pem' }, '/srv')).toThrow(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: is required/);
    expect(loadConfig({ ...without, PHIGATE_ENV: 'development' }, '/srv').auditLog.signer).toEqual({ kind: 'file', file: '/srv/.phigate/audit-signing-key.pem' });
    expect(loadConfig(production(), '/srv').auditLog.signer).toEqual({ kind: 'kms', keyId });
  });

  it('starts with the Ed25519 KMS key: one GetPublicKey at start-up, then every checkpoint signed by KMS Sign', async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
    const before = { ...kms.calls };
    const signer = await auditSigner(loadConfig(production(), '/srv'));
    expect(kms.calls.GetPublicKey).toBe(before.GetPublicKey + 1);
    expect(kms.calls.Sign).toBe(before.Sign);
    const note = await signNote(formatCheckpoint({ origin: signer.name, size: 7, root: Buffer.alloc(32, 1) }), signer);
    expect(kms.calls.Sign).toBe(before.Sign + 1);
    expect(openNote(note, parseVerifierKey(verifierKey(signer.name, signer.publicKey))!)).not.toBeNull();
  });

  it('refuses to start with a KMS key of the wrong key spec, naming the variable and no key material', async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
    const client = new KMSClient({ region: 'us-east-1', endpoint: kms.endpoint, credentials });
    const p256 = (await client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
    const signs = kms.calls.Sign;
    const err = await refusal({ ...production(), PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: p256 });
    expect(err.variable).toBe('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID');
    expect(err.message).toMatch(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: the key is not an Ed25519 signing key \(key spec ECC_NIST_P256, key usage SIGN_VERIFY\)/);
    expect(err.message).not.toContain(p256);
    expect(err.message).not.toMatch(/[A-Za-z0-9+/]{40,}/);
    expect(kms.calls.Sign).toBe(signs);
  });

  it('refuses to start when GetPublicKey fails (unknown key, KMS unreachable), naming the variable and the error kind only', async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
    const unknown = await refusal({ ...production(), PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: 'no-such-key' });
    expect(unknown.message).toBe('PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: GetPublicKey failed (NotFoundException)');
    await kms.fail('http500');
    try {
      const down = await refusal(production());
      expect(down.message).toMatch(/^PHIGATE_AUDIT_SIGNING_KMS_KEY_ID: GetPublicKey failed \(\w+\)$/);
      expect(down.message).not.toContain(keyId);
    } finally {
      await kms.fail(null);
    }
  });
});
