import type { ParseArgsConfig } from 'node:util';
import { auditSigner } from '../audit/log/from-config.ts';
import { verifierKey } from '../audit/log/note.ts';
import { createLogRunner } from '../audit/log/runner.ts';
import { sinksFromConfig } from '../audit/sink/from-config.ts';
import type { Config } from '../config.ts';
import { createPool } from '../db/pool.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { createLogger } from '../log.ts';

/** `phigate audit <verb>`: the audit log as evidence (docs/audit-log.md). */
export class AuditCommandError extends Error {}

type Values = Record<string, string | boolean | undefined>;

export const auditOptions: NonNullable<ParseArgsConfig['options']> = {};

export const AUDIT_USAGE = `  audit seal                    seal committed audit records, sign a checkpoint, deliver to the sink; once
  audit public-key              print the key that verifies the audit log's checkpoints (C2SP vkey)`;

type Verb = (values: Values, config: Config, out: (s: string) => void, err: (s: string) => void) => Promise<number>;

const verbs: Record<string, Verb> = {
  async 'public-key'(_v, config, out) {
    const signer = await auditSigner(config, { create: false });
    out(verifierKey(signer.name, signer.publicKey));
    return 0;
  },

  async seal(_v, config, out, err) {
    const signer = await auditSigner(config);
    const urls = await databaseUrls(config, err);
    const pool = createPool(urls.appUrl, { max: 1, caFile: config.databaseCaFile, applicationName: 'phigate-audit-log' });
    try {
      const runner = createLogRunner({ pool, signer, settings: config.auditLog, sinks: await sinksFromConfig(config.auditLog), logger: createLogger('silent'), timer: false });
      const r = await runner.round(true);
      const busy = r.delivered.some((d) => d === null);
      out(`sealed ${r.sealed} leaves (audit records, or events of before the narrow layout); ${r.checkpoint === null ? 'no new checkpoint' : `checkpoint at tree size ${r.checkpoint}`}${busy ? '; a sink was busy with another process' : ''}`);
      return 0;
    } finally {
      await pool.end();
      await urls.stop();
    }
  },
};

export async function runAudit(positionals: readonly string[], values: Values, config: Config, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [verb, ...rest] = positionals;
  const run = verb === undefined ? undefined : verbs[verb];
  if (run === undefined) throw new AuditCommandError(`audit needs one of: ${Object.keys(verbs).join(', ')}`);
  if (rest.length > 0) throw new AuditCommandError(`audit ${verb} takes no further words`);
  return run(values, config, out, err);
}
