import { specifiedRules, type DocumentNode, type GraphQLSchema } from 'graphql';
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
 * Listed after every plugin of the gateway, where yoga lists its own: the before-hooks of those
 * listed earlier still run on a hit, and what it keeps is the result as their after-hooks left it.
 */
export function useValidationCache(): Plugin {
  const results = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, readonly Error[]>>();
  return {
    onValidate({ params: { schema, documentAST, rules }, setResult }) {
      if (!isStandard(rules)) return undefined;
      let bySchema = results.get(schema);
      if (bySchema === undefined) results.set(schema, (bySchema = new WeakMap()));
      const known = bySchema.get(documentAST);
      if (known !== undefined) {
        setResult(known);
        return undefined;
      }
      const cache = bySchema;
      return ({ result }) => {
        if (result != null) cache.set(documentAST, result);
      };
    },
  };
}

const isStandard = (rules: readonly unknown[] | undefined): boolean =>
  rules !== undefined && rules.length === specifiedRules.length && rules.every((rule, i) => rule === specifiedRules[i]);
