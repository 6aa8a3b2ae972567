import { encryptedColumns } from '../policy/phi-fields.ts';

/**
 * What `keys shred` (shred-patient.ts) leaves in each column of every table that holds a row about
 * a patient: the answer to "what does a shred erase". The shred takes the times it erases from it;
 * docs/shredding.md writes it out for operators (test/unit/records/shred-columns.test.ts keeps the
 * two together); test/security/shred-erases-plaintext.test.ts fails when the database has a table
 * naming a patient, or a column of one, that it does not list.
 */
export type ShredFate =
  /** Ciphertext under the patient's key: the shredded marker replaces it (an empty one stays empty). */
  | 'sealed'
  /** Plaintext from before its column was sealed: emptied. */
  | 'emptied'
  /** A blind index: replaced by a digest that matches no lookup, or emptied. */
  | 'unlinked'
  /** A time in the clear about the patient or its care: set to ERASED_TIME (src/db/patients.ts). */
  | 'erased'
  /** The wrapped patient key: destroyed. */
  | 'destroyed'
  /** Kept as it was: `why` says why it is not the patient's data. */
  | 'kept';

export interface ShredColumn {
  readonly fate: ShredFate;
  readonly why: string;
}

export interface ShredTable {
  /** The column naming the patient: the shred's statements select the patient's rows by it. */
  readonly patientColumn: string;
  readonly columns: Readonly<Record<string, ShredColumn>>;
}

const column = (fate: ShredFate, why: string): ShredColumn => ({ fate, why });
const kept = (why: string) => column('kept', why);
const SEALED = column('sealed', 'PHI sealed under the patient key');
const sealedAll = (columns: Readonly<Record<string, string>>) => Object.fromEntries(Object.values(columns).map((c) => [c, SEALED]));

const RANDOM_ID = 'a random id the gateway made, derived from nothing about the person: what audit events and keys point to';
const CLINIC = 'which clinic held the record: what row security and the compliance views file it under';
const PATIENT_REF = 'the random id of the patient';

// The audit trail is kept whole: it holds no value by design (docs/audit-log.md), it is the record
// of access HIPAA requires kept for six years (164.312(b), 164.316(b)(2)), and it is hash-linked
// and signed, so a changed row fails `audit verify`. What it tells of a shredded patient: that a
// random id was read, which fields, by whom and when.
const AUDIT = {
  id: kept('the log\'s own order'),
  tx: kept('the log\'s own order: the writing transaction'),
  batch_id: kept('the log\'s own order: the commit batch'),
  slot: kept('the log\'s own order: a patient\'s place in a record of several'),
  record_id: kept('a random id: an audit record, or the encounter or grant a value belonged to'),
  record_ids: kept('random ids of the encounters or grants the values belonged to'),
  occurred_at: kept('when the record was accessed, not when the patient was cared for'),
  minute: kept('the minute of an access, counted for the bulk-read alert'),
  request_id: kept('the gateway\'s id of the request'),
  actor: kept('who acted: a workforce member or partner, not the patient'),
  actor_kind: kept('who acted: user, partner or system'),
  role: kept('who acted: the role'),
  purpose: kept('who acted: the purpose of use'),
  credential_id: kept('who acted: the partner key\'s id'),
  client_addr: kept('who acted: the client\'s address'),
  break_glass: kept('how: under a break-glass grant or not'),
  grant_id: kept('how: the random id of the break-glass grant'),
  action: kept('what was done, as a code; never a value'),
  actions: kept('what was done, as codes; never a value'),
  type_name: kept('which type, by name; never a value'),
  type_names: kept('which types, by name; never a value'),
  field: kept('which field, by name; never a value'),
  fields: kept('which fields, by name; never a value'),
  detail: kept('a reason code (the table refuses anything else); never a value'),
  details: kept('reason codes (the table refuses anything else); never a value'),
  patient_id: kept(PATIENT_REF),
  patient_ids: kept('the random ids of the patients'),
} as const;
const audit = (patientColumn: string, names: readonly (keyof typeof AUDIT)[]): ShredTable => ({
  patientColumn,
  columns: Object.fromEntries(names.map((n) => [n, AUDIT[n]])),
});
const AUDIT_RECORD = ['id', 'occurred_at', 'tx', 'batch_id', 'request_id', 'actor', 'actor_kind', 'client_addr', 'credential_id', 'role', 'purpose', 'break_glass', 'grant_id'] as const;
const AUDIT_RECORD_EVENTS = ['actions', 'type_names', 'fields', 'record_ids', 'details'] as const;

