import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import type { Config } from '../config.ts';
import { auditSigner } from '../audit/log/from-config.ts';
import { parseVerifierKey, verifierKey, type Verifier } from '../audit/log/note.ts';
import { checkProof } from '../audit/log/proof.ts';
import { describeLeaf, proveConsistency, proveEvent, ProveError } from '../audit/verify/prove.ts';
import { retainAuditEvents, type RetentionRun } from '../audit/verify/retain.ts';
import { CheckpointUnverifiedError } from '../audit/verify/retention-bound.ts';
import { sinkPositions, SinkUnreadableError } from '../audit/verify/sink-positions.ts';
import { verifyLog, type VerifyReport } from '../audit/verify/verify.ts';
import { SinkFormatError } from '../audit/verify/sink-reader.ts';
import { pgConnection } from '../db/tls.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { phaseProgressBar, progressBar } from './progress.ts';

/**
 * `phigate audit verify | prove | check-proof | retain` (docs/audit-log.md): the verbs that turn
 * the audit log into evidence. verify, prove and retain read the database as the migrator
 * (PHIGATE_MIGRATE_URL); check-proof needs nothing but its arguments.
 */
type Values = Record<string, string | boolean | undefined>;

export class AuditEvidenceError extends Error {}

/**
 * The shortest retention `audit retain` applies unasked: six years (2192 days, leap days
 * included), HIPAA's retention of required documentation (45 CFR 164.316(b)(2)(i)), which audit
 * records are kept for. A shorter period, from --days or PHIGATE_AUDIT_RETENTION_DAYS, needs
 * SHORT_RETENTION_FLAG, and the run then writes an `alert` event saying so next to its own.
 */
export const RETENTION_FLOOR_DAYS = 2192;
const SHORT_RETENTION_FLAG = 'below-six-years';

export const auditEvidenceOptions = {
  since: { type: 'string' },
  key: { type: 'string' },
  'key-file': { type: 'string' },
  'sink-dir': { type: 'string' },
  event: { type: 'string' },
  checkpoint: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  proof: { type: 'string' },
  days: { type: 'string' },
  confirm: { type: 'boolean' },
  [SHORT_RETENTION_FLAG]: { type: 'boolean' },
} as const;

export const AUDIT_EVIDENCE_USAGE = `  audit verify [--since T] [--sink-dir DIR] [--key VKEY | --key-file F]
                                recompute the log from the database, check every checkpoint, the sink and the
                                patient listing of records of several patients; exit 0 clean, 1 naming the first
                                bad event; --since T recomputes the leaves after the last checkpoint signed (by its
                                signed time) at or before T, and says which
  audit prove --event ID [--checkpoint N]
                                an inclusion proof of the entry (event or record) holding event ID against the latest
                                signed checkpoint (or that of size N); the proof carries the entry's canonical bytes
  audit prove --from N [--to M] a consistency proof between the checkpoints of sizes N and M (latest)
  audit check-proof [--proof FILE] [--event ID] (--key VKEY | --key-file F)
                                check a proof (stdin without --proof) with the public key alone, offline;
                                with --event, also that event ID is inside the proven entry
  audit retain [--days N] [--below-six-years] [--key VKEY | --key-file F] --confirm
                                remove events past retention (PHIGATE_AUDIT_RETENTION_DAYS), keeping their leaves:
                                only those under a checkpoint whose signature checks out with the public key and
                                whose signed time is before the cutoff (one without a time bounds nothing),
                                and none a sink has not delivered yet (the configured ones, PHIGATE_AUDIT_SINK_DIR
                                and _STDOUT, and every one a gateway delivers to); a period under six years
                                (${RETENTION_FLOOR_DAYS} days) is refused without --below-six-years, and audited as an alert with it`;

export type Io = { readonly out: (s: string) => void; readonly err: (s: string) => void };

async function keyText(v: Values): Promise<string | null> {
  if (typeof v.key === 'string') return v.key;
  if (typeof v['key-file'] === 'string') return (await readFile(v['key-file'], 'utf8')).trim();
  return null;
}

async function verifierOf(v: Values, config: Config): Promise<Verifier> {
  let text = await keyText(v);
  if (text === null) {
    const signer = await auditSigner(config, { create: false });
    text = verifierKey(signer.name, signer.publicKey);
  }
  const verifier = parseVerifierKey(text);
  if (verifier === null) throw new AuditEvidenceError('--key: not a signed-note Ed25519 verifier key (name+hash+key, as `phigate audit public-key` prints)');
  return verifier;
}

async function withMigrator<T>(config: Config, io: Io, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const urls = await databaseUrls(config, io.err);
  try {
    if (!urls.migrateUrl) throw new AuditEvidenceError('PHIGATE_MIGRATE_URL: is required to read the audit log');
    const client = new pg.Client({ ...pgConnection(urls.migrateUrl, config.databaseCaFile), application_name: 'phigate-audit-cli' });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  } finally {
    await urls.stop();
  }
}

