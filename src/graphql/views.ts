import {
  defaultFieldResolver,
  getNamedType,
  isAbstractType,
  isLeafType,
  isListType,
  isNonNullType,
  isObjectType,
  Kind,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLFieldResolver,
  type GraphQLObjectType,
  type GraphQLOutputType,
  type GraphQLResolveInfo,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import { PhigateError } from '../errors.ts';

/**
 * Rows of the types that hold PHI (Patient, Encounter) shown to graphql-jit as views: objects
 * whose leaf fields are already resolved, one property each, made when the row itself resolves.
 * graphql-jit reads a field without a resolver inline; a field with one costs a call, a resolve
 * info, a path list, an args object and a promise check per value (~2,400 a page of 100 patients,
 * a quarter of its bytes: bench/README.md, branches gw24 and page20).
 *
 * Each value is still its own resolver's call, with the same arguments, in the same order, as
 * graphql-jit would have made it: readPhi decides, charges, decrypts and audits every value as
 * before. What the view changes is only who calls. A thrown error becomes the field's value, which
 * graphql-jit turns into the same field error (message, locations, path, original error) as
 * a throw; a promise makes the whole view a promise.
 *
 * Only documents whose fields are the same on every execution qualify (`qualifies`): no
 * directives, no aliases of a view's fields (graphql-jit reads a view by field name), no field with
 * a resolver before a view field of the same object (the values would be resolved in another
 * order), no abstract types, queries only. Any other document runs with the schema's resolvers.
 */

type Resolver = GraphQLFieldResolver<unknown, unknown>;

/** The row behind a view, for the fields of its type that keep their resolvers (Patient.encounters). */
const ROW = Symbol('row');
type View = Record<string, unknown> & { [ROW]: unknown };

/** A view's field: its name (its response key) and the resolver that makes its value. */
interface ViewField {
  readonly name: string;
  readonly resolve: Resolver;
}

const EMPTY_ARGS = Object.freeze({});

const holdsPhi = (type: GraphQLObjectType): boolean => Object.values(type.getFields()).some((f) => f.extensions?.phigatePhi === true);

const isLeafOrLeafList = (type: GraphQLOutputType): boolean => {
  let t = type;
  while (isNonNullType(t) || isListType(t)) t = t.ofType;
  return isLeafType(t);
};

/**
 * A field resolved into the view: a leaf without arguments whose resolver reads only its row and
 * the context (a PHI field's, or a property exposed as it is). Other fields keep their resolvers.
 */
const isViewField = (field: GraphQLField<unknown, unknown>): boolean =>
  field.args.length === 0 &&
  isLeafOrLeafList(field.type) &&
  (field.resolve === undefined || field.extensions?.phigatePhi === true || typeof field.extensions?.pothosExposedField === 'string');

const isPromiseLike = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

// A thrown error is the field's error; anything else thrown fails closed, as no message of it is ours.
const asError = (e: unknown): Error => (e instanceof Error ? e : new PhigateError('INTERNAL', 'The field could not be resolved.', { reason: 'non_error_thrown' }));

function valueOf(field: ViewField, row: unknown, ctx: unknown): unknown {
  try {
    // The view fields' resolvers read neither arguments (they have none) nor the resolve info.
    const value = field.resolve(row, EMPTY_ARGS, ctx, undefined as never);
    return isPromiseLike(value) ? Promise.resolve(value).then((v) => v, asError) : value;
  } catch (e) {
    return asError(e);
  }
}

/** The fields a call site's views hold, and an empty view of them that each view is copied from. */
interface Plan {
  readonly fields: readonly ViewField[];
  readonly empty: View;
}

function viewOf({ fields, empty }: Plan, row: unknown, ctx: unknown): View | Promise<View> {
  // Copied from one object of the plan's properties: every view of a site has its layout, its
  // properties in the object, not one hidden-class step per field.
  const view = { ...empty };
  view[ROW] = row;
  let pending: Array<Promise<void>> | null = null;
  for (const field of fields) {
    const value = valueOf(field, row, ctx);
    if (value instanceof Promise) {
      view[field.name] = null;
      (pending ??= []).push(value.then((v) => void (view[field.name] = v)));
    } else view[field.name] = value;
  }
  return pending === null ? view : Promise.all(pending).then(() => view);
}

/** The fields of `type` a selection asks, merged by response key, in the order they are first asked. */
function collect(type: GraphQLObjectType, selectionSets: readonly SelectionSetNode[], fragments: Record<string, FragmentDefinitionNode>): Map<string, FieldNode[]> | null {
  const fields = new Map<string, FieldNode[]>();
  const seen = new Set<string>();
  const walk = (set: SelectionSetNode): boolean => {
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        const key = selection.alias?.value ?? selection.name.value;
        const nodes = fields.get(key);
        if (nodes) nodes.push(selection);
        else fields.set(key, [selection]);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        if (selection.typeCondition && selection.typeCondition.name.value !== type.name) return false;
        if (!walk(selection.selectionSet)) return false;
      } else {
        const name = selection.name.value;
        if (seen.has(name)) continue;
        seen.add(name);
        const fragment = fragments[name];
        if (!fragment || fragment.typeCondition.name.value !== type.name || !walk(fragment.selectionSet)) return false;
      }
    }
    return true;
  };
  for (const set of selectionSets) if (!walk(set)) return null;
  return fields;
}

