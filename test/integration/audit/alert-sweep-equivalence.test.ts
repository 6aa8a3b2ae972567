import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR } from '../../../src/db/migrate.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// The alert sweep of migration 040 counts per actor and minute what 029's counted per record
// (bench/README.md, "The alert sweep per record"). Both are run here on the same records, sweep
// after sweep, in two databases: one with today's function, one with 029's put back. They must
// raise the same alerts with the same observed counts, and leave the same state behind, through
// minutes split across sweeps, minutes swept again, a transaction still open across a sweep,
// repeated patients, records without a patient, mixed reads and denials, records of no interest,
// partners, and working hours that put some minutes outside them.

let current: TestDatabase;
let previous: TestDatabase;
beforeAll(async () => {
  [current, previous] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  const migration = await readFile(path.join(MIGRATIONS_DIR, '029_audit_records_writer.sql'), 'utf8');
  const sweep029 = /CREATE OR REPLACE FUNCTION phigate\.sweep_alerts\([\s\S]*?\n\$\$;/.exec(migration)?.[0];
  if (!sweep029) throw new Error('029 no longer defines sweep_alerts');
  await withClient(previous.adminUrl, (c) => c.query(sweep029));
  for (const db of [current, previous]) {
    await withClient(db.adminUrl, (c) => c.query(`UPDATE phigate.alert_sweep SET swept_until = clock_timestamp() - interval '30 minutes'`));
  }
});
afterAll(async () => {
  await current?.drop();
  await previous?.drop();
});

/** mulberry32: the same records in both databases and in every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ACTORS: readonly (readonly [string, string])[] = [
  ['user', 'u-a'], ['user', 'u-b'], ['user', 'u-c'], ['user', 'u-d'], ['partner', 'p-a'], ['partner', 'p-b'], ['system', 's-a'],
  // Reads that name no patient (a search, a list): they count for working hours, not for bulk reads.
  ['user', 'u-none'],
];
const ACTIONS = ['{read}', '{read,masked}', '{masked}', '{denied}', '{read,denied,denied}', '{search}', '{create,update}',
  '{read,read,read,read,masked,read,read,read,read,read,read,read}', '{denied,search}'];

interface Records {
  at: string[];
  kind: string[];
  actor: string[];
  patient: (string | null)[];
  actions: string[];
}

function records(next: () => number, base: number, n: number): Records {
  const r: Records = { at: [], kind: [], actor: [], patient: [], actions: [] };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  for (let i = 0; i < n; i++) {
    const [kind, actor] = pick(ACTORS);
    // Four minutes, each written to in several rounds.
    r.at.push(new Date(base + Math.floor(next() * 4 * 60_000)).toISOString());
    r.kind.push(kind);
    r.actor.push(actor);
    r.patient.push(actor === 'u-none' || next() < 0.1 ? null : `00000000-0000-4000-8000-${String(1 + Math.floor(next() * 9)).padStart(12, '0')}`);
    r.actions.push(pick(ACTIONS));
  }
  return r;
}

const insert = (c: pg.Client, r: Records) =>
  c.query(
    `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     SELECT x.at, 'q-' || x.n, x.actor, x.kind, 'registrar', 'healthcare_operations', x.patient, x.actions::text[],
            array_fill('Patient'::text, ARRAY[cardinality(x.actions::text[])]), array_fill('mrn'::text, ARRAY[cardinality(x.actions::text[])]),
            array_fill(NULL::uuid, ARRAY[cardinality(x.actions::text[])]), array_fill(NULL::text, ARRAY[cardinality(x.actions::text[])])
     FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::uuid[], $5::text[]) WITH ORDINALITY AS x(at, kind, actor, patient, actions, n)`,
    [r.at, r.kind, r.actor, r.patient, r.actions],
  );

interface Rules {
  readonly start: string;
  readonly end: string;
  readonly zone: string;
}
const sweep = async (c: pg.Client, rules: Rules) =>
  (
    await c.query(`SELECT kind, actor_kind, actor, window_start, observed FROM phigate.sweep_alerts(5, 3, $1, $2, $3, 0)`, [
      rules.start,
      rules.end,
      rules.zone,
    ])
  ).rows
    .map((r) => `${r.kind} ${r.actor_kind} ${r.actor} ${r.window_start.toISOString()} ${r.observed}`)
    .sort();

const state = async (c: pg.Client) => ({
  raised: (await c.query(`SELECT kind, actor_kind, actor, window_start, observed FROM phigate.alerts_raised ORDER BY 1, 2, 3, 4`)).rows,
  minutes: (await c.query(`SELECT actor_kind, actor, minute, patients, denied FROM phigate.alert_minutes ORDER BY 1, 2, 3`)).rows,
  patients: (await c.query(`SELECT actor_kind, actor, minute, patient_id FROM phigate.alert_minute_patients ORDER BY 1, 2, 3, 4`)).rows,
  events: (await c.query(`SELECT actor_kind, actor, detail FROM phigate.audit_events WHERE action = 'alert' ORDER BY 1, 2, 3`)).rows,
});

describe('the alert sweep of 040 against 029', () => {
  it('raises the same alerts, once each, and keeps the same state, sweep after sweep', async () => {
    const next = random(20261206);
    // Minutes that ended at least a minute ago, so that no sweep's hour floor or clock cuts them.
    const base = Math.floor(Date.now() / 60_000) * 60_000 - 6 * 60_000;
    // Working hours that start in the third of the four minutes, local to a zone half an hour off
    // UTC: the first two minutes are outside them, and the rest inside but for a night span.
    const zone = 'Asia/Kolkata';
    const local = new Date(base + 2 * 60_000 + 5.5 * 3_600_000);
    const hhmm = (d: Date) => d.toISOString().slice(11, 16);
    const outsideSome = { start: hhmm(local), end: hhmm(new Date(local.getTime() + 3 * 3_600_000)), zone };
    const allDay = { start: '00:00', end: '24:00', zone: 'UTC' };

    const connect = async (db: TestDatabase) => {
      const c = new pg.Client({ connectionString: db.adminUrl });
      await c.connect();
      return c;
    };
    const clients = await Promise.all([current, previous].map(connect));
    // Per database, a connection whose transaction stays open across a sweep in some rounds.
    const open = await Promise.all([current, previous].map(connect));
    try {
      let raised = 0;
      for (let round = 0; round < 12; round++) {
        const batches = [records(next, base, 1 + Math.floor(next() * 40)), records(next, base, 1 + Math.floor(next() * 40))];
        const late = round % 4 === 1 ? records(next, base, 20) : null;
        for (const [i, c] of clients.entries()) {
          for (const b of batches) await insert(c, b);
          if (late) {
            await open[i]!.query('BEGIN');
            await insert(open[i]!, late);
          }
        }
        const rules = round % 3 === 2 ? allDay : outsideSome;
        const [mine, theirs] = await Promise.all(clients.map((c) => sweep(c, rules)));
        expect(mine, `round ${round}`).toEqual(theirs);
        raised += mine!.length;
        if (late) for (const o of open) await o.query('COMMIT');
      }
      // A last sweep sees what the last open transaction wrote; one more finds nothing new.
      for (let i = 0; i < 2; i++) {
        const [mine, theirs] = await Promise.all(clients.map((c) => sweep(c, outsideSome)));
        expect(mine).toEqual(theirs);
        raised += mine!.length;
      }
      const [a, b] = await Promise.all(clients.map(state));
      expect(a).toEqual(b);
      // The scenario exercises every rule, and each alert is raised once.
      expect(new Set(a!.raised.map((r) => r.kind))).toEqual(new Set(['bulk_read', 'denied_spike', 'off_hours']));
      expect(a!.raised.length).toBe(raised);
      expect(a!.events.length).toBe(raised);
    } finally {
      await Promise.all([...clients, ...open].map((c) => c.end()));
    }
  }, 60_000);

  it('fires at one past the threshold, in whichever sweep the minute crosses it, and once', async () => {
    await withClient(current.adminUrl, async (c) => {
      const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 3 * 60_000);
      const at = (s: number) => new Date(minute.getTime() + s * 1000).toISOString();
      const patient = (i: number) => `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`;
      const reads = (ps: number[], actions = '{read}'): Records => ({
        at: ps.map((_, i) => at(i)),
        kind: ps.map(() => 'user'),
        actor: ps.map(() => 'u-edge'),
        patient: ps.map(patient),
        actions: ps.map(() => actions),
      });
      const mine = (rows: string[]) => rows.filter((r) => r.includes(' u-edge '));
      // Five patients, the threshold, over two sweeps (one read twice): nothing.
      await insert(c, reads([1, 2, 3]));
      expect(mine(await sweep(c, { start: '00:00', end: '24:00', zone: 'UTC' }))).toEqual([]);
      await insert(c, reads([3, 4, 5]));
      expect(mine(await sweep(c, { start: '00:00', end: '24:00', zone: 'UTC' }))).toEqual([]);
      // Three denials, the threshold, then a patient read again: nothing.
      await insert(c, reads([5, 5, 5], '{denied}'));
      expect(mine(await sweep(c, { start: '00:00', end: '24:00', zone: 'UTC' }))).toEqual([]);
      // A sixth patient and a fourth denial in one record: both fire, with their counts.
      await insert(c, reads([6], '{read,denied}'));
      expect(mine(await sweep(c, { start: '00:00', end: '24:00', zone: 'UTC' }))).toEqual([
        `bulk_read user u-edge ${minute.toISOString()} 6`,
        `denied_spike user u-edge ${minute.toISOString()} 4`,
      ]);
      // More of both in the same minute: neither fires again, and the patients stay counted at 6.
      await insert(c, reads([7, 8], '{read,denied}'));
      expect(mine(await sweep(c, { start: '00:00', end: '24:00', zone: 'UTC' }))).toEqual([]);
      const { rows } = await c.query(`SELECT patients, denied FROM phigate.alert_minutes WHERE actor = 'u-edge'`);
      expect(rows).toEqual([{ patients: 6, denied: 6 }]);
    });
  });
});
