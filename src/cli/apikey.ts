import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { createAuditBuffer } from '../audit/buffer.ts';
import type { AuditEvent } from '../audit/event.ts';
import { createPeppers } from '../auth/api-key-pepper.ts';
import type { Config } from '../config.ts';
import { keyProviderFromConfig } from '../crypto/keys/from-config.ts';
import type { ApiKeyRow, Queryable } from '../db/api-keys.ts';
import { createPool } from '../db/pool.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { isPhigateError } from '../errors.ts';
import { loadPolicy } from '../policy/load.ts';
import { PHI_FIELDS } from '../policy/phi-fields.ts';
import { apiKeysOf, createApiKey, revokeApiKey, rotateApiKey, type KeyManager } from '../records/api-keys.ts';

export class ApiKeyCommandError extends Error {}

type Values = Record<string, string | boolean | undefined>;

const UNITS: Readonly<Record<string, number>> = { m: 60, h: 3_600, d: 86_400 };

/** `90d`, `24h`, `30m` -> seconds. */
export function duration(name: string, raw: string | boolean | undefined): number | null {
  if (raw === undefined) return null;
  const m = typeof raw === 'string' ? /^(\d{1,6})([mhd])$/.exec(raw.trim()) : null;
  if (!m) throw new ApiKeyCommandError(`--${name} must be a duration like 90d, 24h or 30m`);
  return Number(m[1]) * (UNITS[m[2] as string] as number);
}

function count(name: string, raw: string | boolean | undefined): number | null {
  if (raw === undefined) return null;
  if (typeof raw !== 'string' || !/^\d{1,7}$/.test(raw)) throw new ApiKeyCommandError(`--${name} must be a whole number`);
  return Number(raw);
}

const items = (raw: string | boolean | undefined): string[] => (typeof raw === 'string' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : []);

function describe(k: ApiKeyRow): string {
  const status = k.revoked_at !== null ? 'revoked' : k.expires_at !== null && k.expires_at.getTime() <= Date.now() ? 'expired' : 'active';
  return [
    k.id,
    status,
    `partner=${k.partner}`,
    `clinics=${k.clinics.join(',')}`,
    `fields=${k.fields.join(',')}`,
    `purpose=${k.purpose}`,
    `rate=${k.rate_per_minute}/min burst=${k.burst}`,
    `expires=${k.expires_at?.toISOString() ?? '-'}`,
    `last_used=${k.last_used_at?.toISOString() ?? '-'}`,
    ...(k.replaces ? [`replaces=${k.replaces}`] : []),
  ].join('  ');
}

export const APIKEY_USAGE = `  apikey create --partner P --clinics c1,c2 --fields f1,f2 --purpose CODE [--expires 90d] [--rate-per-minute N] [--burst N]
                                issue a partner key; prints it once
  apikey list                   every key by id, never a secret
  apikey revoke ID              refused from the next request on
  apikey rotate ID [--overlap 24h]
                                a new key with the same binding; the old one ends after the overlap`;

export const apikeyOptions = {
  partner: { type: 'string' },
  clinics: { type: 'string' },
  fields: { type: 'string' },
  purpose: { type: 'string' },
  expires: { type: 'string' },
  'rate-per-minute': { type: 'string' },
  burst: { type: 'string' },
  overlap: { type: 'string' },
} as const;

/**
 * The operator's command line: acts as `system` over every clinic, through the gateway's own
 * database role, and writes each change with its audit event in one transaction.
 */
export async function runApiKey(positionals: readonly string[], v: Values, config: Config, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [action, id, ...extra] = positionals;
  const needsId = action === 'revoke' || action === 'rotate';
  if (!action || !['create', 'list', 'revoke', 'rotate'].includes(action)) throw new ApiKeyCommandError(`apikey needs one of create, list, revoke ID, rotate ID\n${APIKEY_USAGE}`);
  if ((needsId && id === undefined) || (!needsId && id !== undefined) || extra.length > 0) throw new ApiKeyCommandError(`usage:\n${APIKEY_USAGE}`);

  const urls = await databaseUrls(config, err);
  const pool = createPool(urls.appUrl, { max: 1, caFile: config.databaseCaFile });
  const client = await pool.connect();
  const db: Queryable = { query: (text, values) => client.query(text, values as unknown[]) };
  const events: AuditEvent[] = [];
  const manager: KeyManager = {
    actor: `cli:${userInfo().username}`,
    clinics: null,
    role: null,
    purpose: 'HSYSADMIN',
    audit: (e) => events.push(e),
  };
  try {
    const peppers = createPeppers(db, await keyProviderFromConfig(config));
    await client.query('BEGIN');
    let line: string;
    if (action === 'list') {
      line = (await apiKeysOf(db, manager)).map(describe).join('\n') || '(no keys)';
    } else if (action === 'revoke') {
      line = describe(await revokeApiKey(db, manager, id as string));
    } else if (action === 'rotate') {
      const created = await rotateApiKey(db, peppers, manager, id as string, duration('overlap', v.overlap));
      err(`rotated ${id} -> ${created.apiKey.id}; the old key ends ${(await db.query<{ e: Date }>('SELECT expires_at AS e FROM phigate.api_keys WHERE id = $1', [id])).rows[0]?.e.toISOString()}`);
      line = created.key;
    } else {
      const created = await createApiKey(db, peppers, await loadPolicy(config.policyFile, PHI_FIELDS), config.apiKeys, manager, {
        partner: typeof v.partner === 'string' ? v.partner : '',
        clinics: items(v.clinics),
        fields: items(v.fields),
        purpose: typeof v.purpose === 'string' ? v.purpose : '',
        expiresInSeconds: duration('expires', v.expires),
        ratePerMinute: count('rate-per-minute', v['rate-per-minute']),
        burst: count('burst', v.burst),
      });
      err(`created ${describe(created.apiKey)}\nthe key is printed below once; it cannot be shown again`);
      line = created.key;
    }
    const buffer = createAuditBuffer({ requestId: `cli-${randomUUID()}`, actor: manager.actor, actorKind: 'system', clientAddr: null });
    for (const e of events) buffer.add(e);
    const statement = buffer.seal();
    if (statement) await client.query(statement.text, statement.values as unknown[]);
    await client.query('COMMIT');
    out(line);
    return 0;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    // Our own refusals say what is wrong with the input; anything else is reported by the caller.
    if (isPhigateError(e) && (e.code === 'BAD_USER_INPUT' || e.code === 'FORBIDDEN')) throw new ApiKeyCommandError(e.message);
    throw e;
  } finally {
    client.release();
    await pool.end();
    await urls.stop();
  }
}