const selectionSetsOf = (nodes: readonly FieldNode[]): SelectionSetNode[] => nodes.flatMap((n) => (n.selectionSet ? [n.selectionSet] : []));

// Per call site (graphql-jit passes the same fieldNodes array to every call of one site).
const plans = new WeakMap<readonly FieldNode[], Plan>();

function planOf(type: GraphQLObjectType, resolvers: ReadonlyMap<string, Resolver>, info: GraphQLResolveInfo): Plan {
  let plan = plans.get(info.fieldNodes);
  if (plan === undefined) {
    const fields = collect(type, selectionSetsOf(info.fieldNodes), info.fragments);
    // qualifies() walked the same selections; a failure here is a document it let through by mistake.
    if (fields === null) throw new PhigateError('INTERNAL', 'The selection cannot be viewed.', { reason: 'view_selection' });
    const viewFields = [...fields.keys()].flatMap((name) => {
      const resolve = resolvers.get(name);
      return resolve ? [{ name, resolve }] : [];
    });
    const empty = { [ROW]: null } as View;
    for (const f of viewFields) empty[f.name] = null;
    plan = { fields: viewFields, empty };
    plans.set(info.fieldNodes, plan);
  }
  return plan;
}

/** A resolver's result (a row, a list of rows, null, an error, or a promise of one) as views. */
function viewsOf(result: unknown, plan: Plan, ctx: unknown): unknown {
  if (result === null || result === undefined || result instanceof Error) return result;
  if (isPromiseLike(result)) return Promise.resolve(result).then((r) => viewsOf(r, plan, ctx));
  if (Array.isArray(result)) return result.map((r: unknown) => (r === null || r === undefined || r instanceof Error ? r : isPromiseLike(r) ? viewsOf(r, plan, ctx) : viewOf(plan, r, ctx)));
  return viewOf(plan, result, ctx);
}

// graphql-js's default resolver, without the resolve info it reads the field's name from.
const propertyOf =
  (name: string): Resolver =>
  (row) =>
    (row as Record<string, unknown>)[name];

interface Swap {
  readonly field: GraphQLField<unknown, unknown>;
  readonly own: Resolver | undefined;
  readonly viewing: Resolver | undefined;
}

const swapsOf = new WeakMap<GraphQLSchema, readonly Swap[]>();

