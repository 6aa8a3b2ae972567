import { expect } from 'vitest';
import { PhigateError } from '../../../src/errors.ts';

/**
 * Asserts that `attempt` is refused as UNAUTHENTICATED with `reason`, and that nothing the client
 * would see (message and extensions) repeats the token or any of the claim values in `secrets`.
 */
export async function expectRefusal(attempt: Promise<unknown>, reason: string, secrets: readonly string[]): Promise<PhigateError> {
  const error = await attempt.then(
    () => expect.fail(`expected a refusal with reason ${reason}`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(PhigateError);
  const refusal = error as PhigateError;
  expect({ code: refusal.code, reason: refusal.reason }).toEqual({ code: 'UNAUTHENTICATED', reason });
  expect(refusal.extensions).toMatchObject({ code: 'UNAUTHENTICATED', reason, http: { status: 401 } });
  const visible = JSON.stringify(refusal.toJSON());
  // Fragments of a few characters (from deliberately malformed tokens) would match by chance.
  for (const secret of secrets.filter((s) => s.length >= 8)) expect(visible).not.toContain(secret);
  return refusal;
}
