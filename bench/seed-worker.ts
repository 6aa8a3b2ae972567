/**
 * The bench's seeding worker threads (started by bench/setup-db.ts): each generates the data set
 * (src/seed/dataset.ts, streamed) and seals its share of the batches (src/seed/write.ts
 * `sealBatch`, the code every other writer of synthetic data uses) while the main thread writes
 * earlier batches.
 *
 * Each batch posted holds the sealed parameters for phigate.*, the same rows in plaintext for
 * bench_plain.*, and what the bench needs to pick actors and rows (ids, SSNs, care teams). At
 * most `credit` batches are ahead of the writer: the main thread posts 'more' for each one written.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { DataKey } from '../src/crypto/envelope.ts';
import { patientsOf, type SeedPatient } from '../src/seed/dataset.ts';
import { arrayLiteral, sealBatch, SEED_PHI, type SealedBatch, type SeedKeys } from '../src/seed/write.ts';

export interface SeedWorkerInput {
  readonly patients: number;
  readonly seed: number;
  readonly batchSize: number;
  readonly credit: number;
  readonly keys: SeedKeys;
  /** this thread seals batches number `worker`, `worker + workers`, ... of the data set */
  readonly worker: number;
  readonly workers: number;
}

/** The plaintext rows of a batch, as array literals for bench_plain's INSERTs. */
export interface PlainBatch {
  readonly patientParams: readonly string[];
  readonly encounterParams: readonly string[];
}

/** Per patient, what bench/workloads.ts `collectActors` keeps. */
export interface BatchActors {
  readonly ids: readonly string[];
  readonly clinicIds: readonly string[];
  readonly ssns: readonly string[];
  readonly careTeams: readonly (readonly string[])[];
}

export type SeedWorkerMessage =
  | { readonly kind: 'batch'; readonly sealed: SealedBatch; readonly plain: PlainBatch; readonly actors: BatchActors; readonly encounters: number; readonly busyMs: number }
  | { readonly kind: 'done' };

function plainBatch(batch: readonly SeedPatient[]): PlainBatch {
  const { text } = arrayLiteral;
  const es = batch.flatMap((p) => p.encounters.map((e) => ({ p, e })));
  // Columns in the order of bench/setup-db.ts's PLAIN_*_INSERT: ids, then SEED_PHI's.
  return {
    patientParams: [text(batch.map((p) => p.id)), text(batch.map((p) => p.clinicId)), ...SEED_PHI.patients.map((c) => text(batch.map(c.value)))],
    encounterParams: [text(es.map((x) => x.e.id)), text(es.map((x) => x.p.id)), text(es.map((x) => x.p.clinicId)), ...SEED_PHI.encounters.map((c) => text(es.map((x) => c.value(x.e))))],
  };
}

// Buffers arrive as plain Uint8Arrays after the structured clone.
const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const revive = (keys: SeedKeys): SeedKeys => {
  const map = <T, U>(o: Readonly<Record<string, T>>, f: (v: T) => U) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
  return {
    data: map(keys.data, (k: DataKey) => ({ scope: k.scope, version: k.version, key: buf(k.key) })),
    mrnIndex: map(keys.mrnIndex, buf),
    ssnIndex: map(keys.ssnIndex, buf),
  };
};

async function run(input: SeedWorkerInput): Promise<void> {
  const port = parentPort!;
  const keys = revive(input.keys);
  let credit = input.credit;
  let wake: (() => void) | null = null;
  port.on('message', () => {
    // 'more': the main thread wrote a batch
    credit++;
    wake?.();
  });
  const send = async (batch: SeedPatient[], busyMs: number) => {
    const started = performance.now();
    const msg: SeedWorkerMessage = {
      kind: 'batch',
      sealed: sealBatch(keys, batch),
      plain: plainBatch(batch),
      actors: { ids: batch.map((p) => p.id), clinicIds: batch.map((p) => p.clinicId), ssns: batch.map((p) => p.ssn), careTeams: batch.map((p) => p.careTeam) },
      encounters: batch.reduce((n, p) => n + p.encounters.length, 0),
      busyMs: busyMs + performance.now() - started,
    };
    while (credit === 0) await new Promise<void>((resolve) => (wake = resolve));
    wake = null;
    credit--;
    port.postMessage(msg);
  };
  // Every thread generates the whole sequence (a few microseconds a patient: the generator is
  // one PRNG stream) and seals only its own batches.
  let batch: SeedPatient[] = [];
  let index = 0;
  let started = performance.now();
  for (const p of patientsOf({ patients: input.patients, seed: input.seed })) {
    batch.push(p);
    if (batch.length === input.batchSize) {
      if (index++ % input.workers === input.worker) await send(batch, performance.now() - started);
      batch = [];
      started = performance.now();
    }
  }
  if (batch.length && index % input.workers === input.worker) await send(batch, performance.now() - started);
  port.postMessage({ kind: 'done' } satisfies SeedWorkerMessage);
  port.removeAllListeners('message'); // nothing left to wait for: let the thread end

}

await run(workerData as SeedWorkerInput);
