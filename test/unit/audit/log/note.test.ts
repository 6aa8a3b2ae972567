import { generateKeyPairSync, sign } from 'node:crypto';
import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatCheckpoint, parseCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, signNote, verifierKey, type NoteSigner } from '../../../../src/audit/log/note.ts';
import { fileSigner, SigningKeyFileError } from '../../../../src/audit/log/signer.ts';

function memorySigner(name: string): NoteSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name, publicKey: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'), sign: async (m) => sign(null, m, privateKey) };
}

describe('signed notes (C2SP signed-note, Ed25519)', () => {
  it('verifies the Go sumdb/note example, so our key hash and encoding are the standard ones', () => {
    const verifier = parseVerifierKey('PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW')!;
    const note =
      "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    expect(openNote(note, verifier)).toBe("If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n");
    expect(openNote(note.replace('answer', 'Answer'), verifier)).toBeNull();
  });

  it('signs a checkpoint that opens with the public key alone, and refuses an edited one or another key', async () => {
    const signer = memorySigner('phigate.test/audit');
    const checkpoint = formatCheckpoint({ origin: 'phigate.test/audit', size: 42, root: Buffer.alloc(32, 7) });
    const note = await signNote(checkpoint, signer);
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    expect(parseCheckpoint(openNote(note, verifier)!)).toEqual({ origin: 'phigate.test/audit', size: 42, root: Buffer.alloc(32, 7) });
    expect(openNote(note.replace('\n42\n', '\n43\n'), verifier)).toBeNull();
    const other = memorySigner('phigate.test/audit');
    expect(openNote(note, parseVerifierKey(verifierKey(other.name, other.publicKey))!)).toBeNull();
  });

  it('refuses malformed checkpoints and verifier keys', () => {
    expect(parseCheckpoint('o\n01\nAAAA\n')).toBeNull();
    expect(parseCheckpoint(`o\n1\n${Buffer.alloc(31).toString('base64')}\n`)).toBeNull();
    expect(parseCheckpoint(`o\n1\n${Buffer.alloc(32).toString('base64')}`)).toBeNull();
    expect(parseVerifierKey('name+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW')).toBeNull();
    expect(() => formatCheckpoint({ origin: 'two\nlines', size: 1, root: Buffer.alloc(32) })).toThrow();
  });

  it('keeps the development signing key in a 0600 file and reuses it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'phigate-signer-'));
    try {
      const file = path.join(dir, 'keys', 'audit-signing.pem');
      // A command that only reads the log (verify, public-key) never makes a key of its own.
      await expect(fileSigner(file, 'phigate.test/audit', { create: false })).rejects.toThrow('does not exist');
      await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
      const a = await fileSigner(file, 'phigate.test/audit');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const b = await fileSigner(file, 'phigate.test/audit');
      expect(b.publicKey.equals(a.publicKey)).toBe(true);
      // Replicas starting together on one data directory: every one gets the same, whole key. The
      // loser of a round reads the winner's file at some point of its writing: rounds give it many.
      for (let round = 0; round < 200; round++) {
        const racers = path.join(dir, `race-${round}`, 'audit-signing.pem');
        const signers = await Promise.all([0, 1].map(() => fileSigner(racers, 'phigate.test/audit')));
        expect(signers[1]!.publicKey.equals(signers[0]!.publicKey)).toBe(true);
        expect(await readdir(path.dirname(racers))).toEqual(['audit-signing.pem']);
      }
      await chmod(file, 0o640);
      await expect(fileSigner(file, 'phigate.test/audit')).rejects.toBeInstanceOf(SigningKeyFileError);
      expect((await stat(file)).mode & 0o777).toBe(0o640);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
