import { specifiedRules, type DocumentNode, type GraphQLError, type GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';

/**
 * Validation's result once per parsed document (yoga's parser cache hands every request of a
 * document the same object), for the gateway's one schema and graphql-js's standard rules.
 *
 * It takes the place of yoga's own validation cache (`parserAndValidationCache: { validationCache:
 * false }`), which keys each result by the names of the rules in force: with graphql-js's 27
 * rules that is 27 native `Function.prototype.name` reads and a 680-character join on every
 * request, ~2.5 us of every read. Here the rules are the standard set
 * or the cache is not used: a plugin that adds a rule gets every document validated again.
 *
 * Listed after every plugin of the gateway, where yoga lists its own, so that it sees every rule
 * they add. It stands in for the validation function, never for the result: a plugin before it
 * that sets a result itself (a refusal that depends on who asks, say) keeps it on a hit, and such a
 * result is never cached for the next request. What it keeps is graphql-js's own answer; the
 * after-hooks of other plugins (use-no-reconnaissance's rewording) run on it at every request.
 */
export function useValidationCache(): Plugin {
  const results = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, readonly GraphQLError[]>>();
  return {
    onValidate({ params: { schema, documentAST, rules }, validateFn, setValidationFn }) {
      if (!isStandard(rules)) return;
      let bySchema = results.get(schema);
      if (bySchema === undefined) results.set(schema, (bySchema = new WeakMap()));
      const known = bySchema.get(documentAST);
      if (known !== undefined) {
        setValidationFn(() => known);
        return;
      }
      const cache = bySchema;
      setValidationFn((...args) => {
        const result = validateFn(...args);
        cache.set(documentAST, result);
        return result;
      });
    },
  };
}

const isStandard = (rules: readonly unknown[] | undefined): boolean =>
  rules !== undefined && rules.length === specifiedRules.length && rules.every((rule, i) => rule === specifiedRules[i]);
