import { expect } from 'vitest';
import { PhigateError } from '../../../src/errors.ts';
import type { ErrorCode } from '../../../src/errors.ts';

/** Runs `fn`, asserts it threw a PhigateError with `code` (and `reason` when given), and returns it. */
export function thrown(fn: () => unknown, code: ErrorCode, reason?: string): PhigateError {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  return check(error, code, reason);
}

/** As `thrown`, for a promise that must reject. */
export async function rejected(promise: Promise<unknown>, code: ErrorCode, reason?: string): Promise<PhigateError> {
  return failed(() => promise, code, reason);
}

/** As `rejected`, for a call that may fail either way: by throwing, or by returning a promise that rejects. */
export async function failed(fn: () => unknown, code: ErrorCode, reason?: string): Promise<PhigateError> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  return check(error, code, reason);
}

function check(error: unknown, code: ErrorCode, reason: string | undefined): PhigateError {
  expect(error).toBeInstanceOf(PhigateError);
  const e = error as PhigateError;
  expect(e.code).toBe(code);
  if (reason !== undefined) expect(e.reason).toBe(reason);
  return e;
}
