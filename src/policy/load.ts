import { readFile } from 'node:fs/promises';
import { isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { PhiFieldCatalog } from './phi-fields.ts';
import { immutableMap, immutableSet } from './immutable.ts';
import { MASKERS } from './mask.ts';
import { OPERATIONS } from './operations.ts';
import { PolicyError } from './policy-error.ts';
import { readsPhi } from './reads-phi.ts';
import type { BreakGlassReach, Effect, PhiLimits, PolicySet, RolePolicy, RowScope } from './types.ts';

const TOP_KEYS = ['version', 'roles', 'breakGlass'];
const BREAK_GLASS_KEYS = ['reach'];
const REACHES: readonly BreakGlassReach[] = ['own_clinics', 'all_clinics'];
const ROLE_KEYS = ['purpose', 'mfa', 'rows', 'operations', 'fields', 'limits'];
const OPTIONAL_ROLE_KEYS = ['fields', 'limits'];
const LIMIT_KEYS = ['rowsPerRequest', 'phiValuesPerRequest', 'rowsPerMinute', 'phiValuesPerMinute'] as const;
// The usage counters are 32-bit integers in PostgreSQL (schema/migrations/006_phi_usage.sql).
const MAX_LIMIT = 1_000_000_000;
const EFFECTS: readonly Effect[] = ['allow', 'mask', 'deny'];
const ROW_SCOPES: readonly RowScope[] = ['care_team', 'clinic', 'none'];
const MFA_VALUES = ['required', 'not_required'];
const SUPPORTED_VERSION = 1;

type Fail = (path: string, problem: string) => never;
type Mapping = Record<string, unknown>;

const at = (path: string, key: string): string => (path ? `${path}.${key}` : key);
const show = (value: unknown): string => JSON.stringify(value) ?? String(value);
const isMapping = (value: unknown): value is Mapping =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const own = (object: object, key: string): boolean => Object.hasOwn(object, key);

/**
 * Checks the parsed tree before it becomes plain data, because conversion would silently keep
 * the last of two equal keys, and an alias would hide a decision from someone reading the file.
 */
function checkTree(node: unknown, path: string, fail: Fail): void {
  if (isAlias(node)) fail(path, 'uses a YAML alias; write every decision out in full');
  if (isMap(node)) {
    const seen = new Set<string>();
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (typeof key !== 'string' && typeof key !== 'number') fail(path, 'has a key that is not a plain name');
      const name = String(key);
      if (seen.has(name)) fail(at(path, name), 'is given more than once');
      seen.add(name);
      checkTree(pair.value, at(path, name), fail);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => checkTree(item, `${path}[${index}]`, fail));
  }
}

function rejectUnknownKeys(value: Mapping, allowed: readonly string[], path: string, fail: Fail): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(at(path, key), `is not a known key (expected one of ${allowed.join(', ')})`);
  }
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], path: string, fail: Fail): T {
  const found = allowed.find((candidate) => candidate === value);
  if (found === undefined) fail(path, `${show(value)} is not one of ${allowed.join(', ')}`);
  return found;
}

function parseOperations(value: unknown, path: string, fail: Fail): ReadonlySet<string> {
  if (!Array.isArray(value)) fail(path, 'must be a list of operation names (use [] for none)');
  const names = new Set<string>();
  value.forEach((name: unknown, index) => {
    const where = `${path}[${index}]`;
    const known: readonly string[] = OPERATIONS;
    if (typeof name !== 'string' || !known.includes(name)) {
      fail(where, `${show(name)} is not a known operation (expected one of ${OPERATIONS.join(', ')})`);
    }
    if (names.has(name)) fail(where, `${show(name)} is listed more than once`);
    names.add(name);
  });
  return immutableSet(names);
}

/**
 * Every PHI field must carry an explicit effect, so that a field added to the schema cannot
 * reach a role through a default. Only a role that sees no rows may leave fields out: it could
 * not read them anyway, and they count as denied.
 */
function parseFields(
  value: unknown,
  rows: RowScope,
  catalog: PhiFieldCatalog,
  path: string,
  fail: Fail,
): ReadonlyMap<string, Effect> {
  const complete = rows !== 'none';
  if (value === undefined && !complete) value = {};
  if (!isMapping(value)) fail(path, 'must map each type to its PHI fields and their effects');

  for (const [type, fields] of Object.entries(value)) {
    const typePath = at(path, type);
    const known = own(catalog, type) ? catalog[type] : undefined;
    if (known === undefined) fail(typePath, `is not a type with PHI fields (expected one of ${Object.keys(catalog).join(', ')})`);
    if (!isMapping(fields)) fail(typePath, 'must map each PHI field to allow, mask or deny');
    for (const [field, effect] of Object.entries(fields)) {
      const fieldPath = at(typePath, field);
      if (!known.includes(field)) fail(fieldPath, `is not a PHI field of ${type} (expected one of ${known.join(', ')})`);
      const checked = oneOf(effect, EFFECTS, fieldPath, fail);
      if (checked === 'mask' && !own(MASKERS, `${type}.${field}`)) {
        fail(fieldPath, 'cannot be masked: no masked form exists for it; use allow or deny');
      }
    }
  }

  const effects = new Map<string, Effect>();
  for (const [type, fields] of Object.entries(catalog)) {
    const given = own(value, type) ? (value[type] as Mapping) : undefined;
    if (given === undefined && complete) fail(at(path, type), 'is missing: every PHI field needs an explicit effect');
    for (const field of fields) {
      const effect = given !== undefined && own(given, field) ? (given[field] as Effect) : undefined;
      if (effect === undefined && complete) fail(at(at(path, type), field), 'is missing: every PHI field needs an explicit effect');
      effects.set(`${type}.${field}`, effect ?? 'deny');
    }
  }
  return immutableMap(effects);
}

