import { describe, expect, it } from 'vitest';
import { createLogger, flatLineWriter, requestFields, requestLogger } from '../../src/log.ts';

const FACTS = { requestId: 'req-abcdef12', clientRequestId: 'client-id-1', clientAddr: '203.0.113.7', subject: 'dr-a' };

function capture() {
  const lines: Record<string, any>[] = [];
  const logger = createLogger('debug', { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { logger, lines };
}

describe('logger', () => {
  it('censors credentials, documents, SQL and PHI fields at the top level and one level down', () => {
    const { logger, lines } = capture();
    const secrets = {
      authorization: 'Bearer eyJ.secret.sig',
      token: 'tok-secret',
      password: 'pw-secret',
      secret: 's-secret',
      apiKey: 'k-secret',
      query: '{ patientBySsn(ssn: "900-12-3456") { id } }',
      variables: { ssn: '900-12-3456' },
      sql: 'SELECT 1',
      values: ['900-12-3456'],
      ssn: '900-12-3456',
      givenName: 'Wrenna',
      notes: 'private',
    };
    logger.info(secrets, 'top');
    logger.info({ nested: secrets, req: { headers: { authorization: 'Bearer eyJ.secret.sig', cookie: 'sid=1' } } }, 'nested');
    const text = JSON.stringify(lines);
    for (const v of ['eyJ.secret.sig', 'tok-secret', 'pw-secret', 's-secret', 'k-secret', '900-12-3456', 'SELECT 1', 'Wrenna', 'private', 'sid=1']) {
      expect(text).not.toContain(v);
    }
    expect(lines[0]!.ssn).toBe('[redacted]');
    expect(lines[1]!.nested.givenName).toBe('[redacted]');
  });

  it('censors the top-level keys of a flat line written through flatLineWriter, and names its request', async () => {
    const { logger, lines } = capture();
    const summary = flatLineWriter(logger);
    summary({ ...requestFields(FACTS), outcome: 'committed', ssn: '900-12-3456', token: 'tok-secret', authorization: 'Bearer eyJ.secret.sig', errors: ['FIELD_DENIED'] }, 'request');
    const text = JSON.stringify(lines);
    for (const v of ['900-12-3456', 'tok-secret', 'eyJ.secret.sig']) expect(text).not.toContain(v);
    expect(lines[0]).toMatchObject({ ...FACTS, outcome: 'committed', ssn: '[redacted]', errors: ['FIELD_DENIED'], msg: 'request' });
  });

  it('names the request, who asked and from where on every line of its logger, and only there', async () => {
    const { logger, lines } = capture();
    const log = requestLogger(logger, FACTS);
    await new Promise((r) => setImmediate(r));
    log.error({ err: { code: '42501' } }, 'from the request');
    logger.info('outside any request');
    expect(lines[0]).toMatchObject({ ...FACTS, msg: 'from the request' });
    expect(lines[1]!.requestId).toBeUndefined();
    expect(lines[1]!.subject).toBeUndefined();
  });

  it('leaves out what a request does not know yet', () => {
    const { logger, lines } = capture();
    requestLogger(logger, { requestId: 'req-abcdef12', clientRequestId: null, clientAddr: null, subject: null }).warn('refused');
    expect(lines[0]).not.toHaveProperty('clientRequestId');
    expect(lines[0]).not.toHaveProperty('clientAddr');
    expect(lines[0]).not.toHaveProperty('subject');
    expect(lines[0]).toMatchObject({ requestId: 'req-abcdef12', msg: 'refused' });
  });

  it('censors a PHI key written through a request logger', () => {
    const { logger, lines } = capture();
    requestLogger(logger, FACTS).info({ ssn: '900-12-3456' }, 'line');
    expect(JSON.stringify(lines)).not.toContain('900-12-3456');
  });
});

describe('logger on standard output', () => {
  it('writes off the caller\'s path yet loses no line when the process exits right after', async () => {
    const { execFile } = await import('node:child_process');
    const script = `
      import { createLogger } from ${JSON.stringify(new URL('../../src/log.ts', import.meta.url).pathname)};
      const logger = createLogger('info');
      for (let i = 0; i < 2000; i++) logger.info({ i }, 'line');
      process.exit(0);`;
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { maxBuffer: 64 << 20 }, (err, out) => (err ? reject(err) : resolve(out))),
    );
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { i: number });
    expect(lines.map((l) => l.i)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
  });
});
