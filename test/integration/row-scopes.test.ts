import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { assembleApp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { assertRowScopes, RowScopeError } from '../../src/db/row-scopes.ts';
import { withRequestTransaction, type SecurityContext } from '../../src/db/transaction.ts';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { createLogger } from '../../src/log.ts';
import type { PolicySet } from '../../src/policy/types.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { POLICY_FILE } from '../support/gateway.ts';

// A policy file that renames or narrows a role is either enforced by the database exactly as
// written (after `npx phigate migrate` with it) or refused at start-up; never silently different.

type Tree = { roles: Record<string, Record<string, unknown>> };
const DEFAULT_TEXT = readFileSync(POLICY_FILE, 'utf8');
const defaultPolicy = parsePolicy(DEFAULT_TEXT, PHI_FIELDS);

function variantText(change: (tree: Tree) => void): string {
  const tree = parse(DEFAULT_TEXT) as Tree;
  change(tree);
  return stringify(tree);
}
const variant = (change: (tree: Tree) => void): PolicySet => parsePolicy(variantText(change), PHI_FIELDS, 'custom.yaml');

const renamed = variant((t) => {
  t.roles = Object.fromEntries(Object.entries(t.roles).map(([name, role]) => [name === 'physician' ? 'doctor' : name, role]));
});
const narrowed = variant((t) => {
  t.roles.registrar!.rows = 'care_team';
});
const createByBilling = variant((t) => {
  t.roles.registrar!.operations = ['updatePatient'];
  t.roles.billing!.operations = ['createPatient'];
});
const partnerOnCareTeams = variant((t) => {
  t.roles.partner!.rows = 'care_team';
});
const withoutBilling = variant((t) => {
  delete t.roles.billing;
});

const ids = { a1: randomUUID(), a2: randomUUID() };
const open: { db: TestDatabase; pool: Pool }[] = [];

/** A fresh database (migrated without a policy file) with two patients, a1 on dr-a's care team. */
async function database(): Promise<{ db: TestDatabase; pool: Pool }> {
  const db = await createTestDatabase();
  const pool = createPool(db.appUrl, { max: 2 });
  open.push({ db, pool });
  await withClient(db.adminUrl, async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A')`);
    const ins = `INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, 'c-a', $2, '\\x00')`;
    await c.query(ins, [ids.a1, Buffer.from('a1')]);
    await c.query(ins, [ids.a2, Buffer.from('a2')]);
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr-a', 'c-a')`, [ids.a1]);
  });
  return { db, pool };
}

afterEach(async () => {
  for (const { db, pool } of open.splice(0)) {
    await pool.end();
    await db.drop();
  }
});
afterAll(async () => {
  for (const { db, pool } of open.splice(0)) {
    await pool.end();
    await db.drop();
  }
});

const ctx = (actor: string, roles: string[]): SecurityContext => ({
  actor,
  actorKind: 'user',
  roles,
  clinics: ['c-a'],
  requestId: randomUUID(),
  purpose: 'test',
});

const visible = (pool: Pool, actor: string, roles: string[]): Promise<string[]> =>
  withRequestTransaction(pool, ctx(actor, roles), async (tx) =>
    (await tx.query<{ id: string }>('SELECT id FROM phigate.patients ORDER BY id')).rows.map((r) => r.id),
  );

