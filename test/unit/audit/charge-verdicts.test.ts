import { describe, expect, it } from 'vitest';
import { chargeVerdicts } from '../../../src/db/phi-usage.ts';

// The writer releases a request as committed unless its charge was refused: a charge the database
// answered nothing for must stop the batch, never count as accepted.
describe('chargeVerdicts', () => {
  it('maps each row to its charge by n', () => {
    expect(chargeVerdicts(2, [{ n: '2', accepted: false, retry_after_seconds: 7 }, { n: 1, accepted: true, retry_after_seconds: 0 }])).toEqual([
      { accepted: true },
      { accepted: false, retryAfterSeconds: 7 },
    ]);
  });

  it('refuses a batch in which a charge has no verdict', () => {
    expect(() => chargeVerdicts(3, [{ n: 1, accepted: true, retry_after_seconds: 0 }])).toThrow('has no verdict');
  });

  it('refuses a verdict that names no charge of the batch', () => {
    expect(() => chargeVerdicts(1, [{ n: 2, accepted: true, retry_after_seconds: 0 }])).toThrow('names no charge');
  });
});
