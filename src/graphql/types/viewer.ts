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
    maxPageSize: t.int({
      description: "The most items a page may hold here (`first`, PHIGATE_MAX_PAGE_SIZE): a client sizes its pages by it rather than by a number of its own, which this gateway's limit could refuse.",
      resolve: (_p, _a, ctx) => ctx.maxPageSize,
    }),
    maxEncounters: t.int({
      description: "The most encounters one `Patient.encounters` may answer (its `first`, and its default: PHIGATE_MAX_ENCOUNTERS); a client pages on with `after`.",
      resolve: (_p, _a, ctx) => ctx.maxEncounters,
    }),
  }),
});
