import { createSchema, createYoga, type Plugin } from 'graphql-yoga';
import { describe, expect, it, vi } from 'vitest';
import { createCostGate, useExecutionBudget } from '../../../src/http/plugins/use-execution-budget.ts';

// use-query-limits' measure: `items(first: 10) { a b }` costs 1 + 10 x 2 = 21, `one { a }` 2.
const PAGE = '{ items(first: 10) { a b } }';
const ONE = '{ one { a } }';

/** A gateway-shaped yoga whose `items` resolver blocks until the test lets it go. */
function blockingYoga(budget: number) {
  const started: string[] = [];
  const releases = new Map<string, () => void>();
  let running = 0;
  let mostRunning = 0;
  const schema = createSchema<{ name: string; tx: { failed: boolean } }>({
    typeDefs: 'type Query { items(first: Int): [Item!]! one: Item } type Item { a: String b: String }',
    resolvers: {
      Query: {
        items: async (_: unknown, __: unknown, ctx: { name: string }) => {
          started.push(ctx.name);
          mostRunning = Math.max(mostRunning, ++running);
          await new Promise<void>((resolve) => releases.set(ctx.name, resolve));
          running--;
          return [{ a: ctx.name, b: 'x' }];
        },
        one: (_: unknown, __: unknown, ctx: { name: string }) => ({ a: ctx.name }),
      },
    },
  });
  const contexts = new Map<string, { name: string; tx: { failed: boolean } }>();
  const yoga = createYoga({
    schema,
    logging: false,
    context: ({ request }) => {
      const name = request.headers.get('x-name') ?? '';
      const ctx = { name, tx: { failed: false } };
      contexts.set(name, ctx);
      return ctx;
    },
    plugins: [useExecutionBudget({ budget, maxPageSize: 100 }) as Plugin],
  });
  const ask = async (query: string, name: string) =>
    (await yoga.fetch('http://localhost/graphql', { method: 'POST', headers: { 'content-type': 'application/json', 'x-name': name }, body: JSON.stringify({ query }) })).json();
  const release = (name: string) => {
    const r = releases.get(name);
    if (!r) throw new Error(`${name} is not running`);
    releases.delete(name);
    r();
  };
  return { ask, release, started, contexts, running: () => running, mostRunning: () => mostRunning };
}

describe('useExecutionBudget', () => {
  it('makes pages past the budget wait, not fail, and admits them in arrival order as budget comes back', async () => {
    const y = blockingYoga(50);
    const answers = ['p1', 'p2', 'p3', 'p4', 'p5'].map((name) => y.ask(PAGE, name));
    await vi.waitFor(() => expect(y.started).toEqual(['p1', 'p2']));
    // Nothing else starts while both run.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(y.started).toEqual(['p1', 'p2']);
    y.release('p2');
    await vi.waitFor(() => expect(y.started).toEqual(['p1', 'p2', 'p3']));
    y.release('p1');
    await vi.waitFor(() => expect(y.started).toEqual(['p1', 'p2', 'p3', 'p4']));
    y.release('p3');
    y.release('p4');
    await vi.waitFor(() => expect(y.started).toHaveLength(5));
    y.release('p5');
    const results = await Promise.all(answers);
    expect(results.map((r) => r.errors)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(results.map((r) => r.data.items[0].a)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5']);
    expect(y.mostRunning()).toBe(2);
    // Everything given back: two new pages start at once.
    const more = [y.ask(PAGE, 'p6'), y.ask(PAGE, 'p7')];
    await vi.waitFor(() => expect(y.running()).toBe(2));
    y.release('p6');
    y.release('p7');
    await Promise.all(more);
  });

  it('lets a cheap read run beside a page while the budget has room for it', async () => {
    const y = blockingYoga(30);
    const page = y.ask(PAGE, 'page');
    await vi.waitFor(() => expect(y.started).toEqual(['page']));
    expect(await y.ask(ONE, 'read')).toEqual({ data: { one: { a: 'read' } } });
    y.release('page');
    await page;
  });

  it('runs an execution costlier than the whole budget alone, and the next after it', async () => {
    const y = blockingYoga(10);
    const first = y.ask(PAGE, 'big1');
    const second = y.ask(PAGE, 'big2');
    await vi.waitFor(() => expect(y.started).toEqual(['big1']));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(y.started).toEqual(['big1']);
    y.release('big1');
    await vi.waitFor(() => expect(y.started).toEqual(['big1', 'big2']));
    y.release('big2');
    expect((await Promise.all([first, second])).map((r) => r.errors)).toEqual([undefined, undefined]);
  });

  it('does not run an execution abandoned while it waited, and passes its place on', async () => {
    const y = blockingYoga(21);
    const first = y.ask(PAGE, 'first');
    await vi.waitFor(() => expect(y.started).toEqual(['first']));
    const abandoned = y.ask(PAGE, 'abandoned');
    const third = y.ask(PAGE, 'third');
    await vi.waitFor(() => expect(y.contexts.has('third')).toBe(true));
    // What useRequestTimeout leaves when the deadline passes: the transaction is over.
    y.contexts.get('abandoned')!.tx.failed = true;
    y.release('first');
    await vi.waitFor(() => expect(y.started).toEqual(['first', 'third']));
    y.release('third');
    const [, gone, last] = await Promise.all([first, abandoned, third]);
    expect(gone.data).toBeFalsy();
    expect(gone.errors).toHaveLength(1);
    expect(last.errors).toBeUndefined();
  });
});

describe('createCostGate', () => {
  it('gives every cost back, however executions end', async () => {
    const gate = createCostGate(10);
    expect(gate.take(6)).toBeNull();
    const waiting = gate.take(6);
    expect(waiting).not.toBeNull();
    expect([gate.used, gate.waiting]).toEqual([6, 1]);
    gate.give(6);
    await waiting;
    expect([gate.used, gate.waiting]).toEqual([6, 0]);
    gate.give(6);
    expect([gate.used, gate.waiting]).toEqual([0, 0]);
  });

  it('refuses a budget that admits nothing', () => {
    expect(() => createCostGate(0)).toThrow(/at least 1/);
    expect(() => createCostGate(Number.NaN)).toThrow(/at least 1/);
  });
});
