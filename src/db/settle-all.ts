/**
 * Awaits pipelined statements; the first error, if any, once all have answered. Waiting for all
 * keeps a connection from going back to its pool while a statement sent on it is still pending.
 */
export async function settleAll(sent: Promise<unknown>[]): Promise<{ values: unknown[]; error?: unknown }> {
  const outcomes = await Promise.allSettled(sent);
  const failed = outcomes.find((o) => o.status === 'rejected');
  return { values: outcomes.map((o) => (o.status === 'fulfilled' ? o.value : undefined)), ...(failed ? { error: failed.reason } : {}) };
}
