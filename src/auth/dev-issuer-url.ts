import type { Config } from '../config.ts';

/**
 * Where the gateway serves its development issuer. A module of its own so that `phigate token`
 * (and every other CLI verb) does not load the whole gateway (src/app.ts) to learn one URL.
 */
export const devIssuerUrl = (config: Config): string => `http://${config.host}:${config.port}/dev-issuer`;
