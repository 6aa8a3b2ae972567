import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCheckpoint, parseCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { auditSigner } from '../../../../src/audit/log/from-config.ts';
import { openNote, parseVerifierKey, signNote, verifierKey } from '../../../../src/audit/log/note.ts';
import { kmsSigner } from '../../../../src/audit/log/signer.ts';
import { loadConfig } from '../../../../src/config.ts';
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
