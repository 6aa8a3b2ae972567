import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { inOneWindow, WindowStraddledError } from '../support/one-window.ts';

// The helper that keeps a per-minute test inside one minute of the database clock
// (test/support/one-window.ts): it must judge a run that stayed in its window, and only that one.
// The window here is a value the test moves itself, standing in for the clock's minute.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await sql('CREATE TABLE public.one_window (id boolean PRIMARY KEY DEFAULT true, w integer NOT NULL)');
  await sql('INSERT INTO public.one_window (w) VALUES (0)');
});
afterAll(async () => db?.drop());

const sql = (text: string) => withClient(db.adminUrl, (c) => c.query(text));
const WINDOW = '(SELECT w FROM public.one_window)';
/** The boundary a slow run crosses: the window changes while an attempt runs. */
const crossBoundary = () => sql('UPDATE public.one_window SET w = w + 1');

describe('inOneWindow', () => {
  it('judges a run that stayed in its window once: its failure is the test failure', async () => {
    let attempts = 0;
    const run = inOneWindow(db.adminUrl, WINDOW, async () => {
      attempts++;
      throw new Error('the behaviour is broken');
    });
    await expect(run).rejects.toThrow('the behaviour is broken');
    expect(attempts).toBe(1);
  });

  it('runs again after a run that straddled a boundary, failed or passed, and returns the run that stayed', async () => {
    let attempts = 0;
    const value = await inOneWindow(db.adminUrl, WINDOW, async () => {
      attempts++;
      if (attempts === 1) {
        await crossBoundary();
        throw new Error('counted across two windows');
      }
      if (attempts === 2) {
        await crossBoundary();
        return 'passed across two windows';
      }
      return 'passed in one window';
    });
    expect(value).toBe('passed in one window');
    expect(attempts).toBe(3);
  });

  it('gives up after a few straddling runs, naming the straddles, with the last failure as the cause', async () => {
    let attempts = 0;
    const run = inOneWindow(db.adminUrl, WINDOW, async () => {
      attempts++;
      await crossBoundary();
      throw new Error(`attempt ${attempts}`);
    });
    const error = await run.then(
      () => expect.unreachable('four straddled runs proved nothing'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WindowStraddledError);
    expect(error).toMatchObject({ code: 'WINDOW_STRADDLED' });
    expect((error as WindowStraddledError).straddles).toHaveLength(4);
    expect((error as Error).message).toMatch(/straddled/);
    expect(((error as Error).cause as Error).message).toBe('attempt 4');
    expect(attempts).toBe(4);
  });

  it('fails when every run straddled even though the last one passed: a straddled pass proves nothing', async () => {
    let attempts = 0;
    const run = inOneWindow(db.adminUrl, WINDOW, async () => {
      attempts++;
      await crossBoundary();
      return `passed across two windows (${attempts})`;
    });
    const error = await run.then(
      () => expect.unreachable('a straddled pass was reported as a pass'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WindowStraddledError);
    expect((error as WindowStraddledError).straddles).toHaveLength(4);
    expect((error as Error).cause).toBe('passed across two windows (4)');
    expect(attempts).toBe(4);
  });
});
