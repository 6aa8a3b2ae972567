import {
  getNamedType,
  getNullableType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  Lexer,
  SchemaMetaFieldDef,
  Source,
  TokenKind,
  TypeMetaFieldDef,
  TypeNameMetaFieldDef,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import type { FetchAPI, Plugin } from 'graphql-yoga';
import type { Config } from '../../config.ts';
import { PhigateError } from '../../errors.ts';
import { MAX_LISTED_KEYS } from '../../records/api-keys.ts';
import { MAX_DISCLOSURES } from '../../records/compliance.ts';

export type QueryLimits = Config['limits'];

export interface QueryLimitsOptions {
  readonly limits: QueryLimits;
  /** The page size assumed where a query leaves `first` open: the largest the resolvers accept. */
  readonly maxPageSize: number;
}

/** What executing one operation of a document could cost; fragments expanded. */
export interface QueryMeasure {
  /** Levels of nested fields. */
  readonly depth: number;
  readonly aliases: number;
  readonly directives: number;
  readonly fields: number;
  /** Fields resolved, where a page or list multiplies its selection by its length. */
  readonly cost: number;
}

/**
 * Lists without `first`, each priced at the bound its SQL applies (src/records/compliance.ts,
 * MAX_DISCLOSURES; src/records/api-keys.ts, MAX_LISTED_KEYS). Any other list of objects without
 * `first` counts as the largest page: a list the schema answers must be bounded in SQL by no more
 * than its price (test/security/list-bounds.test.ts checks every one).
 */
export const LIST_SIZES: Readonly<Record<string, number>> = { 'Query.disclosures': MAX_DISCLOSURES, 'Query.apiKeys': MAX_LISTED_KEYS };

/** The largest `first` of each list that takes one: a page's, and a patient's encounters'. */
export interface ListBounds {
  readonly maxPageSize: number;
  /** Patient.encounters (PHIGATE_MAX_ENCOUNTERS): also its default, so a `first` left open is priced at it. */
  readonly maxEncounters: number;
}

/**
 * Refuses, with QUERY_TOO_COMPLEX naming the limit, every request over one of the abuse limits,
 * each at the first moment it can be told and always before the context (authentication, the
 * database) exists: the body's size while it is read, the batch's length once it is parsed, the
 * token count before the document is parsed, and depth, aliases, directives, fields and cost
 * before it is validated (so that validation's own cost is bounded too).
 *
 * Hand-written rather than graphql-armor's plugins (measured December 2026, issue 15): armor has
 * no field limit, and its cost-limit cannot multiply a selection by `first`, so the walk below
 * stays for fields and cost; depth, aliases and directives come out of that same walk, where
 * armor's three rules (each its own walk, inside validation) took 4-4.6x the time of the whole
 * measure, and armor's depth cannot leave introspection's `ofType` chains out (so GraphiQL's query
 * would be over the depth limit) without leaving `__schema` unbounded. Armor's token-counting
 * parser took 2.4-2.6x our lex-then-parse, on the client's largest document and a 1,500-token one.
 */
export function useQueryLimits({ limits, maxPageSize }: QueryLimitsOptions): Plugin {
  // A measure depends on the document alone (and the one schema), and yoga hands every request of
  // a document the same parsed object: measured once, not on every request (~5 us of a read).
  const measured = new WeakMap<DocumentNode, QueryMeasure>();
  const bounds: ListBounds = { maxPageSize, maxEncounters: limits.maxEncounters };
  // Likewise a text's token count depends on the text alone, and a client sends the same few
  // documents again and again: a text once found within the limit is not lexed again (~1-1.5 us
  // and ~2.8 KB of tokens a read by id). Only admitted texts are kept, short ones, a bounded number.
  const admitted = new Set<string>();
  const over = (reason: string, what: string, value: number, limit: number) =>
    new PhigateError('QUERY_TOO_COMPLEX', `Too complex: ${what} ${value} is over the limit of ${limit}.`, { reason });
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      const length = request.headers.get('content-length');
      if (Number(length) > limits.maxBodyBytes) throw bodyTooLarge(limits.maxBodyBytes);
      // With a Content-Length and no Transfer-Encoding, node's HTTP parser ends the body at that
      // length (a request carrying both is refused before it gets here), so the check above bounds
      // it. Only a chunked body has its bytes counted as they arrive: piping every body through a
      // counting stream cost a read about 3% of its CPU.
      const framed = length !== null && /^\d+$/.test(length) && !request.headers.has('transfer-encoding');
      if (!framed && requestParser && request.body) setRequestParser((req) => requestParser(limitBody(req, limits.maxBodyBytes, fetchAPI)));
      return {
        onRequestParseDone({ requestParserResult }) {
          if (!Array.isArray(requestParserResult)) return;
          if (limits.maxBatch === 0) {
            throw new PhigateError('QUERY_TOO_COMPLEX', 'Too complex: batching is off; send one operation per request.', { reason: 'max_batch' });
          }
          if (requestParserResult.length > limits.maxBatch) throw over('max_batch', 'batch size', requestParserResult.length, limits.maxBatch);
        },
      };
    },
    onParse({ params }) {
      const text = typeof params.source === 'string' ? params.source : params.source.body;
      if (admitted.has(text)) return;
      const tokens = countTokens(text, limits.maxTokens);
      if (tokens > limits.maxTokens) {
        throw new PhigateError('QUERY_TOO_COMPLEX', `Too complex: the document has more than ${limits.maxTokens} tokens.`, { reason: 'max_tokens' });
      }
      if (text.length > ADMITTED_TEXT_LENGTH) return;
      // Past the bound the set starts again: a working set larger than it is counted as before.
      if (admitted.size >= ADMITTED_TEXTS) admitted.clear();
      admitted.add(text);
    },
    onValidate({ params }) {
      let m = measured.get(params.documentAST);
      if (m === undefined) measured.set(params.documentAST, (m = measureDocument(params.schema, params.documentAST, bounds)));
      const errors = [
        m.depth > limits.maxDepth && over('max_depth', 'depth', m.depth, limits.maxDepth),
        m.aliases > limits.maxAliases && over('max_aliases', 'alias count', m.aliases, limits.maxAliases),
        m.directives > limits.maxDirectives && over('max_directives', 'directive count', m.directives, limits.maxDirectives),
        m.fields > limits.maxFields && over('max_fields', 'field count', m.fields, limits.maxFields),
        m.cost > limits.maxCost && over('max_cost', 'cost', m.cost, limits.maxCost),
      ].filter((e) => e !== false);
      // Thrown, not set as the validation result: validation (and yoga's cache of it) is skipped,
      // and the refusal keeps its HTTP 400 whatever media type the client accepts.
      if (errors.length) throw new AggregateError(errors, 'over the query limits');
    },
  };
}

