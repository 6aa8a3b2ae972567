import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { PhigateError } from '../errors.ts';
import type { DataKey, PatientKey } from './envelope.ts';
import { lengthPrefixed } from './length-prefixed.ts';
import { isZeroFilled } from './zero-filled.ts';

const WRAP_FORMAT_V1 = 0x01;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

// Binds a wrapped patient key to its patient, its own version and the clinic key version that
// wraps it: copied to another patient's row, or presented as another version, it does not open.
function wrapAad(clinicKey: DataKey, patientId: string, patientVersion: number): Buffer {
  return lengthPrefixed(['phigate/patient-key/v1', Buffer.from([WRAP_FORMAT_V1]), clinicKey.scope, String(clinicKey.version), patientId, String(patientVersion)]);
}

function usableClinicKey(clinicKey: DataKey): void {
  if (clinicKey.key.length !== KEY_BYTES || isZeroFilled(clinicKey.key)) {
    throw new PhigateError('KEY_UNAVAILABLE', 'data key is not usable', { reason: 'invalid_key' });
  }
}

/**
 * A fresh patient key and its wrapping under the clinic data key: AES-256-GCM, a local
 * computation (no KMS call), so a new patient costs microseconds, not a round trip.
 */
export function newPatientKey(clinicKey: DataKey, patientId: string, patientVersion: number): { key: PatientKey; wrapped: Buffer } {
  // The keyring hands out its cached Buffer and zero-fills it when the cache lets the key go, which
  // can fall between a caller's cache hit and this call (an await apart): wrapped under thirty-two
  // zero bytes, the stored patient key would be a key in plaintext to anyone who reads the table.
  usableClinicKey(clinicKey);
  const plaintext = randomBytes(KEY_BYTES);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', clinicKey.key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(wrapAad(clinicKey, patientId, patientVersion));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return {
    key: { scope: clinicKey.scope, version: clinicKey.version, key: plaintext, patientId, patientVersion },
    wrapped: Buffer.concat([Buffer.from([WRAP_FORMAT_V1]), nonce, body, cipher.getAuthTag()]),
  };
}

/** The patient key `wrapped` holds; KEY_UNAVAILABLE (`unwrap_failed`) when it was moved, altered or wrapped by another key. */
export function openPatientKey(clinicKey: DataKey, patientId: string, patientVersion: number, wrapped: Buffer): PatientKey {
  // Zeroed by the cache after the caller's hit: said as such (invalid_key), so that the refusal's
  // audit detail does not read as a wrapped key that was altered (unwrap_failed).
  usableClinicKey(clinicKey);
  if (wrapped.length !== WRAPPED_BYTES || wrapped[0] !== WRAP_FORMAT_V1) {
    throw new PhigateError('KEY_UNAVAILABLE', 'wrapped patient key is malformed', { reason: 'unwrap_failed' });
  }
  let key: Buffer | undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', clinicKey.key, wrapped.subarray(1, 1 + NONCE_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(wrapAad(clinicKey, patientId, patientVersion));
    decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
    // update() returns the key in memory of its own. Buffer.concat would copy it into a slice of
    // Buffer's shared pool (8 KB on Node 20, 64 KB on 24): every cached key would then keep a
    // whole slab alive, and share it with whatever else was allocated beside it.
    key = decipher.update(wrapped.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + KEY_BYTES));
    decipher.final();
    return { scope: clinicKey.scope, version: clinicKey.version, key, patientId, patientVersion };
  } catch (e) {
    // update() decrypts before final() checks the tag: a blob wrapped for another patient of the
    // same clinic has just been opened into `key`, and must not wait for the collector.
    key?.fill(0);
    throw new PhigateError('KEY_UNAVAILABLE', 'wrapped patient key could not be unwrapped', { reason: 'unwrap_failed', cause: e });
  }
}