const createPatient = (pool: Pool, roles: string[]): Promise<unknown> =>
  withRequestTransaction(pool, ctx('desk-1', roles), (tx) =>
    tx.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, 'c-a', $2, '\\x00')`, [randomUUID(), Buffer.from(randomUUID())]),
  );

const refusal = (pool: Pool, policy: PolicySet) => assertRowScopes(pool, policy, 'custom.yaml').then(() => null, (err: unknown) => err);

describe('the database enforces the row scopes of the policy it was migrated with', () => {
  it('a database migrated without a policy file enforces policies/default.yaml exactly', async () => {
    const { pool } = await database();
    await expect(assertRowScopes(pool, defaultPolicy, POLICY_FILE)).resolves.toBeUndefined();
  });

  it('a renamed role is refused at start-up until migrate writes it; then the new name is enforced and the old one gone', async () => {
    const { db, pool } = await database();
    const err = await refusal(pool, renamed);
    expect(err).toBeInstanceOf(RowScopeError);
    expect((err as Error).message).toMatch(/^custom\.yaml: roles\.doctor: the database enforces no row scope for this role \(the policy says rows: care_team\); run `npx phigate migrate`/);
    // Before migrate the database knows no doctor: nothing is shown under the new name.
    expect(await visible(pool, 'dr-a', ['doctor'])).toEqual([]);

    const result = await migrate(db.adminUrl, { policy: renamed });
    expect(result.applied).toEqual([]);
    expect(result.roleScopes).toContain('doctor: care_team');
    await expect(assertRowScopes(pool, renamed, 'custom.yaml')).resolves.toBeUndefined();
    expect(await visible(pool, 'dr-a', ['doctor'])).toEqual([ids.a1]);
    expect(await visible(pool, 'dr-a', ['physician'])).toEqual([]);
    // The old policy no longer matches: a replica still running it would refuse to start.
    expect(((await refusal(pool, defaultPolicy)) as Error).message).toMatch(/roles\.physician: the database enforces no row scope/);
  });

  it('a narrowed role is refused until migrated; then the database narrows it exactly as written', async () => {
    const { db, pool } = await database();
    expect(await visible(pool, 'dr-a', ['registrar'])).toEqual([ids.a1, ids.a2].sort());
    expect(((await refusal(pool, narrowed)) as Error).message).toMatch(/roles\.registrar\.rows: the policy says care_team but the database enforces clinic/);

    await migrate(db.adminUrl, { policy: narrowed });
    await expect(assertRowScopes(pool, narrowed, 'custom.yaml')).resolves.toBeUndefined();
    expect(await visible(pool, 'dr-a', ['registrar'])).toEqual([ids.a1]);
    expect(await visible(pool, 'desk-1', ['registrar'])).toEqual([]);
  });

  it('a session that holds a read’s cached plan enforces the new row scopes on its next read, with no query of role_scopes at run time', async () => {
    const { db } = await database();
    // One server session, a named statement with a generic plan, as the gateway reads (056 inlines
    // the reach into that plan: only the function's replacement can change what the plan enforces).
    const one = createPool(db.directAppUrl, { max: 1 });
    try {
      const read = (actor: string) =>
        withRequestTransaction(one, ctx(actor, ['registrar']), async (tx) => {
          const { rows } = await tx.query<{ id: string; pid: number }>('SELECT id, pg_backend_pid() AS pid FROM phigate.patients WHERE clinic_id = $1 ORDER BY id', ['c-a']);
          return { ids: rows.map((r) => r.id), pid: rows[0]?.pid ?? null };
        });
      const before = await read('dr-a');
      expect(before.ids).toEqual([ids.a1, ids.a2].sort());
      expect((await read('desk-1')).ids).toEqual([ids.a1, ids.a2].sort());

      await migrate(db.adminUrl, { policy: narrowed });
      const after = await read('dr-a');
      expect(after.pid).toBe(before.pid);
      expect(after.ids).toEqual([ids.a1]);
      expect((await read('desk-1')).ids).toEqual([]);
      const reach = await withClient(db.adminUrl, (c) => c.query<{ lang: string; src: string }>(
        `SELECT l.lanname AS lang, p.prosrc AS src FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = 'phigate.ctx_patient_reach()'::regprocedure`,
      ));
      expect(reach.rows[0]!.lang).toBe('sql');
      expect(reach.rows[0]!.src).toMatch(/OPERATOR\(pg_catalog\.&&\) '\{billing,clinic_admin\}'::text\[\][\s\S]*OPERATOR\(pg_catalog\.&&\) '\{nurse,physician,registrar\}'::text\[\]/);
    } finally {
      await one.end();
    }
  });

  it('operations are the policy’s too: moving createPatient to billing moves the database’s permission with it', async () => {
    const { db, pool } = await database();
    await expect(createPatient(pool, ['billing'])).rejects.toThrow(/row-level security/);
    expect(((await refusal(pool, createByBilling)) as Error).message).toMatch(
      /roles\.registrar\.operations: the policy says \[updatePatient\] but the database enforces \[createPatient, updatePatient\]/,
    );
    const may = (roles: string[]) =>
      withRequestTransaction(pool, ctx('desk-1', roles), async (tx) => (await tx.query<{ may: boolean }>(`SELECT phigate.ctx_may('createPatient') AS may`)).rows[0]!.may);
    expect([await may(['billing']), await may(['registrar'])]).toEqual([false, true]);
    await migrate(db.adminUrl, { policy: createByBilling });
    await expect(createPatient(pool, ['billing'])).resolves.toBeDefined();
    await expect(createPatient(pool, ['registrar'])).rejects.toThrow(/row-level security/);
    // ctx_may(), which the care-team and grant policies ask, is written from the same rows (056).
    expect([await may(['billing']), await may(['registrar']), await may([])]).toEqual([true, false, false]);
  });

  it('what role_scopes holds is written into ctx_may() as data: an operation with quotes and dollar quotes neither breaks nor extends the function', async () => {
    const { db, pool } = await database();
    // Operations are free text in the table; the function body is made from them (056).
    const odd = `x'$body$ SELECT true $body$'; --`;
    await withClient(db.adminUrl, (c) => c.query(`UPDATE phigate.role_scopes SET operations = operations || $1::text WHERE role = 'billing'`, [odd]));
    const may = (roles: string[], operation: string) =>
      withRequestTransaction(pool, ctx('desk-1', roles), async (tx) => (await tx.query<{ may: boolean }>('SELECT phigate.ctx_may($1) AS may', [operation])).rows[0]!.may);
    expect([await may(['billing'], odd), await may(['registrar'], odd), await may(['billing'], 'createPatient'), await may(['registrar'], 'createPatient')]).toEqual([
      true,
      false,
      false,
      true,
    ]);
  });

  it('a row scope the database does not implement is refused by migrate, which then changes nothing', async () => {
    const { db, pool } = await database();
    await expect(migrate(db.adminUrl, { policy: partnerOnCareTeams })).rejects.toThrow(
      /^roles\.partner\.rows: care_team is a row scope the database does not implement for API keys \(it implements clinic, none\)$/,
    );
    expect(((await refusal(pool, partnerOnCareTeams)) as Error).message).toMatch(/roles\.partner\.rows: care_team is a row scope the database does not implement/);
    await expect(assertRowScopes(pool, defaultPolicy, POLICY_FILE)).resolves.toBeUndefined();
  });

  it('a role the database enforces but the policy does not name is a mismatch too', async () => {
    const { pool } = await database();
    expect(((await refusal(pool, withoutBilling)) as Error).message).toMatch(
      /roles\.billing: the database enforces rows: clinic for a role the policy does not name/,
    );
  });

  it('the gateway role can read the row scopes but never write them', async () => {
    const { pool } = await database();
    await expect(pool.query(`INSERT INTO phigate.role_scopes (role, row_scope) VALUES ('x', 'clinic')`)).rejects.toThrow(/permission denied/);
    await expect(pool.query(`UPDATE phigate.role_scopes SET row_scope = 'clinic'`)).rejects.toThrow(/permission denied/);
    await expect(pool.query('DELETE FROM phigate.role_scopes')).rejects.toThrow(/permission denied/);
    await expect(pool.query(`INSERT INTO phigate.row_scope_kinds (kind, meaning) VALUES ('all', 'x')`)).rejects.toThrow(/permission denied/);
    expect((await pool.query('SELECT role FROM phigate.role_scopes')).rowCount).toBe(defaultPolicy.roles.size);
  });
});

describe('start-up', () => {
  it('the gateway refuses to start on a policy the database does not enforce, in one line naming the role and scope', async () => {
    const { db } = await database();
    const dir = await mkdtemp(path.join(tmpdir(), 'phigate-row-scopes-'));
    try {
      const policyFile = path.join(dir, 'policy.yaml');
      await writeFile(policyFile, variantText((t) => {
        t.roles.nurse!.rows = 'clinic';
      }));
      const config = loadConfig({
        PHIGATE_ENV: 'development',
        PHIGATE_DATA_DIR: dir,
        DATABASE_URL: db.appUrl,
        PHIGATE_POLICY_FILE: policyFile,
        PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      });
      const failure = await assembleApp(config, db.appUrl, createLogger('silent')).then(() => null, (err: unknown) => err as Error);
      expect(failure?.message).toBe(
        `PHIGATE_POLICY_FILE: ${policyFile}: roles.nurse.rows: the policy says clinic but the database enforces care_team; run \`npx phigate migrate\` with this policy file to make the database enforce it`,
      );
      expect(failure?.message).not.toContain('\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
