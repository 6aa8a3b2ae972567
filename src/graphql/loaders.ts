import DataLoader from 'dataloader';
import { encountersByPatientIds, patientsByIds, type EncounterPhiColumn, type EncounterRow, type EncounterWindow, type PatientRow } from '../db/patients.ts';
import type { RequestTransaction } from '../db/transaction.ts';

export interface Loaders {
  readonly patient: DataLoader<string, PatientRow | null>;
  /**
   * A patient's encounters in `window`, fetching only `columns` of their PHI columns: at once when a
   * preload with the same columns and window read them, else through one statement for every
   * patient asked in the same tick (cached by the patient's id). A request asks with one set of
   * columns (its principal's), hence one statement per page and window.
   */
  encountersOf(columns: readonly EncounterPhiColumn[], window: EncounterWindow, patient: PatientRow): EncounterRow[] | Promise<EncounterRow[]>;
  /**
   * Takes the encounters of `patients`, read with their page (patientPageWithEncounters), as those
   * patients' encounters with `columns`, so that a page's 100 `encounters` fields cost no promise,
   * loader entry or deferred execution each. A patient's that cannot be read is not thrown here: it
   * is the error of that patient's `encounters`, as it would have been through the loader.
   */
  primeEncounters(columns: readonly EncounterPhiColumn[], window: EncounterWindow, patients: readonly PatientRow[], encountersOf: (i: number) => EncounterRow[]): void;
}

/** What one set of columns and window has read: by patient id, the rows or the read's failure. */
interface EncounterReads {
  readonly loader: DataLoader<PatientRow, EncounterRow[], string>;
  readonly preloaded: Map<string, EncounterRow[]>;
  readonly failed: Map<string, unknown>;
}

/**
 * Per-request loaders (never shared: rows are visible only through this request's transaction).
 * A page of patients with their encounters costs one statement, however many patients it holds;
 * patients read otherwise, one statement for the page's patients and one for all their encounters.
 */
export function createLoaders(tx: RequestTransaction): Loaders {
  const byColumns = new Map<string, EncounterReads>();
  // Keyed by the patient's row, so that its encounters share the row's key (src/db/patients.ts).
  const read = async (columns: readonly EncounterPhiColumn[], window: EncounterWindow, patients: readonly PatientRow[]): Promise<EncounterRow[][]> => {
    const patientIds = patients.map((p) => p.id);
    const rows = await encountersByPatientIds(tx, patientIds, window, columns, new Map(patients.map((p) => [p.id, p.facts.key])));
    const byPatient = new Map<string, EncounterRow[]>(patientIds.map((id) => [id, []]));
    for (const r of rows) byPatient.get(r.patient_id)?.push(r);
    return patientIds.map((id) => byPatient.get(id) ?? []);
  };
  const readsOf = (columns: readonly EncounterPhiColumn[], window: EncounterWindow): EncounterReads => {
    const key = `${columns.join(',')}:${window.first}:${window.after}:${window.byDate}`;
    let reads = byColumns.get(key);
    if (reads === undefined) {
      reads = { loader: new DataLoader((patients) => read(columns, window, patients), { cacheKeyFn: (p) => p.id }), preloaded: new Map(), failed: new Map() };
      byColumns.set(key, reads);
    }
    return reads;
  };
  return {
    patient: new DataLoader(async (ids) => {
      const rows = await patientsByIds(tx, ids);
      const byId = new Map(rows.map((r) => [r.id, r]));
      return ids.map((id) => byId.get(id) ?? null);
    }),
    encountersOf(columns, window, patient) {
      const reads = readsOf(columns, window);
      const rows = reads.preloaded.get(patient.id);
      if (rows !== undefined) return rows;
      if (reads.failed.has(patient.id)) throw reads.failed.get(patient.id);
      return reads.loader.load(patient);
    },
    primeEncounters(columns, window, patients, encountersOf) {
      const reads = readsOf(columns, window);
      patients.forEach((p, i) => {
        // The first answer a request read stands for all of its fields.
        if (reads.preloaded.has(p.id) || reads.failed.has(p.id)) return;
        try {
          reads.preloaded.set(p.id, encountersOf(i));
        } catch (err) {
          reads.failed.set(p.id, err);
        }
      });
    },
  };
}
