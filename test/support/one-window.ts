import { withClient } from './db.ts';

/**
 * The database clock's minute: the window of the PHI-per-minute caps (phigate.phi_usage) and of
 * the alert sweep's bulk reads and denied fields (audit rows' occurred_at).
 */
export const MINUTE = "date_trunc('minute', clock_timestamp())";

/** The local day in `timeZone` by the database clock: the window of an off-hours alert. */
export const localDay = (timeZone: string): string => `date_trunc('day', clock_timestamp() AT TIME ZONE '${timeZone.replaceAll("'", "''")}')`;

/** Straddling attempts before the helper gives up (each straddle costs one boundary). */
const ATTEMPTS = 4;

/** Every attempt straddled a boundary: the test proved nothing, so it fails whatever the last attempt did. */
export class WindowStraddledError extends Error {
  readonly code = 'WINDOW_STRADDLED';

  constructor(
    readonly straddles: readonly string[],
    cause: unknown,
  ) {
    super(`every attempt straddled a window boundary, so none was judged: ${straddles.join('; ')}`, { cause });
    this.name = 'WindowStraddledError';
  }
}

/**
 * Runs `attempt` so that what it checks happens inside one window of the database clock (`window`,
 * an SQL expression of clock_timestamp() such as MINUTE). The window is read before and after: an
 * attempt that began and ended in the same window counts, passed or failed, while one that
 * straddled a boundary proves nothing either way and runs again, as a fresh attempt (new
 * principal, new actor) that starts just past that boundary. After ATTEMPTS straddles it throws
 * WindowStraddledError (the last outcome as its `cause`) even when that attempt passed: a pass
 * counted across two windows is no pass. The database's clock is the one its windows are
 * reckoned by, so no wall-clock margin is guessed and no sleep waits for one.
 */
export async function inOneWindow<T>(adminUrl: string, window: string, attempt: () => Promise<T>): Promise<T> {
  const windowNow = () => withClient(adminUrl, async (c) => String((await c.query<{ w: string }>(`SELECT (${window})::text AS w`)).rows[0]!.w));
  const straddles: string[] = [];
  for (;;) {
    const before = await windowNow();
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await attempt() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    const after = await windowNow();
    if (before === after) {
      if (outcome.ok) return outcome.value;
      throw outcome.error;
    }
    straddles.push(`${before} -> ${after}`);
    if (straddles.length === ATTEMPTS) throw new WindowStraddledError(straddles, outcome.ok ? outcome.value : outcome.error);
  }
}