/** For every field the views touch, its resolver and the one graphql-jit is to see instead. */
function swaps(schema: GraphQLSchema): readonly Swap[] {
  const known = swapsOf.get(schema);
  if (known !== undefined) return known;
  const list: Swap[] = [];
  const viewed = new Map<GraphQLObjectType, ReadonlyMap<string, Resolver>>();
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__') || !holdsPhi(type)) continue;
    viewed.set(type, new Map(Object.values(type.getFields()).filter(isViewField).map((f) => [f.name, f.resolve ?? propertyOf(f.name)])));
  }
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__')) continue;
    const ownFields = viewed.get(type);
    for (const field of Object.values(type.getFields())) {
      if (ownFields?.has(field.name)) {
        list.push({ field, own: field.resolve, viewing: undefined });
        continue;
      }
      let resolve: Resolver = field.resolve ?? defaultFieldResolver;
      const returned = getNamedType(field.type);
      const resolvers = isObjectType(returned) ? viewed.get(returned) : undefined;
      if (resolvers !== undefined) {
        const inner = resolve;
        resolve = (source, args, ctx, info) => viewsOf(inner(source, args, ctx, info), planOf(returned as GraphQLObjectType, resolvers, info), ctx);
      }
      if (ownFields !== undefined) {
        const inner = resolve;
        resolve = (view, args, ctx, info) => inner((view as View)[ROW], args, ctx, info);
      }
      if (resolve !== (field.resolve ?? defaultFieldResolver)) list.push({ field, own: field.resolve, viewing: resolve });
    }
  }
  swapsOf.set(schema, list);
  return list;
}

/**
 * Runs `compile` with the schema's resolvers swapped for the views' (restored after, thrown or
 * not): graphql-jit takes a document's resolvers from the schema once, when it compiles it.
 */
export function withViews<T>(schema: GraphQLSchema, compile: () => T): T {
  const list = swaps(schema);
  for (const s of list) s.field.resolve = s.viewing;
  try {
    return compile();
  } finally {
    for (const s of list) s.field.resolve = s.own;
  }
}

function hasDirectives(document: DocumentNode): boolean {
  let found = false;
  const visitSet = (set: SelectionSetNode): void => {
    for (const s of set.selections) {
      if (s.directives?.length) found = true;
      if (s.kind !== Kind.FRAGMENT_SPREAD && s.selectionSet) visitSet(s.selectionSet);
    }
  };
  for (const d of document.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION && d.kind !== Kind.FRAGMENT_DEFINITION) return true;
    if (d.directives?.length) found = true;
    visitSet(d.selectionSet);
  }
  return found;
}

/** Whether `document` runs the same through views as through the schema's resolvers (see the top). */
export function qualifies(schema: GraphQLSchema, document: DocumentNode): boolean {
  if (hasDirectives(document)) return false;
  const fragments: Record<string, FragmentDefinitionNode> = {};
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments[d.name.value] = d;
  const walk = (type: GraphQLObjectType, sets: readonly SelectionSetNode[], depth: number): boolean => {
    if (depth > 64) return false;
    const fields = collect(type, sets, fragments);
    if (fields === null) return false;
    const viewing = holdsPhi(type);
    let resolverSeen = false;
    for (const [key, nodes] of fields) {
      const name = nodes[0]!.name.value;
      if (name === '__typename') continue;
      const field = type.getFields()[name];
      if (!field || nodes.some((n) => n.name.value !== name)) return false;
      if (viewing) {
        if (isViewField(field)) {
          if (resolverSeen || key !== name) return false;
        } else resolverSeen = true;
      }
      const named = getNamedType(field.type);
      if (isAbstractType(named)) return false;
      if (isObjectType(named) && !walk(named, selectionSetsOf(nodes), depth + 1)) return false;
    }
    return true;
  };
  const query = schema.getQueryType();
  return document.definitions.every((d) => d.kind !== Kind.OPERATION_DEFINITION || (d.operation === 'query' && query != null && walk(query, [d.selectionSet], 0)));
}
