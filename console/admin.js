// Clinic admins: partner API keys of their clinics, and care teams.
import { gql } from './api.js';
import { announce, field, formValues, h, table } from './dom.js';

const KEY_FIELDS = 'id partner clinics fields purpose status createdAt createdBy expiresAt lastUsedAt revokedAt replaces';
const KEYS = `query ConsoleKeys { apiKeys { ${KEY_FIELDS} } }`;
const CREATE = `mutation ConsoleCreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { key apiKey { id } } }`;
const ROTATE = `mutation ConsoleRotateKey($id: ID!, $overlapHours: Int) { rotateApiKey(id: $id, overlapHours: $overlapHours) { key apiKey { id } } }`;
const REVOKE = `mutation ConsoleRevokeKey($id: ID!) { revokeApiKey(id: $id) { id status } }`;
const CARE_TEAM = `mutation ConsoleCareTeam($patientId: ID!, $subjects: [String!]!) { setCareTeam(patientId: $patientId, subjects: $subjects) { id clinicId } }`;
const PURPOSES = ['TREAT', 'HPAYMT', 'HOPERAT', 'PUBHLTH', 'HRESCH'];

const words = (s) => String(s ?? '').split(/[\s,]+/).filter(Boolean);

/** `fresh`: a key just created or rotated, whose secret this render shows once. */
export async function apiKeysPage(main, endpoint, clinics, fresh = null) {
  const { apiKeys: keys } = await gql(endpoint, KEYS);
  const reload = (shown = null) => apiKeysPage(main, endpoint, clinics, shown);
  const secret = h('div', { id: 'new-secret' });
  if (fresh !== null) {
    secret.append(
      h('h2', {}, fresh.title),
      h('p', {}, `The secret of key ${fresh.id}, shown this once: copy it now into the partner's secret store.`),
      h('p', { class: 'secret', id: 'secret-value', tabindex: 0 }, fresh.key),
      h('button', { type: 'button', onclick: () => secret.replaceChildren() }, 'I have stored it'),
    );
  }
  const act = (label, run) => async () => {
    try {
      await run();
    } catch (err) {
      announce(`${label} failed: ${err.message}`);
    }
  };
  const rows = keys.map((k) => [
    k.id,
    k.partner,
    k.clinics.join(' '),
    k.fields.join(' '),
    k.purpose,
    k.status,
    k.expiresAt ?? 'never',
    k.lastUsedAt ?? 'never',
    k.status === 'active'
      ? h(
          'span',
          {},
          h('button', { type: 'button', 'aria-label': `Rotate key ${k.id}`, onclick: act('Rotation', async () => {
            const { rotateApiKey: r } = await gql(endpoint, ROTATE, { id: k.id, overlapHours: 24 });
            await reload({ title: 'Key rotated (the old key works for 24 more hours)', key: r.key, id: r.apiKey.id });
          }) }, 'Rotate'),
          ' ',
          h('button', { type: 'button', 'aria-label': `Revoke key ${k.id}`, onclick: act('Revocation', async () => {
            if (!confirm(`Revoke key ${k.id} of ${k.partner}? It is refused from the next request on.`)) return;
            await gql(endpoint, REVOKE, { id: k.id });
            await reload();
            announce(`Key ${k.id} revoked.`);
          }) }, 'Revoke'),
        )
      : '',
  ]);
  const form = h(
    'form',
    {
      class: 'stack',
      'aria-labelledby': 'create-key-heading',
      onsubmit: act('Creating the key', async () => {
        const v = formValues(form);
        const { createApiKey: c } = await gql(endpoint, CREATE, {
          input: { partner: v.partner, clinics: words(v.clinics), fields: words(v.fields), purpose: v.purpose, expiresInDays: Number(v.expiresInDays) },
        });
        await reload({ title: 'Key created', key: c.key, id: c.apiKey.id });
      }),
    },
    field('Partner', h('input', { name: 'partner', required: true, autocomplete: 'off' })),
    field('Clinics (separated by spaces)', h('input', { name: 'clinics', required: true, value: clinics.join(' '), autocomplete: 'off' })),
    field('Fields (Type.field, separated by spaces)', h('input', { name: 'fields', required: true, autocomplete: 'off' })),
    field('Purpose of use', h('select', { name: 'purpose' }, PURPOSES.map((p) => h('option', { value: p }, p)))),
    field('Expires in days (1 to 365)', h('input', { name: 'expiresInDays', type: 'number', min: 1, max: 365, value: 90, required: true })),
    h('button', { type: 'submit' }, 'Create key'),
  );
  const focusSecret = () => secret.querySelector('#secret-value')?.focus();
  form.addEventListener('submit', (e) => e.preventDefault());
  main.replaceChildren(
    h('h1', {}, 'Partner API keys'),
    secret,
    keys.length === 0 ? h('p', {}, 'No keys for your clinics.') : table('Partner API keys', ['Id', 'Partner', 'Clinics', 'Fields', 'Purpose', 'Status', 'Expires', 'Last used', 'Actions'], rows, (i) => ({ 'data-key': keys[i].id })),
    h('h2', { id: 'create-key-heading' }, 'Create a key'),
    form,
  );
  focusSecret();
}

export function careTeamsPage(main, endpoint) {
  const form = h(
    'form',
    {
      class: 'stack',
      'aria-labelledby': 'care-team-heading',
      onsubmit: async (e) => {
        e.preventDefault();
        const v = formValues(form);
        try {
          const { setCareTeam: p } = await gql(endpoint, CARE_TEAM, { patientId: v.patientId, subjects: words(v.subjects) });
          announce(`Care team of patient ${p.id} set: ${words(v.subjects).join(', ') || 'nobody'}.`);
        } catch (err) {
          announce(`Care team not changed: ${err.message}`);
        }
      },
    },
    field('Patient id', h('input', { name: 'patientId', required: true, autocomplete: 'off' })),
    field('Care team members (staff subjects, separated by spaces; replaces the team)', h('input', { name: 'subjects', autocomplete: 'off' })),
    h('button', { type: 'submit' }, 'Set care team'),
  );
  main.replaceChildren(h('h1', {}, 'Care teams'), h('h2', { id: 'care-team-heading' }, 'Set the care team of a patient'), form);
}
