import type { AuditEvent } from '../audit/event.ts';
import { apiKeyHash, mintApiKey } from '../auth/api-key-secret.ts';
import type { Peppers } from '../auth/api-key-pepper.ts';
import {
  apiKeyById,
  cutApiKeyExpiry,
  insertApiKey,
  listApiKeys,
  revokeApiKeyRow,
  type ApiKeyRow,
  type Queryable,
} from '../db/api-keys.ts';
import { PhigateError } from '../errors.ts';
import { PARTNER_ROLE } from '../policy/decide.ts';
import { PHI_FIELDS } from '../policy/phi-fields.ts';
import type { PolicySet } from '../policy/types.ts';
import * as v from './validate.ts';

/**
 * HL7 v3 PurposeOfUse codes a partner key may carry (terminology.hl7.org ValueSet
 * v3-PurposeOfUse). Emergency codes (ETREAT, BTG) are left out on purpose: emergency access is
 * break-glass, by a person, never a standing key.
 */
export const PURPOSES_OF_USE = [
  'TREAT', 'CAREMGT', 'CLINTRCH', 'HPAYMT', 'CLMATTCH', 'COVAUTH', 'COVERAGE', 'ELIGDTRM', 'ELIGVER', 'ENROLLM', 'REMITADV',
  'HOPERAT', 'HACCRED', 'HCOMPL', 'HDM', 'HQUALIMP', 'HSYSADMIN', 'HLEGAL', 'PUBHLTH', 'DISASTER', 'THREAT', 'HRESCH', 'PATRQT',
  'FAMRQT', 'PWATRNY', 'HDIRECT',
] as const;

const DAY = 86_400;
export const KEY_LIFETIME = { defaultSeconds: 90 * DAY, minSeconds: 3_600, maxSeconds: 365 * DAY } as const;
export const ROTATION_OVERLAP = { defaultSeconds: DAY, maxSeconds: 7 * DAY } as const;
const MAX_RATE = 1_000_000;

const bad = (message: string) => new PhigateError('BAD_USER_INPUT', message);
const notFound = () => bad('There is no such API key among the keys you manage.');
const notRotatable = () => bad('The API key is revoked, expired or already rotated: rotate its newest key, or create one.');

// schema/migrations/071_api_key_one_successor.sql: a key has at most one successor.
const ONE_SUCCESSOR = 'api_keys_one_successor';
const isSecondSuccessor = (err: unknown): boolean => {
  const e = err as { code?: string; constraint?: string };
  return e.code === '23505' && e.constraint === ONE_SUCCESSOR;
};

/** Who asks for the change, and within which clinics (null: every clinic, the operator's command line). */
export interface KeyManager {
  readonly actor: string;
  readonly clinics: readonly string[] | null;
  readonly role: string | null;
  readonly purpose: string;
  /** Where the change's audit events go: written in the change's own transaction. */
  readonly audit: (event: AuditEvent) => void;
}

export interface ApiKeyInput {
  readonly partner: string;
  readonly clinics: readonly string[];
  readonly fields: readonly string[];
  readonly purpose: string;
  readonly expiresInSeconds?: number | null;
  readonly ratePerMinute?: number | null;
  readonly burst?: number | null;
}

export interface ApiKeyDefaults {
  readonly ratePerMinute: number;
  readonly burst: number;
}

/** What the GraphQL mutations need beyond the request: the pepper, the defaults, and this replica's key cache. */
export interface ApiKeyService {
  readonly peppers: Peppers;
  readonly defaults: ApiKeyDefaults;
  /** Called after a key changed, so this replica stops trusting what it remembers of it at once. */
  forget(id: string): void;
}

export interface CreatedApiKey {
  /** `phg_<id>_<secret>`: in this answer only. */
  readonly key: string;
  readonly apiKey: ApiKeyRow;
}

