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
  const ask = async (query: string) => (await yoga.fetch('http://localhost/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })).json();
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
});
