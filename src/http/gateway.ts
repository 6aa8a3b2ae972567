import http from 'node:http';
import { createYoga, type YogaInitialContext } from 'graphql-yoga';
import { createAuditBuffer } from '../audit/buffer.ts';
import type { Principal } from '../auth/principal.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import type { Pool } from '../db/pool.ts';
import { openRequestTransaction, type TransactionOptions } from '../db/transaction.ts';
import type { GraphQLContext } from '../graphql/context.ts';
import { createLoaders } from '../graphql/loaders.ts';
import { buildSchema } from '../graphql/schema.ts';
import type { Logger } from '../log.ts';
import type { PolicySet } from '../policy/types.ts';
import { createMaskError } from './mask-error.ts';
import { useRequestTransaction } from './plugins/use-request-transaction.ts';
import { requestIdFrom } from './request-id.ts';
import { securityContextFor } from './security-context.ts';

export interface GatewayDeps {
  readonly pool: Pool;
  readonly policy: PolicySet;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly authenticate: (authorization: string | null) => Promise<Principal>;
  readonly logger: Logger;
  readonly maxPageSize: number;
  readonly transaction?: TransactionOptions;
  readonly graphiql?: boolean;
  /** Extra routes tried before GraphQL (the development issuer); return true when handled. */
  readonly routes?: ReadonlyArray<(req: http.IncomingMessage, res: http.ServerResponse) => boolean>;
}

export interface Gateway {
  readonly server: http.Server;
  listen(port: number, host: string): Promise<{ port: number }>;
  close(): Promise<void>;
}

export function createGateway(deps: GatewayDeps): Gateway {
  const { pool, policy, keyring, cipher, logger } = deps;

  const yoga = createYoga<{ req: http.IncomingMessage }, GraphQLContext>({
    schema: buildSchema(),
    graphqlEndpoint: '/graphql',
    graphiql: deps.graphiql ?? false,
    landingPage: false,
    logging: false,
    maskedErrors: { maskError: createMaskError(logger) },
    plugins: [useRequestTransaction(logger)],
    context: async ({ request, req }: YogaInitialContext & { req: http.IncomingMessage }): Promise<GraphQLContext> => {
      const principal = await deps.authenticate(request.headers.get('authorization'));
      const requestId = requestIdFrom(request.headers.get('x-request-id'));
      const tx = openRequestTransaction(pool, securityContextFor(principal, policy, requestId), deps.transaction);
      return {
        requestId,
        principal,
        policy,
        tx,
        cipher,
        keyring,
        audit: createAuditBuffer({ requestId, actor: principal.subject, actorKind: principal.kind, clientAddr: req.socket.remoteAddress ?? null }),
        loaders: createLoaders(tx),
        maxPageSize: deps.maxPageSize,
      };
    },
  });

  const server = http.createServer((req, res) => {
    for (const route of deps.routes ?? []) if (route(req, res)) return;
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (path === '/readyz') {
      pool.query('SELECT 1').then(
        () => res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n'),
        () => res.writeHead(503, { 'content-type': 'text/plain' }).end('database unavailable\n'),
      );
      return;
    }
    void yoga(req, res);
  });

  return {
    server,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve({ port: (server.address() as import('node:net').AddressInfo).port }));
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
