import { GraphQLError, type ValidationRule } from 'graphql';
import { createSchema, createYoga, type Plugin } from 'graphql-yoga';
import { describe, expect, it } from 'vitest';
import { useValidationCache } from '../../../src/http/plugins/use-validation-cache.ts';

const schema = createSchema({ typeDefs: 'type Query { hello(name: String): String }', resolvers: { Query: { hello: (_: unknown, { name }: { name?: string }) => `hi ${name ?? ''}` } } });

/** Counts the validations that really ran (not answered from a cache). */
function countingYoga(extra: Plugin[] = []) {
  let validations = 0;
  const counting: Plugin = {
    onValidate({ validateFn, setValidationFn }) {
      setValidationFn((...args) => {
        validations++;
        return validateFn(...args);
      });
    },
  };
  const yoga = createYoga({ schema, logging: false, parserAndValidationCache: { validationCache: false }, plugins: [counting, ...extra, useValidationCache()] });
  const ask = async (query: string, caller?: string) =>
    (await yoga.fetch('http://localhost/graphql', { method: 'POST', headers: { 'content-type': 'application/json', ...(caller ? { 'x-caller': caller } : {}) }, body: JSON.stringify({ query }) })).json();
  return { ask, validations: () => validations };
}

describe('useValidationCache', () => {
  it('validates a document once, and answers its later requests as the first', async () => {
    const y = countingYoga();
    expect(await y.ask('{ hello(name: "a") }')).toEqual({ data: { hello: 'hi a' } });
    expect(await y.ask('{ hello(name: "a") }')).toEqual({ data: { hello: 'hi a' } });
    expect(y.validations()).toBe(1);
    await y.ask('{ hello(name: "b") }');
    expect(y.validations()).toBe(2);
  });

  it('keeps a refusal: the invalid document is refused again, with the same errors', async () => {
    const y = countingYoga();
    const first = await y.ask('{ helo }');
    const again = await y.ask('{ helo }');
    expect(first.errors?.[0]?.message).toMatch(/Cannot query field "helo"/);
    expect(again).toEqual(first);
    expect(y.validations()).toBe(1);
  });

  it('validates every time when a plugin adds a rule, so the added rule always runs', async () => {
    const noHello: ValidationRule = (context) => ({
      Field(node) {
        if (node.name.value === 'hello') context.reportError(new GraphQLError('no hello'));
      },
    });
    const y = countingYoga([{ onValidate: ({ addValidationRule }) => addValidationRule(noHello) }]);
    for (let i = 0; i < 2; i++) expect((await y.ask('{ hello }')).errors?.[0]?.message).toBe('no hello');
    expect(y.validations()).toBe(2);
  });

  it('never overrides a result an earlier plugin set, nor caches one for the next request', async () => {
    // A refusal that depends on who asks (here a header), and a skip of validation for a trusted caller.
    const byCaller: Plugin = {
      onValidate({ context, setResult }) {
        const who = (context as { request: Request }).request.headers.get('x-caller');
        if (who === 'refused') setResult([new GraphQLError('not for you')]);
        if (who === 'trusted') setResult([]);
      },
    };
    const y = countingYoga([byCaller]);
    expect(await y.ask('{ hello }')).toEqual({ data: { hello: 'hi ' } });
    expect((await y.ask('{ hello }', 'refused')).errors?.[0]?.message).toBe('not for you');
    // The trusted caller's unvalidated document is not served as valid to anyone else.
    expect(await y.ask('{ helo }', 'trusted')).toMatchObject({ data: {} });
    expect((await y.ask('{ helo }')).errors?.[0]?.message).toMatch(/Cannot query field "helo"/);
  });

  it("runs other plugins' after-hooks on a cached result as on a fresh one", async () => {
    const reword: Plugin = {
      onValidate: () => ({ result, setResult }) => {
        if (result.length) setResult(result.map((e) => new GraphQLError(`reworded: ${e.message.slice(0, 18)}`)));
      },
    };
    const y = countingYoga([reword]);
    const first = await y.ask('{ helo }');
    expect(first.errors?.[0]?.message).toBe('reworded: Cannot query field');
    expect(await y.ask('{ helo }')).toEqual(first);
    expect(y.validations()).toBe(1);
  });
});