/** Texts found within the token limit that are kept (yoga's parser cache keeps as many documents)... */
const ADMITTED_TEXTS = 1_000;
/** ...each at most this long, so that they hold at most a few MB and a lookup hashes a short string. */
const ADMITTED_TEXT_LENGTH = 4_096;

// The unread rest of the body is not drained: the connection closes, and says so, so that the
// client does not send its next request into a socket about to be reset.
const bodyTooLarge = (max: number) =>
  new PhigateError('QUERY_TOO_COMPLEX', `Too large: the request body is over the limit of ${max} bytes.`, {
    reason: 'max_body_bytes',
    http: { status: 413, headers: { Connection: 'close' } },
  });

function limitBody(request: Request, max: number, fetchAPI: FetchAPI): Request {
  let seen = 0;
  // A native stream pipes only through a native TransformStream, a ponyfilled one through the ponyfill's.
  const Transform = request.body instanceof ReadableStream ? TransformStream : fetchAPI.TransformStream;
  const body = request.body!.pipeThrough(
    new Transform<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > max) controller.error(bodyTooLarge(max));
        else controller.enqueue(chunk);
      },
    }),
  );
  return new fetchAPI.Request(request.url, { method: request.method, headers: request.headers, signal: request.signal, body, duplex: 'half' } as RequestInit);
}

/** Counts tokens, stopping one past `max`, so that a huge document costs no more than a refused one. */
export function countTokens(text: string, max: number): number {
  const lexer = new Lexer(new Source(text));
  let n = 0;
  try {
    while (n <= max && lexer.advance().kind !== TokenKind.EOF) n++;
  } catch {
    // Not lexable: the parser will refuse it with its usual, located syntax error.
  }
  return n;
}

const ZERO: QueryMeasure = { depth: 0, aliases: 0, directives: 0, fields: 0, cost: 0 };

const plus = (a: QueryMeasure, b: QueryMeasure): QueryMeasure => ({
  depth: Math.max(a.depth, b.depth),
  aliases: a.aliases + b.aliases,
  directives: a.directives + b.directives,
  fields: a.fields + b.fields,
  cost: a.cost + b.cost,
});

const worst = (a: QueryMeasure, b: QueryMeasure): QueryMeasure => ({
  depth: Math.max(a.depth, b.depth),
  aliases: Math.max(a.aliases, b.aliases),
  directives: Math.max(a.directives, b.directives),
  fields: Math.max(a.fields, b.fields),
  cost: Math.max(a.cost, b.cost),
});

