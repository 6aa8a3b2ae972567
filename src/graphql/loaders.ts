import DataLoader from 'dataloader';
import { encountersByPatientIds, patientsByIds, type EncounterPhiColumn, type EncounterRow, type PatientRow } from '../db/patients.ts';
import type { RequestTransaction } from '../db/transaction.ts';

export interface Loaders {
  readonly patient: DataLoader<string, PatientRow | null>;
  /**
   * Encounters by patient id, fetching only `columns` of their PHI columns. One loader per set
   * of columns; a request asks with one set (its principal's), hence one statement per page.
   */
  encounters(columns: readonly EncounterPhiColumn[]): DataLoader<string, EncounterRow[]>;
}

/**
 * Per-request loaders (never shared: rows are visible only through this request's transaction).
 * A page of patients with their encounters costs one statement for the page and one for all
 * encounters, however many patients it holds.
 */
export function createLoaders(tx: RequestTransaction): Loaders {
  const encounters = new Map<string, DataLoader<string, EncounterRow[]>>();
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
        loader = new DataLoader(async (patientIds) => {
          const rows = await encountersByPatientIds(tx, patientIds, columns);
          const byPatient = new Map<string, EncounterRow[]>(patientIds.map((id) => [id, []]));
          for (const r of rows) byPatient.get(r.patient_id)?.push(r);
          return patientIds.map((id) => byPatient.get(id) ?? []);
        });
        encounters.set(key, loader);
      }
      return loader;
    },
  };
}
