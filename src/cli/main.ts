import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.ts';
import { useAead } from '../crypto/aead.ts';
import { ALERTS_USAGE } from './alerts.ts';
import { APIKEY_USAGE } from './apikey.ts';
import { AUDIT_USAGE } from './audit.ts';
import { INDEX_KEYS_USAGE } from './index-keys.ts';
import { AUDIT_EVIDENCE_USAGE } from './audit-evidence.ts';
import { CommandError, commands } from './commands.ts';
import { KEYS_USAGE } from './keys.ts';

const USAGE = `usage: phigate <command> [options]

commands:
  migrate                       apply schema/ migrations as the migrator (PHIGATE_MIGRATE_URL),
                                then make row security enforce PHIGATE_POLICY_FILE's row scopes
  seed --patients N [--manifest FILE] [--seed N]
                                add N synthetic patients; write who-sees-what to the manifest
  token --sub S --roles r1,r2 --clinics c1 [--mfa] [--auth-age SECONDS] [--ttl SECONDS]
                                development issuer only: print an access token
  print-schema [--check]        print the GraphQL SDL (or check schema/schema.graphql is current)
${APIKEY_USAGE}
${AUDIT_USAGE}
${INDEX_KEYS_USAGE}
${AUDIT_EVIDENCE_USAGE}
${KEYS_USAGE}
${ALERTS_USAGE}
`;

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = name ? commands[name] : undefined;
  if (!command) {
    process.stderr.write(name && name !== '--help' && name !== 'help' ? `phigate: unknown command '${name}'\n\n${USAGE}` : USAGE);
    return name && name !== '--help' && name !== 'help' ? 2 : 0;
  }
  const { values, positionals } = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: command.positionals === true });
  const config = command.needsConfig?.(positionals) === false ? loadConfig({}) : loadConfig();
  // Commands that seal or open fields (seed, keys reencrypt, index-keys) obey PHIGATE_AEAD as the
  // gateway does: `node` keeps the addon out of them, `native` refuses to run without it.
  try {
    useAead(config.aead);
  } catch (err) {
    throw new ConfigError('PHIGATE_AEAD', (err as Error).message);
  }
  return command.run(values as Record<string, string | boolean | undefined>, config, positionals);
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const known = err instanceof ConfigError || err instanceof CommandError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`phigate: ${known ? (err as Error).message : `failed: ${(err as Error).message ?? String(err)}`}\n`);
    process.exit(known ? 2 : 1);
  },
);
