// PostGraphile v5 (amber preset) over the plaintext copy in schema bench_plain, run by bench/run.ts
// under a Node 22 binary (PostGraphile v5 needs Node >= 22). Plain JavaScript: Node 22 runs it as is.
//
// Every request: the ES256 access token is verified with jose against the loopback dev issuer's
// JWKS (fetched once, cached by jose), and its claims become the same phigate.* settings phigate
// sets (pgSettings), so row security is the same. Only roles held with MFA count, as in phigate.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { postgraphile } from 'postgraphile';
import { makePgService } from 'postgraphile/adaptors/pg';
import { grafserv } from 'postgraphile/grafserv/node';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';

const cfg = JSON.parse(process.env.BENCH_TARGET ?? '{}');
const jwks = createRemoteJWKSet(new URL(`${cfg.issuer}/jwks`));
const KNOWN = new Set(['physician', 'nurse', 'registrar', 'billing', 'clinic_admin', 'compliance']);

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      connectionString: cfg.appUrl,
      schemas: ['bench_plain'],
      poolConfig: { max: cfg.poolSize },
      pgSettingsKey: 'pgSettings',
    }),
  ],
  grafserv: { graphiql: false, watch: false },
  grafast: {
    explain: false,
    async context(requestContext) {
      const req = requestContext.node?.req;
      const auth = req?.headers?.authorization ?? '';
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      let settings = { 'phigate.actor': '', 'phigate.roles': '', 'phigate.clinics': '' };
      if (token) {
        const { payload } = await jwtVerify(token, jwks, { issuer: cfg.issuer, audience: 'phigate', algorithms: ['ES256'], clockTolerance: 30 });
        const mfa = Array.isArray(payload.amr) && payload.amr.includes('otp');
        const roles = mfa && Array.isArray(payload.roles) ? payload.roles.filter((r) => KNOWN.has(r)) : [];
        settings = {
          'phigate.actor': String(payload.sub ?? ''),
          'phigate.roles': roles.join(','),
          'phigate.clinics': Array.isArray(payload.clinics) ? payload.clinics.join(',') : '',
        };
      }
      return { pgSettings: { statement_timeout: '5000', ...settings } };
    },
  },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = http.createServer();
serv.addTo(server).catch((e) => {
  console.error(e);
  process.exit(1);
});
await pgl.getSchema();
server.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
process.on('SIGTERM', () => {
  server.close();
  void pgl.release().finally(() => process.exit(0));
});
