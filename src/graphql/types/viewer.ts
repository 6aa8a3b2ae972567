import type { Principal } from '../../auth/principal.ts';
import { builder } from '../builder.ts';

export const Viewer = builder.objectRef<Principal>('Viewer').implement({
  description: 'Who is asking, as the gateway understood the credentials.',
  fields: (t) => ({
    subject: t.exposeString('subject'),
    kind: t.exposeString('kind'),
    roles: t.stringList({ resolve: (p, _a, ctx) => ctx.principal.roles.filter((r) => ctx.policy.roles.has(r)) }),
    clinics: t.exposeStringList('clinics'),
    mfa: t.exposeBoolean('mfa'),
  }),
});
