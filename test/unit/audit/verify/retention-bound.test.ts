import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formatCheckpoint } from '../../../../src/audit/log/checkpoint.ts';
import { parseVerifierKey, signNote, verifierKey, type NoteSigner } from '../../../../src/audit/log/note.ts';
import { chooseRetentionBound, CheckpointUnverifiedError } from '../../../../src/audit/verify/retention-bound.ts';
import type { CheckpointRow } from '../../../../src/audit/verify/signed-checkpoint.ts';

// Where a retention run may end, from the checkpoints alone: the largest whose signature checks out
// and whose signed time (never earlier than a smaller one's) is before the cutoff. An untimed
// checkpoint bounds nothing, and one that does not check out refuses the run.

const ORIGIN = 'phigate.test/retain-unit';
function memorySigner(name: string): NoteSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name, publicKey: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'), sign: async (m) => sign(null, m, privateKey) };
}
const signer = memorySigner(ORIGIN);
const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
const cutoff = new Date('2020-01-01T00:00:00.000Z');
const old = (days: number) => cutoff.getTime() - days * 86_400_000;

async function row(size: number, time: number | undefined, by: NoteSigner = signer): Promise<CheckpointRow> {
  const root = Buffer.alloc(32, size);
  const note = await signNote(formatCheckpoint(time === undefined ? { origin: ORIGIN, size, root } : { origin: ORIGIN, size, root, time }), by);
  return { tree_size: String(size), origin: ORIGIN, root, note };
}

describe('the checkpoint a retention run may end at', () => {
  it('is the largest signed before the cutoff; none when every one is younger', async () => {
    const rows = [await row(3, old(30)), await row(7, old(2)), await row(9, cutoff.getTime()), await row(12, old(-5))];
    expect(chooseRetentionBound(rows, verifier, cutoff)).toMatchObject({ checkpoint: { size: 7, time: old(2), note: rows[1]!.note }, untimed: 0 });
    expect(chooseRetentionBound(rows.slice(2), verifier, cutoff)).toEqual({ checkpoint: null, untimed: 0 });
  });

  it('takes a time no earlier than a smaller checkpoint\'s: a later one dated back bounds nothing past it', async () => {
    const rows = [await row(3, old(30)), await row(7, old(-1)), await row(9, old(400))];
    expect(chooseRetentionBound(rows, verifier, cutoff).checkpoint).toMatchObject({ size: 3 });
  });

  it('takes no bound from a checkpoint without a time, and counts those past the bound', async () => {
    expect(chooseRetentionBound([await row(4, undefined), await row(6, undefined)], verifier, cutoff)).toEqual({ checkpoint: null, untimed: 2 });
    const rows = [await row(4, undefined), await row(6, old(10)), await row(8, undefined)];
    expect(chooseRetentionBound(rows, verifier, cutoff)).toMatchObject({ checkpoint: { size: 6 }, untimed: 1 });
  });

  it('refuses when any checkpoint does not check out: another key, an edited note, a row that differs from its note', async () => {
    const good = await row(5, old(10));
    const cases: [CheckpointRow, string][] = [
      [await row(8, old(5), memorySigner(ORIGIN)), 'checkpoint_signature'],
      [{ ...good, tree_size: '8', note: good.note.replace('\n5\n', '\n8\n') }, 'checkpoint_signature'],
      [{ ...(await row(8, old(5))), root: Buffer.alloc(32, 1) }, 'checkpoint_row'],
    ];
    for (const [bad, kind] of cases) {
      const err = (() => {
        try {
          chooseRetentionBound([good, bad], verifier, cutoff);
          return null;
        } catch (e) {
          return e;
        }
      })();
      expect(err, kind).toBeInstanceOf(CheckpointUnverifiedError);
      expect(err).toMatchObject({ size: 8, kind, code: 'CHECKPOINT_UNVERIFIED' });
    }
  });
});