// An emergency access to the record and its review, kept as its audit events are: who, when,
// under which role, how it was judged.
const ACCESS = 'an emergency access to the record (who, when, how it was reviewed): kept as its audit events are';

export const SHRED_TABLES: Readonly<Record<string, ShredTable>> = {
  patients: {
    patientColumn: 'id',
    columns: {
      id: kept(RANDOM_ID),
      clinic_id: kept(CLINIC),
      ...sealedAll(encryptedColumns('Patient')),
      mrn_bidx: column('unlinked', 'random bytes: the column is unique per clinic and not null'),
      ssn_bidx: column('unlinked', 'emptied: no digest matches a lookup'),
      mrn_bidx_next: column('unlinked', 'emptied: a blind-index rotation\'s next digest'),
      ssn_bidx_next: column('unlinked', 'emptied: a blind-index rotation\'s next digest'),
      created_at: column('erased', 'when the patient was registered'),
      updated_at: column('erased', 'when the patient\'s record last changed'),
    },
  },
  encounters: {
    patientColumn: 'patient_id',
    columns: {
      id: kept(RANDOM_ID),
      patient_id: kept(PATIENT_REF),
      clinic_id: kept(CLINIC),
      ...sealedAll(encryptedColumns('Encounter')),
      kind_legacy: column('emptied', 'a kind written before kinds were sealed (010)'),
      occurred_at: column('erased', 'the visit date: PHI kept in the clear so the database can order by it'),
      created_at: column('erased', 'when the visit was recorded: the visit date, near enough'),
    },
  },
  care_team: {
    patientColumn: 'patient_id',
    columns: {
      patient_id: kept(PATIENT_REF),
      subject: kept('a clinician: whose rows row security lets reach the record, so they are answered `shredded`, not nothing'),
      clinic_id: kept(CLINIC),
      added_at: column('erased', 'when the clinician took the patient on'),
    },
  },
  patient_keys: {
    patientColumn: 'patient_id',
    columns: {
      patient_id: kept(PATIENT_REF),
      version: kept('the key version: the tombstone above the destroyed ones stops any new key'),
      clinic_id: kept(CLINIC),
      clinic_version: kept('which clinic key version wrapped it'),
      wrapped: column('destroyed', 'the patient key, wrapped: set to NULL'),
      created_at: column('erased', 'when the key was made: the first version\'s is the registration time'),
      shredded_at: kept('when the shred happened: the erasure\'s own record, as its `key` event'),
    },
  },
  patient_clinics: {
    patientColumn: 'patient_id',
    columns: { patient_id: kept(PATIENT_REF), clinic_id: kept('files the patient\'s audit events under its clinic for the compliance views') },
  },
  break_glass_grants: {
    patientColumn: 'patient_id',
    columns: {
      id: kept(RANDOM_ID),
      patient_id: kept(PATIENT_REF),
      clinic_id: kept(CLINIC),
      actor: kept(ACCESS),
      role: kept(ACCESS),
      cross_clinic: kept(ACCESS),
      request_id: kept(ACCESS),
      granted_at: kept(ACCESS),
      expires_at: kept(ACCESS),
      revoked_at: kept(ACCESS),
      revoked_by: kept(ACCESS),
      reviewed_at: kept(ACCESS),
      reviewed_by: kept(ACCESS),
      review_outcome: kept(ACCESS),
      reason: column('emptied', 'a reason written before reasons were sealed (066)'),
      review_comment: column('emptied', 'a comment written before comments were sealed (066)'),
      reason_sealed: SEALED,
      review_comment_sealed: SEALED,
    },
  },
  audit_events_v1: audit('patient_id', [...AUDIT_RECORD, 'action', 'type_name', 'field', 'patient_id', 'record_id', 'detail']),
  audit_records: audit('patient_id', [...AUDIT_RECORD, 'patient_id', ...AUDIT_RECORD_EVENTS]),
  audit_records_v3: audit('patient_ids', [...AUDIT_RECORD, 'patient_ids', ...AUDIT_RECORD_EVENTS]),
  audit_record_patients: audit('patient_id', ['patient_id', 'record_id', 'slot']),
  alert_minute_patients: audit('patient_id', ['actor_kind', 'actor', 'minute', 'patient_id']),
};

/** One table's times the shred erases. */
export interface ErasedTimes {
  readonly table: string;
  readonly patientColumn: string;
  readonly columns: readonly string[];
}

export const ERASED_TIMES: readonly ErasedTimes[] = Object.entries(SHRED_TABLES)
  .map(([table, t]) => ({ table, patientColumn: t.patientColumn, columns: Object.keys(t.columns).filter((c) => t.columns[c]!.fate === 'erased') }))
  .filter((t) => t.columns.length > 0);
