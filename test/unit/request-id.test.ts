import { describe, expect, it } from 'vitest';
import { clientRequestIdFrom, newRequestFacts } from '../../src/http/request-id.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('clientRequestIdFrom', () => {
  it.each(['audit-test.1234', 'a1b2c3d4', 'f47ac10b-58cc-4372-a567-0e02b2c3d479'])('keeps the caller id %s', (id) => {
    expect(clientRequestIdFrom(id)).toBe(id);
  });

  it.each([
    ['an SSN', '123-45-6789'],
    ['an SSN without dashes', '123456789'],
    ['a phone number', '555.0142.11'],
    ['too short', 'abc'],
    ['too long', `a${'b'.repeat(64)}`],
    ['spaces', 'request id 1'],
    ['a header injection attempt', 'abc\r\nx-evil: 1'],
    ['absent', null],
  ])('drops %s', (_what, id) => {
    expect(clientRequestIdFrom(id)).toBeNull();
  });
});

describe('newRequestFacts', () => {
  it('always gives the gateway its own id, keeping an acceptable client id beside it', () => {
    const facts = newRequestFacts('f47ac10b-58cc-4372-a567-0e02b2c3d479', '127.0.0.1');
    expect(facts.requestId).toMatch(UUID);
    expect(facts.requestId).not.toBe('f47ac10b-58cc-4372-a567-0e02b2c3d479');
    expect(facts.clientRequestId).toBe('f47ac10b-58cc-4372-a567-0e02b2c3d479');
    expect(newRequestFacts('f47ac10b-58cc-4372-a567-0e02b2c3d479', null).requestId).not.toBe(facts.requestId);
  });
});
