import { PhigateError } from '../errors.ts';
import { normaliseMrn, normaliseSsn } from './identifiers.ts';
import { PHI_FIELDS, type PhiField } from '../policy/phi-fields.ts';
import * as v from './validate.ts';

export const PATIENT_FIELDS = PHI_FIELDS.Patient;
export type PatientField = PhiField<'Patient'>;

/** Patient PHI as the API takes it; `undefined` means "not given", `null` means "clear it". */
export type PatientValues = { readonly [K in PatientField]?: string | null };
export type CheckedValues = { [K in PatientField]?: string | null };

const CHECKS: Record<PatientField, (name: string, value: string) => string> = {
  mrn: (_n, x) => normaliseMrn(x),
  // Stored formatted, so every reader sees the same shape whatever the writer typed.
  ssn: (_n, x) => normaliseSsn(x).replace(/^(\d{3})(\d{2})(\d{4})$/, '$1-$2-$3'),
  givenName: (n, x) => v.text(n, x, 100),
  familyName: (n, x) => v.text(n, x, 100),
  birthDate: (n, x) => v.date(n, x),
  phone: (n, x) => v.phone(n, x),
  email: (n, x) => v.email(n, x),
  address: (n, x) => v.text(n, x, 300),
};

/** Validates the fields that were given; the result has exactly those keys. */
export function checkPatientValues(input: PatientValues): CheckedValues {
  const out: CheckedValues = {};
  for (const key of PATIENT_FIELDS) {
    const value = input[key];
    if (value === undefined) continue;
    if (value === null && key === 'mrn') throw new PhigateError('BAD_USER_INPUT', 'mrn cannot be cleared.');
    out[key] = value === null ? null : CHECKS[key](key, value);
  }
  return out;
}
