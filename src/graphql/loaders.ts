import DataLoader from 'dataloader';
import { encountersByPatientIds, patientsByIds, type EncounterPhiColumn, type EncounterRow, type PatientRow } from '../db/patients.ts';
import type { RequestTransaction } from '../db/transaction.ts';

export interface Loaders {
  readonly patient: DataLoader<string, PatientRow | null>;
  /**
   * Encounters by patient (cached by its id), fetching only `columns` of their PHI columns. One loader per set
   * of columns; a request asks with one set (its principal's), hence one statement per page.
   */
  encounters(columns: readonly EncounterPhiColumn[]): DataLoader<PatientRow, EncounterRow[], string>;
}

/**
 * Per-request loaders (never shared: rows are visible only through this request's transaction).
 * A page of patients with their encounters costs one statement for the page and one for all
 * encounters, however many patients it holds.
 */
export function createLoaders(tx: RequestTransaction): Loaders {
  const encounters = new Map<string, DataLoader<PatientRow, EncounterRow[], string>>();
  return {
    patient: new DataLoader(async (ids) => {
      const rows = await patientsByIds(tx, ids);
      const byId = new Map(rows.map((r) => [r.id, r]));
      return ids.map((id) => byId.get(id) ?? null);
    }),
    encounters(columns) {
      const key = columns.join(',');
      let loader = encounters.get(key);
      if (loader === undefined) {
        // Keyed by the patient's row, so that its encounters share the row's key (src/db/patients.ts).
        loader = new DataLoader(
          async (patients) => {
            const patientIds = patients.map((p) => p.id);
            const rows = await encountersByPatientIds(tx, patientIds, columns, new Map(patients.map((p) => [p.id, p.facts.key])));
            const byPatient = new Map<string, EncounterRow[]>(patientIds.map((id) => [id, []]));
            for (const r of rows) byPatient.get(r.patient_id)?.push(r);
            return patientIds.map((id) => byPatient.get(id) ?? []);
          },
          { cacheKeyFn: (p) => p.id },
        );
        encounters.set(key, loader);
      }
      return loader;
    },
  };
}