/** `mrn` or `Patient.mrn` -> `Patient.mrn`; only a PHI field that the `partner` role does not deny. */
function field(policy: PolicySet, raw: string): string {
  const name = raw.trim();
  const matches = Object.entries(PHI_FIELDS).flatMap(([type, fields]) =>
    (fields as readonly string[]).filter((f) => name === f || name === `${type}.${f}`).map((f) => `${type}.${f}`),
  );
  const [canonical] = matches;
  if (canonical === undefined || matches.length > 1) {
    throw bad(`fields: each must be a PHI field (${Object.entries(PHI_FIELDS).flatMap(([t, fs]) => fs.map((f) => `${t}.${f}`)).join(', ')}).`);
  }
  const ceiling = policy.roles.get(PARTNER_ROLE)?.fields.get(canonical) ?? 'deny';
  if (ceiling === 'deny') throw bad(`fields: the partner policy does not allow ${canonical}.`);
  return canonical;
}

function whole(name: string, value: number | null | undefined, fallback: number, min: number, max: number): number {
  const n = value ?? fallback;
  if (!Number.isInteger(n) || n < min || n > max) throw bad(`${name} must be a whole number from ${min} to ${max}.`);
  return n;
}

const distinct = (items: readonly string[]) => [...new Set(items)].sort();

async function checkClinics(db: Queryable, manager: KeyManager, raw: readonly string[]): Promise<string[]> {
  const clinics = distinct(raw.map((c) => c.trim()));
  if (clinics.length === 0) throw bad('clinics must name at least one clinic.');
  if (manager.clinics !== null && clinics.some((c) => !manager.clinics?.includes(c))) {
    throw new PhigateError('FORBIDDEN', 'You may issue keys for your own clinics only.');
  }
  const { rows } = await db.query<{ id: string }>('SELECT id FROM phigate.clinics WHERE id = ANY ($1::text[])', [clinics]);
  if (rows.length !== clinics.length) throw bad('clinics: each must be an existing clinic id.');
  return clinics;
}

const event = (manager: KeyManager, id: string, detail: string): AuditEvent => ({
  action: 'api_key',
  typeName: 'ApiKey',
  field: null,
  patientId: null,
  recordId: id,
  role: manager.role,
  purpose: manager.purpose,
  breakGlass: false,
  detail,
});

export async function createApiKey(
  db: Queryable,
  peppers: Peppers,
  policy: PolicySet,
  defaults: ApiKeyDefaults,
  manager: KeyManager,
  input: ApiKeyInput,
): Promise<CreatedApiKey> {
  const partner = v.text('partner', input.partner, 63).toLowerCase();
  if (!/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(partner)) throw bad('partner must be a name of letters, digits, dots, hyphens or underscores.');
  const fields = distinct(input.fields.map((f) => field(policy, f)));
  if (fields.length === 0) throw bad('fields must name at least one PHI field.');
  const purpose = input.purpose.trim().toUpperCase();
  if (!(PURPOSES_OF_USE as readonly string[]).includes(purpose)) {
    throw bad(`purpose must be an HL7 PurposeOfUse code (${PURPOSES_OF_USE.join(', ')}).`);
  }
  const expiresInSeconds = whole('expiresInSeconds', input.expiresInSeconds, KEY_LIFETIME.defaultSeconds, KEY_LIFETIME.minSeconds, KEY_LIFETIME.maxSeconds);
  const ratePerMinute = whole('ratePerMinute', input.ratePerMinute, defaults.ratePerMinute, 1, MAX_RATE);
  const burst = whole('burst', input.burst, defaults.burst, 1, MAX_RATE);
  const clinics = await checkClinics(db, manager, input.clinics);
  return issue(db, peppers, manager, { partner, clinics, fields, purpose, ratePerMinute, burst, expiresInSeconds, replaces: null }, 'created');
}

