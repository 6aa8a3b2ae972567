import type { CodegenConfig } from '@graphql-codegen/cli';

// Typed documents for tests and clients, generated from the printed SDL (schema/schema.graphql,
// itself checked against the Pothos schema by test/unit/schema.test.ts). Run: npm run codegen
const config: CodegenConfig = {
  schema: 'schema/schema.graphql',
  documents: ['client/operations/**/*.graphql'],
  generates: {
    'client/generated/graphql.ts': {
      plugins: ['typescript-operations', 'typed-document-node'],
      config: { useTypeImports: true, enumsAsTypes: true, avoidOptionals: { field: true, inputValue: false } },
    },
  },
};

export default config;