function parseRole(name: string, value: unknown, catalog: PhiFieldCatalog, fail: Fail): RolePolicy {
  const path = at('roles', name);
  if (!isMapping(value)) fail(path, `must be a mapping with ${ROLE_KEYS.join(', ')}`);
  rejectUnknownKeys(value, ROLE_KEYS, path, fail);
  for (const key of ROLE_KEYS) {
    if (!OPTIONAL_ROLE_KEYS.includes(key) && !own(value, key)) fail(at(path, key), 'is required');
  }

  const { purpose } = value;
  if (typeof purpose !== 'string' || purpose.trim() === '') fail(at(path, 'purpose'), 'must be a non-empty purpose of use');
  const rows = oneOf(value.rows, ROW_SCOPES, at(path, 'rows'), fail);
  const mfa = oneOf(value.mfa, MFA_VALUES, at(path, 'mfa'), fail);
  const rules = {
    name,
    purpose,
    mfaRequired: mfa === 'required',
    rows,
    operations: parseOperations(value.operations, at(path, 'operations'), fail),
    fields: parseFields(value.fields, rows, catalog, at(path, 'fields'), fail),
    limits: null,
  };

  if (!rules.mfaRequired && readsPhi(rules)) {
    fail(at(path, 'mfa'), 'must be required: this role can see patient rows or PHI fields');
  }
  return Object.freeze({ ...rules, limits: parseLimits(value.limits, readsPhi(rules), at(path, 'limits'), fail) });
}

/**
 * A role that reads PHI must say how much of it one principal may take out; a role that reads
 * none may not carry limits, which could never apply and would only mislead whoever reads the file.
 */
function parseLimits(value: unknown, readsAny: boolean, path: string, fail: Fail): PhiLimits | null {
  if (!readsAny) {
    if (value !== undefined) fail(path, 'cannot apply: this role sees no patient rows and no PHI fields; remove it');
    return null;
  }
  if (value === undefined) fail(path, `is required: this role can see patient rows or PHI fields (give ${LIMIT_KEYS.join(', ')})`);
  if (!isMapping(value)) fail(path, `must map ${LIMIT_KEYS.join(', ')} to whole numbers`);
  rejectUnknownKeys(value, LIMIT_KEYS, path, fail);
  const limit = (key: (typeof LIMIT_KEYS)[number]): number => {
    if (!own(value, key)) fail(at(path, key), 'is required');
    const n = value[key];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_LIMIT) {
      fail(at(path, key), `${show(n)} is not a whole number from 1 to ${MAX_LIMIT}`);
    }
    return n;
  };
  const limits: PhiLimits = Object.freeze({
    rowsPerRequest: limit('rowsPerRequest'),
    phiValuesPerRequest: limit('phiValuesPerRequest'),
    rowsPerMinute: limit('rowsPerMinute'),
    phiValuesPerMinute: limit('phiValuesPerMinute'),
  });
  // Otherwise the per-minute limit silently wins and the per-request figure is a promise nobody keeps.
  if (limits.rowsPerRequest > limits.rowsPerMinute) fail(at(path, 'rowsPerRequest'), 'is larger than rowsPerMinute');
  if (limits.phiValuesPerRequest > limits.phiValuesPerMinute) fail(at(path, 'phiValuesPerRequest'), 'is larger than phiValuesPerMinute');
  return limits;
}

/** Parses and validates a policy; any doubt about its meaning is a PolicyError, never a default. */
export function parsePolicy(yamlText: string, catalog: PhiFieldCatalog, source?: string): PolicySet {
  const fail: Fail = (path, problem) => {
    throw new PolicyError(path, problem, source === undefined ? {} : { source });
  };

  // Duplicate keys are found by checkTree, which can say where they are.
  const document = parseDocument(yamlText, { uniqueKeys: false, prettyErrors: true });
  const [syntaxError] = document.errors;
  if (syntaxError) fail('', `is not valid YAML: ${syntaxError.message.split('\n')[0]}`);
  checkTree(document.contents, '', fail);

  const top: unknown = document.toJS();
  if (!isMapping(top)) fail('', 'must be a mapping with version and roles');
  rejectUnknownKeys(top, TOP_KEYS, '', fail);
  if (top.version !== SUPPORTED_VERSION) fail('version', `must be ${SUPPORTED_VERSION}, found ${show(top.version)}`);
  if (!isMapping(top.roles)) fail('roles', 'must map each role name to its rules');

  const roles = Object.entries(top.roles).map(([name, value]) => [name, parseRole(name, value, catalog, fail)] as const);
  return Object.freeze({ roles: immutableMap(roles), breakGlass: parseBreakGlass(top.breakGlass, fail), version: SUPPORTED_VERSION });
}

/** Absent: a grant reaches only the clinics of the clinician's own credentials. */
function parseBreakGlass(value: unknown, fail: Fail): PolicySet['breakGlass'] {
  if (value === undefined) return Object.freeze({ reach: 'own_clinics' });
  if (!isMapping(value)) fail('breakGlass', `must be a mapping with ${BREAK_GLASS_KEYS.join(', ')}`);
  rejectUnknownKeys(value, BREAK_GLASS_KEYS, 'breakGlass', fail);
  return Object.freeze({ reach: oneOf(value.reach, REACHES, 'breakGlass.reach', fail) });
}

export async function loadPolicy(file: string, catalog: PhiFieldCatalog): Promise<PolicySet> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code ?? 'read error';
    throw new PolicyError('', `cannot be read (${reason})`, { source: file, cause });
  }
  return parsePolicy(text, catalog, file);
}
