import { keyVersionOf, openField, sealField } from './envelope.ts';
import type { FieldAad } from './envelope.ts';
import type { Keyring } from './keys/keyring.ts';

export interface FieldCipherStats {
  encrypts: number;
  decrypts: number;
  /** keyed by 'table.column' */
  decryptsByColumn: Map<string, number>;
}

export interface FieldCipher {
  encrypt(scope: string, aad: FieldAad, plaintext: string): Promise<Buffer>;
  /** Synchronous when the key is cached (steady state), so a page of values costs no promise each. */
  decrypt(scope: string, aad: FieldAad, ciphertext: Buffer): string | Promise<string>;
  readonly stats: FieldCipherStats;
}

// The 'table.column' key of each column, made once per column rather than once per decryption.
const columnKeys = new Map<string, Map<string, string>>();
function columnKey(aad: FieldAad): string {
  let byColumn = columnKeys.get(aad.table);
  if (byColumn === undefined) columnKeys.set(aad.table, (byColumn = new Map()));
  let key = byColumn.get(aad.column);
  if (key === undefined) byColumn.set(aad.column, (key = `${aad.table}.${aad.column}`));
  return key;
}

/**
 * Field encryption for resolvers: new values under the clinic's current key, old values under
 * the version recorded in their header. Calls are counted on entry, before any key is fetched,
 * so a zero count proves a field was never even attempted.
 */
export function createFieldCipher(keyring: Keyring): FieldCipher {
  const stats: FieldCipherStats = { encrypts: 0, decrypts: 0, decryptsByColumn: new Map() };
  return {
    stats,
    async encrypt(scope, aad, plaintext) {
      stats.encrypts++;
      return sealField(await keyring.writeKey(scope), aad, plaintext);
    },
    decrypt(scope, aad, ciphertext) {
      stats.decrypts++;
      const column = columnKey(aad);
      stats.decryptsByColumn.set(column, (stats.decryptsByColumn.get(column) ?? 0) + 1);
      const key = keyring.readKey(scope, keyVersionOf(ciphertext));
      return key instanceof Promise ? key.then((k) => openField(k, aad, ciphertext)) : openField(key, aad, ciphertext);
    },
  };
}