function since(raw: string | boolean | undefined): Date | null {
  if (raw === undefined) return null;
  const d = typeof raw === 'string' ? new Date(raw) : new Date(NaN);
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(String(raw))) throw new AuditEvidenceError('--since must be an ISO 8601 date or time (e.g. 2026-12-01 or 2026-12-01T00:00:00Z)');
  return d;
}

function whole(name: string, raw: string | boolean | undefined): number {
  if (typeof raw !== 'string' || !/^(0|[1-9]\d{0,15})$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new AuditEvidenceError(`--${name} must be a whole number`);
  return Number(raw);
}

/**
 * Which leaves a verify recomputed, said exactly: with --since, a partial verify's range comes
 * from the signed checkpoints, not from the events' own times (docs/audit-log.md).
 */
export function rangeLine(report: VerifyReport, since: Date | null): string {
  if (since === null) return 'every leaf recomputed';
  const at = `--since ${since.toISOString()}`;
  const { fromLeaf, checkpoint, listingFrom } = report.range;
  if (checkpoint === null) return `${at}: no checkpoint carries a signed time at or before it, so every leaf was recomputed`;
  const listing = listingFrom === null ? '' : `; patient listings from record ${listingFrom}`;
  return (
    `${at}: leaves ${fromLeaf} to the end recomputed (checkpoint ${checkpoint.size}, signed at ${new Date(checkpoint.time).toISOString()}, is the last signed at or before it); ` +
    `leaves 0 to ${fromLeaf - 1} counted by their stored hashes under the signed roots${listing}`
  );
}

async function verify(v: Values, config: Config, io: Io): Promise<number> {
  const verifier = await verifierOf(v, config);
  const sinkDir = typeof v['sink-dir'] === 'string' ? v['sink-dir'] : config.auditLog.sinkDir;
  const from = since(v.since);
  const report = await withMigrator(config, io, (client) =>
    verifyLog({
      client,
      verifier,
      since: from,
      sinkDir,
      onProgress: progressBar('audit verify', process.stderr),
      onListingProgress: phaseProgressBar('audit verify: patient listings', process.stderr),
    }),
  ).catch((e: unknown) => {
    if (e instanceof SinkFormatError) throw new AuditEvidenceError(e.message);
    throw e;
  });
  if (report.problem !== null) {
    io.out(`audit log: NOT VERIFIED: ${report.problem.eventId === null ? '' : `event ${report.problem.eventId}: `}${report.problem.kind}`);
    io.err(report.problem.message);
    if (from !== null) io.err(rangeLine(report, from));
    return 1;
  }
  io.out(
    `audit log verified: ${report.leaves} leaves (${report.rehashed} recomputed from their records or events, ${report.retired} removed by retention), ` +
      `${report.checkpoints} signed checkpoints by ${verifier.name}` +
      `${sinkDir ? `, ${report.sinkCompared} leaves matched the sink` : ', no sink compared'}` +
      `; not yet signed: ${report.unsigned} leaves; not yet sealed: ${report.unsealed} records or events` +
      `; ${report.listed} records of several patients matched their patient listing` +
      `${from === null ? '' : `; ${rangeLine(report, from)}`}`,
  );
  return 0;
}

async function prove(v: Values, config: Config, io: Io): Promise<number> {
  const event = v.event;
  if ((event === undefined) === (v.from === undefined)) throw new AuditEvidenceError('prove needs either --event ID or --from N [--to M]');
  if (event !== undefined) eventId(event);
  const text = await withMigrator(config, io, (c) =>
    typeof event === 'string'
      ? proveEvent(c, event, v.checkpoint === undefined ? null : whole('checkpoint', v.checkpoint))
      : proveConsistency(c, whole('from', v.from), v.to === undefined ? null : whole('to', v.to)),
  ).catch((e: unknown) => {
    if (e instanceof ProveError) throw new AuditEvidenceError(e.message);
    throw e;
  });
  process.stdout.write(text);
  return 0;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

const MAX_EVENT_ID = 2n ** 63n - 1n;

function eventId(raw: string | boolean): bigint {
  if (typeof raw !== 'string' || !/^[1-9]\d{0,18}$/.test(raw) || BigInt(raw) > MAX_EVENT_ID) throw new AuditEvidenceError('--event must be an event id');
  return BigInt(raw);
}

async function checkProofVerb(v: Values, io: Io): Promise<number> {
  const event = v.event === undefined ? null : eventId(v.event);
  const key = await keyText(v);
  if (key === null) throw new AuditEvidenceError('check-proof needs the log public key: --key VKEY or --key-file FILE');
  const text = typeof v.proof === 'string' ? await readFile(v.proof, 'utf8') : await readAll(process.stdin);
  const r = checkProof(text, key);
  if (!r.ok) {
    io.out(`proof: NOT VALID: ${r.problem}`);
    return 1;
  }
  if (r.kind === 'inclusion') {
    const about = describeLeaf(r.leaf, event);
    if (!about.ok) {
      io.out(`proof: NOT VALID: ${about.problem}`);
      return 1;
    }
    const at = r.checkpoint.time === undefined ? '' : ` at ${new Date(r.checkpoint.time).toISOString()}`;
    io.out(`proof: valid. ${about.text}; entry ${r.leafIndex} of the log ${r.checkpoint.origin} of ${r.checkpoint.size} entries, signed${at}`);
  } else {
    io.out(`proof: valid. the log ${r.newer.origin} of ${r.newer.size} entries extends its signed tree of ${r.older.size} entries unchanged`);
  }
  return 0;
}

async function retain(v: Values, config: Config, io: Io): Promise<number> {
  const days = v.days === undefined ? config.auditRetentionDays : whole('days', v.days);
  if (days < 1) throw new AuditEvidenceError('--days must be at least 1');
  const short = days < RETENTION_FLOOR_DAYS;
  if (short && v[SHORT_RETENTION_FLAG] !== true) {
    const source = v.days === undefined ? `PHIGATE_AUDIT_RETENTION_DAYS=${days}` : `--days ${days}`;
    throw new AuditEvidenceError(
      `retention refused: ${source} is under six years (${RETENTION_FLOOR_DAYS} days), which audit records are kept for (HIPAA 164.316(b)(2)); nothing was removed. To remove younger events anyway, add --${SHORT_RETENTION_FLAG} (the run is then audited as an alert)`,
    );
  }
  const before = new Date(Date.now() - days * 86_400_000);
  const sinks = { sinkDir: config.auditLog.sinkDir, sinkStdout: config.auditLog.sinkStdout };
  if (v.confirm !== true) {
    io.err(
      `would remove the audit events older than ${before.toISOString()} (${days} days) under the last checkpoint signed before then (by its signed time) that every sink has delivered; run again with --confirm`,
    );
    return 2;
  }
  const verifier = await verifierOf(v, config);
  const requestId = `retain-${randomUUID()}`;
  if (short) io.err(`warning: retention of ${days} days, under six years (${RETENTION_FLOOR_DAYS} days), as --${SHORT_RETENTION_FLAG} asks; audited as an alert (request ${requestId})`);
  const r = await withMigrator(config, io, async (c) => {
    const positions = await sinkPositions(sinks, c);
    if (!short) return retainAuditEvents(c, before, requestId, positions, verifier);
    // The alert commits with the run or not at all: no short run goes unrecorded, and no alert
    // stands for a run that did not happen.
    await c.query('BEGIN');
    try {
      await recordShortRetention(c, requestId, days);
      const run = await retainAuditEvents(c, before, requestId, positions, verifier);
      await c.query('COMMIT');
      return run;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }).catch((e: unknown) => {
    if (e instanceof SinkUnreadableError || e instanceof CheckpointUnverifiedError) throw new AuditEvidenceError(`retention refused: ${e.message}`);
    throw e;
  });
  const range = r.events === 0 ? 'no events' : `${r.events} events (leaves ${r.fromLeaf} to ${r.toLeaf - 1})`;
  io.out(`retention: removed ${range} older than ${before.toISOString()}; ${signedBound(r)}; ${heldBack(r)}; their leaf hashes and every checkpoint stay; audited as event ${r.eventId}`);
  return 0;
}

/** An `alert` event beside the run's `retention` one, with the same request id: who ran it, and how short the period was. */
async function recordShortRetention(c: pg.Client, requestId: string, days: number): Promise<void> {
  await c.query(
    `INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
     VALUES ($1, session_user, 'system', 'HSYSADMIN', 'alert', 'AuditLog', $2)`,
    [requestId, `retention_below_floor:${days}`],
  );
}

/** Which signed checkpoint ended the run, and which could not: said, since a run that removes nothing otherwise looks like one with nothing to remove. */
function signedBound(r: Pick<RetentionRun, 'checkpoint' | 'untimed'>): string {
  const untimed =
    r.untimed === 0 ? '' : `; ${r.untimed} later checkpoint${r.untimed === 1 ? ' carries no signed time and bounds' : 's carry no signed time and bound'} nothing (retention stops before ${r.untimed === 1 ? 'it' : 'them'})`;
  if (r.checkpoint === null) return `no checkpoint whose signature checks out was signed (by its signed time) before then, so nothing could go${untimed}`;
  return `bounded by checkpoint ${r.checkpoint.size}, signed at ${new Date(r.checkpoint.time).toISOString()}${untimed}`;
}

function heldBack(r: RetentionRun): string {
  if (r.bound === null) return 'no sink configured or delivered to, so none bounds the run';
  const sink = `the sink ${r.bound.sink} (at leaf ${r.bound.nextLeaf})`;
  return r.heldBack === 0 ? `none held back by ${sink}` : `held back ${r.heldBack} leaves past retention that ${sink} has not delivered yet`;
}

/** check-proof reads its arguments and files only, never the environment. */
export const auditVerbNeedsConfig = (verb: string | undefined): boolean => verb !== 'check-proof';

/** Runs `verb` when it is one of these; null when it is not (another module's verb). */
export async function runAuditEvidence(verb: string, v: Values, config: Config, io: Io): Promise<number | null> {
  switch (verb) {
    case 'verify':
      return verify(v, config, io);
    case 'prove':
      return prove(v, config, io);
    case 'check-proof':
      return checkProofVerb(v, io);
    case 'retain':
      return retain(v, config, io);
    default:
      return null;
  }
}
