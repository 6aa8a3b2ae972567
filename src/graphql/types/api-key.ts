import type { ApiKeyRow } from '../../db/api-keys.ts';
import { PhigateError } from '../../errors.ts';
import { purposeFor, usableRoles } from '../../policy/decide.ts';
import { createApiKey, listedApiKeys, revokeApiKey, rotateApiKey, type ApiKeyService, type KeyManager } from '../../records/api-keys.ts';
import { builder } from '../builder.ts';
import type { GraphQLContext } from '../context.ts';

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

export const ApiKey = builder.objectRef<ApiKeyRow>('ApiKey').implement({
  description: 'A partner API key as its managers see it: its binding and life, never its secret.',
  fields: (t) => ({
    id: t.exposeID('id'),
    partner: t.exposeString('partner'),
    clinics: t.exposeStringList('clinics'),
    fields: t.exposeStringList('fields', { description: 'PHI fields as Type.field' }),
    purpose: t.exposeString('purpose', { description: 'HL7 PurposeOfUse code' }),
    ratePerMinute: t.exposeInt('rate_per_minute'),
    burst: t.exposeInt('burst'),
    createdBy: t.exposeString('created_by'),
    createdAt: t.string({ resolve: (k) => k.created_at.toISOString() }),
    expiresAt: t.string({ nullable: true, resolve: (k) => iso(k.expires_at) }),
    revokedAt: t.string({ nullable: true, resolve: (k) => iso(k.revoked_at) }),
    lastUsedAt: t.string({ nullable: true, description: 'to the minute', resolve: (k) => iso(k.last_used_at) }),
    replaces: t.id({ nullable: true, description: 'the key this one rotated out', resolve: (k) => k.replaces }),
    status: t.string({
      description: 'active, expired or revoked',
      resolve: (k) => (k.revoked_at !== null ? 'revoked' : k.expires_at !== null && k.expires_at.getTime() <= Date.now() ? 'expired' : 'active'),
    }),
  }),
});

const CreatedApiKey = builder.objectRef<{ key: string; apiKey: ApiKeyRow }>('CreatedApiKey').implement({
  description: 'A new key: `key` is shown in this answer only; store it now.',
  fields: (t) => ({ key: t.exposeString('key'), apiKey: t.field({ type: ApiKey, resolve: (c) => c.apiKey }) }),
});

const CreateApiKeyInput = builder.inputType('CreateApiKeyInput', {
  fields: (t) => ({
    partner: t.string({ required: true }),
    clinics: t.idList({ required: true }),
    fields: t.stringList({ required: true, description: 'PHI fields, as Type.field or field' }),
    purpose: t.string({ required: true, description: 'HL7 PurposeOfUse code: TREAT, HPAYMT, HOPERAT, PUBHLTH, HRESCH, ...' }),
    expiresInDays: t.int({ description: '1 to 365; default 90' }),
    ratePerMinute: t.int(),
    burst: t.int(),
  }),
});

/** The caller as a key manager: within its clinics, in the role that grants `operation`. */
function managerOf(ctx: GraphQLContext, operation: string): { manager: KeyManager; service: ApiKeyService } {
  const role = usableRoles(ctx.policy, ctx.principal).find((r) => r.operations.has(operation));
  if (!role || !ctx.apiKeys) throw new PhigateError('FORBIDDEN', 'You may not manage API keys.');
  const manager: KeyManager = {
    actor: ctx.principal.subject,
    clinics: ctx.principal.clinics,
    role: role.name,
    purpose: purposeFor(ctx.policy, ctx.principal, role.name),
    audit: (e) => ctx.audit.add(e),
  };
  return { manager, service: ctx.apiKeys };
}

const days = (n: number | null | undefined) => (n == null ? null : n * 86_400);

builder.queryFields((t) => ({
  apiKeys: t.field({
    type: [ApiKey],
    description: 'Keys that can read any of your clinics, newest first; never their secrets.',
    authScopes: { operation: 'revokeApiKey' },
    resolve: (_r, _a, ctx) => listedApiKeys(ctx.tx, managerOf(ctx, 'revokeApiKey').manager),
  }),
}));

builder.mutationFields((t) => ({
  createApiKey: t.field({
    type: CreatedApiKey,
    description: 'For your own clinics only; the secret is in this answer only.',
    authScopes: { operation: 'createApiKey' },
    args: { input: t.arg({ type: CreateApiKeyInput, required: true }) },
    resolve: (_r, { input }, ctx) => {
      const { manager, service } = managerOf(ctx, 'createApiKey');
      return createApiKey(ctx.tx, service.peppers, ctx.policy, service.defaults, manager, {
        ...input,
        clinics: input.clinics.map(String),
        expiresInSeconds: days(input.expiresInDays),
      });
    },
  }),
  rotateApiKey: t.field({
    type: CreatedApiKey,
    description: 'A new key with the same binding; the old one stays valid for the overlap (default 24 h, at most 168 h), then is refused.',
    authScopes: { operation: 'rotateApiKey' },
    args: { id: t.arg.id({ required: true }), overlapHours: t.arg.int() },
    resolve: async (_r, { id, overlapHours }, ctx) => {
      const { manager, service } = managerOf(ctx, 'rotateApiKey');
      const created = await rotateApiKey(ctx.tx, service.peppers, manager, String(id), overlapHours == null ? null : overlapHours * 3_600);
      // After the commit: a request of this replica meanwhile would otherwise cache the old row again.
      ctx.afterCommit(() => service.forget(String(id)));
      return created;
    },
  }),
  revokeApiKey: t.field({
    type: ApiKey,
    description: 'Refused from the next request on, on every replica.',
    authScopes: { operation: 'revokeApiKey' },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, { id }, ctx) => {
      const { manager, service } = managerOf(ctx, 'revokeApiKey');
      const revoked = await revokeApiKey(ctx.tx, manager, String(id));
      ctx.afterCommit(() => service.forget(revoked.id));
      return revoked;
    },
  }),
}));
