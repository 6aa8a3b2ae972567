import { isObjectType, lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { PHI_FIELDS } from '../policy/phi-fields.ts';
import { builder } from './builder.ts';
import './types/query.ts';
import './types/mutation.ts';
import './types/break-glass.ts';
import './types/api-key.ts';
import './types/audit.ts';

export class SchemaPolicyMismatch extends Error {}

/**
 * Every field marked PHI in the schema must be in the PHI catalogue the policy is checked
 * against, and the other way round: a PHI field cannot appear without a rule for every role.
 */
function assertPhiFieldsMatchCatalogue(schema: GraphQLSchema): void {
  const marked = new Set<string>();
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type)) continue;
    for (const f of Object.values(type.getFields())) if (f.extensions?.phigatePhi) marked.add(`${type.name}.${f.name}`);
  }
  const catalogue = new Set(Object.entries(PHI_FIELDS).flatMap(([t, fs]) => fs.map((f) => `${t}.${f}`)));
  const missing = [...catalogue].filter((f) => !marked.has(f));
  const extra = [...marked].filter((f) => !catalogue.has(f));
  if (missing.length || extra.length) {
    throw new SchemaPolicyMismatch(`PHI fields differ between schema and catalogue: missing ${missing.join(', ') || '-'}; unlisted ${extra.join(', ') || '-'}`);
  }
}

let built: GraphQLSchema | null = null;

export function buildSchema(): GraphQLSchema {
  if (built) return built;
  const schema = builder.toSchema();
  assertPhiFieldsMatchCatalogue(schema);
  built = schema;
  return schema;
}

export const printSdl = (): string => `${printSchema(lexicographicSortSchema(buildSchema()))}\n`;