async function issue(
  db: Queryable,
  peppers: Peppers,
  manager: KeyManager,
  k: { partner: string; clinics: string[]; fields: string[]; purpose: string; ratePerMinute: number; burst: number; expiresInSeconds: number; replaces: string | null },
  detail: string,
): Promise<CreatedApiKey> {
  const minted = mintApiKey();
  const pepper = await peppers.current();
  const apiKey = await insertApiKey(db, {
    ...k,
    id: minted.id,
    secretHash: apiKeyHash(pepper.key, minted.id, minted.secret),
    pepperVersion: pepper.version,
    createdBy: manager.actor,
  });
  manager.audit(event(manager, apiKey.id, detail));
  return { key: minted.key, apiKey };
}

/** A key the manager answers for: any of its clinics (to revoke), or all of them (to rotate). */
async function managed(db: Queryable, manager: KeyManager, rawId: string, allClinics: boolean): Promise<ApiKeyRow> {
  const id = v.id('id', rawId);
  const row = await apiKeyById(db, id);
  const mine = (c: string) => manager.clinics === null || manager.clinics.includes(c);
  if (!row || !(allClinics ? row.clinics.every(mine) : row.clinics.some(mine))) throw notFound();
  return row;
}

export async function revokeApiKey(db: Queryable, manager: KeyManager, rawId: string): Promise<ApiKeyRow> {
  const row = await managed(db, manager, rawId, false);
  const revoked = await revokeApiKeyRow(db, row.id);
  if (!revoked) throw notFound();
  manager.audit(event(manager, revoked.id, 'revoked'));
  return revoked;
}

/**
 * A new key with the same binding; the old one stays valid until the end of the overlap (never
 * later than it would have anyway), then is refused. A key can be rotated once: rotate the new one next.
 */
export async function rotateApiKey(db: Queryable, peppers: Peppers, manager: KeyManager, rawId: string, overlapSeconds?: number | null): Promise<CreatedApiKey> {
  const overlap = whole('overlapSeconds', overlapSeconds, ROTATION_OVERLAP.defaultSeconds, 0, ROTATION_OVERLAP.maxSeconds);
  const row = await managed(db, manager, rawId, true);
  const lifetime = row.expires_at === null ? KEY_LIFETIME.defaultSeconds : Math.round((row.expires_at.getTime() - row.created_at.getTime()) / 1000);
  const old = await cutApiKeyExpiry(db, row.id, overlap);
  if (!old) throw notRotatable();
  manager.audit(event(manager, old.id, 'rotated_out'));
  // cutApiKeyExpiry's lock makes a concurrent rotation see this one's successor; should another
  // path still race it, the database refuses the second successor and the loser is told the same.
  return issue(
    db,
    peppers,
    manager,
    {
      partner: old.partner,
      clinics: old.clinics,
      fields: old.fields,
      purpose: old.purpose,
      ratePerMinute: old.rate_per_minute,
      burst: old.burst,
      expiresInSeconds: Math.min(Math.max(lifetime, KEY_LIFETIME.minSeconds), KEY_LIFETIME.maxSeconds),
      replaces: old.id,
    },
    'rotated',
  ).catch((err: unknown) => {
    throw isSecondSuccessor(err) ? notRotatable() : err;
  });
}

/** Every key the manager answers for, for the operator's command line. */
export const apiKeysOf = (db: Queryable, manager: Pick<KeyManager, 'clinics'>): Promise<ApiKeyRow[]> => listApiKeys(db, manager.clinics, null);

/**
 * The most keys one answer of Query.apiKeys lists, read with LIMIT and priced at it by the query
 * limits (src/http/plugins/use-query-limits.ts, LIST_SIZES): an answer of a known size, never one
 * that grows with the table.
 */
export const MAX_LISTED_KEYS = 1_000;

/** The keys the manager answers for, as Query.apiKeys lists them: refused, never cut short, past MAX_LISTED_KEYS. */
export async function listedApiKeys(db: Queryable, manager: Pick<KeyManager, 'clinics'>): Promise<ApiKeyRow[]> {
  const rows = await listApiKeys(db, manager.clinics, MAX_LISTED_KEYS + 1);
  if (rows.length > MAX_LISTED_KEYS) throw bad(`More than ${MAX_LISTED_KEYS} API keys match; list them with \`npx phigate apikey list\`.`);
  return rows;
}
