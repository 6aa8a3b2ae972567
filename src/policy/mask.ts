/**
 * The fields that have a masked form, keyed `Type.field`. The loader refuses `mask` on any other
 * field, so a policy cannot ask for a masking that would silently fall back to the plain value.
 */
export const MASKERS: Readonly<Record<string, (plain: string) => string>> = Object.freeze({
  // Only the last four digits survive, whatever separators the stored value used; too few digits
  // to keep four hidden ones means nothing is shown.
  'Patient.ssn': (plain: string): string => {
    const digits = plain.replace(/\D/g, '');
    return digits.length < 4 ? '***-**-****' : `***-**-${digits.slice(-4)}`;
  },
});
