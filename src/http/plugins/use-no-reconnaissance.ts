import { BREAK, GraphQLError, Kind, visit, type DocumentNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import { usableRoles } from '../../policy/decide.ts';

export interface NoReconnaissanceOptions {
  /** Policy roles that may introspect the schema, when the principal can act in one; `*` for every authenticated principal. */
  readonly introspectionRoles: readonly string[];
}

/**
 * The schema is not a map for strangers: introspection (`__schema`, `__type`; `__typename` is
 * harmless and clients need it) runs only for a principal that can act in one of `introspectionRoles`,
 * and no error message suggests field, argument, type or enum names ("Did you mean ...?"), which
 * would otherwise rebuild the schema one typo at a time. (graphql-armor's block-field-suggestions
 * does not replace this: it only rewrites validation errors, not the variable errors raised during
 * execution, and its pattern misses "Did you mean the enum value ...".)
 *
 * Introspection is decided at execution, once the principal is known, and not as a validation
 * rule: yoga caches validation per document, and the answer here depends on who asks. The
 * context opens no transaction until a resolver needs one, so a refusal touches no data.
 *
 * "Can act in" as authorisation decides it (usableRoles): a role the policy defines and whose MFA
 * the sign-in meets. A role merely claimed, without the MFA it requires, shows nothing here either.
 */
export function useNoReconnaissance({ introspectionRoles }: NoReconnaissanceOptions): Plugin<GraphQLContext> {
  const everyone = introspectionRoles.includes('*');
  return {
    onValidate() {
      return ({ result, setResult }) => {
        if (result.length) setResult(result.map((e) => asBadInput(withoutSuggestions(e))));
      };
    },
    onExecute({ args, setResultAndStopExecution }) {
      const { principal, policy } = args.contextValue as GraphQLContext;
      if (introspects(args.document) && !everyone && !usableRoles(policy, principal).some((r) => introspectionRoles.includes(r.name))) {
        setResultAndStopExecution({ errors: [new PhigateError('FORBIDDEN', 'Introspection is not allowed for this principal.', { reason: 'introspection_disabled' })] });
        return;
      }
      return {
        // Variable values are checked during execution, and their errors suggest input field and enum names too.
        onExecuteDone({ result, setResult }) {
          if ('errors' in result && result.errors?.some(suggests)) setResult({ ...result, errors: result.errors.map(withoutSuggestions) });
        },
      };
    },
  };
}

const SUGGESTION = /\s*Did you mean\b[\s\S]*$/;

const suggests = (e: Error): boolean => SUGGESTION.test(e.message);

function withoutSuggestions<E extends Error>(e: E): E | GraphQLError {
  if (!(e instanceof GraphQLError) || !suggests(e)) return e;
  return new GraphQLError(e.message.replace(SUGGESTION, ''), {
    nodes: e.nodes,
    source: e.source,
    positions: e.positions,
    path: e.path,
    originalError: e.originalError,
    extensions: e.extensions,
  });
}

// graphql-js quotes the offending literal ("String cannot represent a non string value: 900123456",
// "Expected value of type ..., found ..."): that literal may be an SSN typed as a number.
const ECHOES_VALUE = /cannot represent|Expected value of type|\bfound\b/;

/** Validation errors speak the contract's code, and never repeat a literal of the document. */
function asBadInput(e: GraphQLError | Error): GraphQLError | Error {
  if (!(e instanceof GraphQLError)) return e;
  return new GraphQLError(ECHOES_VALUE.test(e.message) ? 'A value in the document does not fit the type of the argument or field it is given to.' : e.message, {
    nodes: e.nodes,
    source: e.source,
    positions: e.positions,
    path: e.path,
    originalError: e.originalError,
    extensions: { ...e.extensions, code: 'BAD_USER_INPUT' },
  });
}

// yoga parses each distinct document once (its parser cache) and hands every request of it the
// same object: the walk below ran on every request of the same document.
const introspecting = new WeakMap<DocumentNode, boolean>();

/** Anywhere in the document: validation has already refused these fields anywhere but on Query. */
function introspects(document: DocumentNode): boolean {
  let found = introspecting.get(document);
  if (found === undefined) introspecting.set(document, (found = walkForIntrospection(document)));
  return found;
}

function walkForIntrospection(document: DocumentNode): boolean {
  let found = false;
  visit(document, {
    [Kind.FIELD](node) {
      if (node.name.value !== '__schema' && node.name.value !== '__type') return undefined;
      found = true;
      return BREAK;
    },
  });
  return found;
}
