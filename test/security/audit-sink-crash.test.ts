import { appendFile, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, verifierKey } from '../../src/audit/log/note.ts';
import { fileSigner } from '../../src/audit/log/signer.ts';
import { leafHash, rootOf } from '../../src/audit/log/tree.ts';
import { parseSinkLine, type LeafLine, type SinkLine } from '../../src/audit/sink/lines.ts';
import { withClient } from '../support/db.ts';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process.ts';
import { startProcessStack, type ProcessStack } from '../support/process-stack.ts';

// The outside sink across a crash: a gateway process answers reads (their audit rows committed),
// is killed with SIGKILL before it delivered them, and a part-written line is left in the sink.
// A new process catches up from the database: every committed event reaches the sink, in leaf
// order, and any line seen twice is the same line under the same leaf and event id.

let stack: ProcessStack;
let sinkDir: string;
const running: GatewayProcess[] = [];

beforeAll(async () => {
  stack = await startProcessStack({ patients: 6, seed: 23 });
  sinkDir = path.join(stack.dataDir, 'sink');
});
afterAll(async () => {
  for (const g of running) {
    try {
      process.kill(g.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await stack?.close();
});

const urlOf = (g: GatewayProcess): string => {
  const line = g.output().split('\n').find((l) => l.includes('"phigate listening"'))!;
  return (JSON.parse(line) as { url: string }).url;
};

async function start(sealMs: number): Promise<GatewayProcess> {
  const g = await startGatewayProcess(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    ...stack.env,
    PHIGATE_AUDIT_SINK_DIR: sinkDir,
    PHIGATE_AUDIT_SEAL_MS: String(sealMs),
    PHIGATE_AUDIT_CHECKPOINT_SECONDS: '1',
    PHIGATE_SHUTDOWN_GRACE_MS: '1000',
  });
  running.push(g);
  return g;
}

async function readPatients(url: string, n: number): Promise<void> {
  const physician = stack.data.staff.find((s) => s.roles.includes('physician'))!;
  const token = await stack.issuer.token({ sub: physician.sub, roles: [...physician.roles], clinics: [...physician.clinics], mfa: true });
  for (let i = 0; i < n; i++) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ patients(first: 5) { edges { node { id mrn ssn givenName } } } }' }),
    });
    expect(res.status).toBe(200);
    await res.text();
  }
}

/** The log's entries: one leaf per audit record, one per event of before the narrow layout. */
const LEAF_KEYS = 'SELECT (id << 16)::text AS id FROM phigate.audit_records UNION ALL SELECT id::text FROM phigate.audit_events_v1';
const leafCount = () => withClient(stack.db.adminUrl, async (c) => Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM (${LEAF_KEYS}) k`)).rows[0]!.n));
const isLeaf = (p: SinkLine | null): p is LeafLine => p !== null && p.audit !== 'checkpoint';

async function sinkLines(): Promise<string[]> {
  const files = (await readdir(sinkDir).catch(() => [] as string[])).filter((f) => f.endsWith('.jsonl')).sort();
  return (await Promise.all(files.map((f) => readFile(path.join(sinkDir, f), 'utf8')))).flatMap((t) => t.split('\n').slice(0, -1));
}

describe('sink after kill -9', () => {
  it('catches up after a crash between commit and delivery: nothing lost, duplicates recognisable', { timeout: 180_000 }, async () => {
    // No timer round during the first process's life: its events are committed, never delivered.
    const first = await start(3_600_000);
    await readPatients(urlOf(first), 5);
    const committed = await leafCount();
    expect(committed).toBeGreaterThan(0);
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    expect(await sinkLines()).toEqual([]);

    // A second life that delivers part, then dies mid-write too.
    const second = await start(100);
    const deadline = Date.now() + 60_000;
    while ((await sinkLines()).filter((l) => isLeaf(parseSinkLine(l))).length < committed) {
      if (Date.now() > deadline) throw new Error(`the sink did not catch up:\n${second.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await readPatients(urlOf(second), 3);
    process.kill(second.pid, 'SIGKILL');
    await second.exited;
    const files = (await readdir(sinkDir)).filter((f) => f.endsWith('.jsonl')).sort();
    await appendFile(path.join(sinkDir, files.at(-1)!), '{"audit":"event","leaf":');

    const third = await start(100);
    const total = await leafCount();
    const until = Date.now() + 60_000;
    while (new Set((await sinkLines()).map((l) => parseSinkLine(l)).filter(isLeaf).map((p) => p.leaf)).size < total) {
      if (Date.now() > until) throw new Error(`the sink did not catch up after the crash:\n${third.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    process.kill(third.pid, 'SIGTERM');
    await third.exited;

    const lines = await sinkLines();
    const parsed = lines.map((l) => parseSinkLine(l));
    // The torn line was cut: every line is whole.
    expect(parsed.every((p) => p !== null)).toBe(true);
    const byLeaf = new Map<number, LeafLine>();
    for (const p of parsed) {
      if (!isLeaf(p)) continue;
      const seen = byLeaf.get(p.leaf);
      if (seen) expect(JSON.stringify(p)).toBe(JSON.stringify(seen));
      byLeaf.set(p.leaf, p);
    }
    // Every record (and v1 event) committed is in the sink, once per leaf, with the leaf hash the log holds.
    const log = await withClient(stack.db.adminUrl, async (c) =>
      (await c.query<{ leaf_index: string; event_id: string; leaf_hash: Buffer }>('SELECT leaf_index, event_id, leaf_hash FROM phigate.audit_log ORDER BY leaf_index')).rows,
    );
    const ids = await withClient(stack.db.adminUrl, async (c) => (await c.query<{ id: string }>(LEAF_KEYS)).rows.map((r) => r.id));
    expect(new Set([...byLeaf.values()].map((e) => e.id))).toEqual(new Set(ids));
    expect(log.length).toBe(ids.length);
    const hashes = log.map((l) => {
      const e = byLeaf.get(Number(l.leaf_index))!;
      expect(e.id).toBe(l.event_id);
      return leafHash(Buffer.from(e.canonical, 'base64'));
    });
    log.forEach((l, i) => expect(hashes[i]!.equals(l.leaf_hash)).toBe(true));
    // The checkpoints in the sink verify with the public key and match the sink's own leaves.
    const signer = await fileSigner(path.join(stack.dataDir, 'audit-signing-key.pem'), 'phigate.local/audit');
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    const checkpoints = parsed.filter((p) => p?.audit === 'checkpoint');
    expect(checkpoints.length).toBeGreaterThan(0);
    for (const cp of checkpoints) {
      const body = parseCheckpoint(openNote((cp as { note: string }).note, verifier)!)!;
      expect(body.root.equals(rootOf(hashes, 0, body.size))).toBe(true);
    }
    // The shutdown round signed the whole log.
    expect(Math.max(...checkpoints.map((c) => (c as { size: number }).size))).toBe(log.length);
  });
});