const withDirectives = (m: QueryMeasure, n: number): QueryMeasure => ({ ...m, directives: m.directives + n });

/**
 * The worst operation of a document, measured before validation: unknown fields and types count
 * as fields without a type, and a fragment cycle adds nothing where it closes (validation then
 * refuses it). Each fragment is measured once and reused, so that a document of fragments
 * spreading each other twice, level after level, is measured in linear time although its
 * expansion is exponential: the numbers grow, the work does not.
 *
 * Introspection (`__schema`, `__type`) never reaches the database, so it adds no cost, and its
 * `ofType` chains, which the standard introspection query nests eight deep, add no depth; its
 * fields, aliases and directives count like any others.
 */
export function measureDocument(schema: GraphQLSchema, document: DocumentNode, bounds: ListBounds): QueryMeasure {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const measured = new Map<string, QueryMeasure>();
  const expanding = new Set<string>();

  const spread = (name: string, introspection: boolean): QueryMeasure => {
    const key = `${introspection}:${name}`;
    const known = measured.get(key);
    if (known) return known;
    const fragment = fragments.get(name);
    if (!fragment || expanding.has(name)) return ZERO;
    expanding.add(name);
    const m = withDirectives(selections(fragment.selectionSet, schema.getType(fragment.typeCondition.name.value), introspection), fragment.directives?.length ?? 0);
    expanding.delete(name);
    measured.set(key, m);
    return m;
  };

  const field = (node: FieldNode, parent: GraphQLNamedType | undefined, introspection: boolean): QueryMeasure => {
    const name = node.name.value;
    const def = fieldDef(schema, parent, name);
    const inIntrospection = introspection || name === '__schema' || name === '__type';
    const child = node.selectionSet ? selections(node.selectionSet, def && getNamedType(def.type), inIntrospection) : ZERO;
    return {
      depth: (inIntrospection && name === 'ofType' ? 0 : 1) + child.depth,
      aliases: (node.alias ? 1 : 0) + child.aliases,
      directives: (node.directives?.length ?? 0) + child.directives,
      fields: 1 + child.fields,
      cost: inIntrospection ? 0 : 1 + multiplier(node, def, parent, bounds) * child.cost,
    };
  };

  const selections = (set: SelectionSetNode, parent: GraphQLNamedType | undefined | null, introspection: boolean): QueryMeasure => {
    let m = ZERO;
    for (const s of set.selections) {
      const directives = s.directives?.length ?? 0;
      if (s.kind === Kind.FIELD) m = plus(m, field(s, parent ?? undefined, introspection));
      else if (s.kind === Kind.FRAGMENT_SPREAD) m = plus(m, withDirectives(spread(s.name.value, introspection), directives));
      else {
        const type = s.typeCondition ? schema.getType(s.typeCondition.name.value) : parent;
        m = plus(m, withDirectives(selections(s.selectionSet, type, introspection), directives));
      }
    }
    return m;
  };

  let result = ZERO;
  for (const d of document.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    result = worst(result, withDirectives(selections(d.selectionSet, schema.getRootType(d.operation), false), d.directives?.length ?? 0));
  }
  return result;
}

function fieldDef(schema: GraphQLSchema, parent: GraphQLNamedType | undefined, name: string): GraphQLField<unknown, unknown> | undefined {
  if (name === '__typename') return TypeNameMetaFieldDef;
  if (parent && parent === schema.getQueryType()) {
    if (name === '__schema') return SchemaMetaFieldDef;
    if (name === '__type') return TypeMetaFieldDef;
  }
  return isObjectType(parent) || isInterfaceType(parent) ? parent.getFields()[name] : undefined;
}

/**
 * How many times a field's selection runs: a list that takes `first` as often as its `first` says
 * (a variable, or no `first`, counts as the largest that field accepts, so that the measure depends
 * on the document alone and yoga may cache it); another list as `LIST_SIZES` says; an object once.
 */
function multiplier(node: FieldNode, def: GraphQLField<unknown, unknown> | undefined, parent: GraphQLNamedType | undefined, bounds: ListBounds): number {
  const first = node.arguments?.find((a) => a.name.value === 'first');
  if (first || def?.args.some((a) => a.name === 'first')) {
    if (first?.value.kind === Kind.INT) return Math.max(1, Number(first.value.value));
    return parent?.name === 'Patient' && node.name.value === 'encounters' ? bounds.maxEncounters : bounds.maxPageSize;
  }
  if (!def || !isListType(getNullableType(def.type))) return 1;
  // A connection's lists are as long as the `first` of the field that returned it, counted there.
  if (parent?.name.endsWith('Connection')) return 1;
  return LIST_SIZES[`${parent?.name}.${node.name.value}`] ?? bounds.maxPageSize;
}
