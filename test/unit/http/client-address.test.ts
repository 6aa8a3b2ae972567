import { describe, expect, it } from 'vitest';
import { cidrProblem, createClientAddress } from '../../../src/http/client-address.ts';
import { loadConfig } from '../../../src/config.ts';

const behind = (trustedProxies: string[], header: 'x-forwarded-for' | 'forwarded' = 'x-forwarded-for') => createClientAddress({ trustedProxies, header });

describe('the client address an audit row records', () => {
  it('is the socket peer when no proxy is trusted, whatever the headers say', () => {
    const addr = behind([]);
    expect(addr('203.0.113.9', { 'x-forwarded-for': '198.51.100.1' })).toBe('203.0.113.9');
    expect(addr('::ffff:127.0.0.1', {})).toBe('127.0.0.1');
  });

  it('ignores a forged header from a peer that is not a trusted balancer', () => {
    const addr = behind(['10.0.0.0/8']);
    expect(addr('203.0.113.9', { 'x-forwarded-for': '10.1.2.3, 198.51.100.1' })).toBe('203.0.113.9');
  });

  it('from a trusted balancer, takes the rightmost hop that is not a trusted proxy', () => {
    const addr = behind(['10.0.0.0/8', 'fd00::/8']);
    // The client wrote 1.1.1.1 itself; the balancer appended the address it saw.
    expect(addr('10.0.0.5', { 'x-forwarded-for': '1.1.1.1, 198.51.100.7' })).toBe('198.51.100.7');
    // Two balancers deep.
    expect(addr('10.0.0.5', { 'x-forwarded-for': '198.51.100.7, 10.9.9.9' })).toBe('198.51.100.7');
    expect(addr('fd00::1', { 'x-forwarded-for': '2001:db8::7' })).toBe('2001:db8::7');
    expect(addr('::ffff:10.0.0.5', { 'x-forwarded-for': '198.51.100.7:51234' })).toBe('198.51.100.7');
  });

  it('stops at the reporting proxy when a hop is no address, and at the peer when there is no header', () => {
    const addr = behind(['10.0.0.0/8']);
    expect(addr('10.0.0.5', { 'x-forwarded-for': '198.51.100.7, unknown' })).toBe('10.0.0.5');
    expect(addr('10.0.0.5', {})).toBe('10.0.0.5');
    // Every hop a trusted proxy: the farthest of them.
    expect(addr('10.0.0.5', { 'x-forwarded-for': '10.0.0.1, 10.0.0.2' })).toBe('10.0.0.1');
  });

  it('reads RFC 7239 Forwarded when told to, and then not X-Forwarded-For', () => {
    const addr = behind(['10.0.0.0/8'], 'forwarded');
    expect(addr('10.0.0.5', { forwarded: 'for=192.0.2.60;proto=http;by=10.0.0.5', 'x-forwarded-for': '198.51.100.1' })).toBe('192.0.2.60');
    expect(addr('10.0.0.5', { forwarded: 'for=1.1.1.1, for="[2001:db8:cafe::17]:4711"' })).toBe('2001:db8:cafe::17');
    expect(addr('10.0.0.5', { forwarded: 'for=_hidden' })).toBe('10.0.0.5');
  });

  // A zone id passes isIP as free text of any length: the audit keeps the address without it.
  it('drops an IPv6 zone id, from a hop or the socket peer, whatever its length', () => {
    const addr = behind(['10.0.0.0/8', 'fe80::/10']);
    expect(addr('10.0.0.5', { 'x-forwarded-for': 'fe80::1%anything' })).toBe('fe80::1');
    expect(addr('10.0.0.5', { 'x-forwarded-for': `2001:db8::7%${'a'.repeat(5000)}` })).toBe('2001:db8::7');
    expect(addr('10.0.0.5', { 'x-forwarded-for': '[2001:db8::7%25eth0]:443' })).toBe('2001:db8::7');
    expect(addr('10.0.0.5', { 'x-forwarded-for': '::ffff:198.51.100.7%x' })).toBe('198.51.100.7');
    expect(addr('10.0.0.5', { 'x-forwarded-for': '198.51.100.7, fe80::9%eth0' })).toBe('198.51.100.7');
    expect(behind(['10.0.0.0/8'], 'forwarded')('10.0.0.5', { forwarded: 'for="[2001:db8::7%25eth0]:4711"' })).toBe('2001:db8::7');
    expect(behind([])('fe80::1%eth0', {})).toBe('fe80::1');
    // Nothing but a zone is no address.
    expect(addr('10.0.0.5', { 'x-forwarded-for': '%eth0' })).toBe('10.0.0.5');
  });
});

describe('PHIGATE_TRUSTED_PROXIES', () => {
  it('accepts IPv4 and IPv6 CIDRs and single addresses', () => {
    expect(loadConfig({ PHIGATE_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1, fd00::/8' }).trustedProxies).toEqual(['10.0.0.0/8', '127.0.0.1', 'fd00::/8']);
    expect(cidrProblem('::1/128')).toBeNull();
  });

  it.each(['10.0.0.0/33', 'fd00::/129', 'balancer.internal', '10.0.0.0/8/1', '10.0.0/8', 'fe80::1%eth0/64', 'fe80::1%eth0'])('refuses %s, naming the variable', (v) => {
    expect(() => loadConfig({ PHIGATE_TRUSTED_PROXIES: v })).toThrow(/^PHIGATE_TRUSTED_PROXIES: /);
  });

  it('PHIGATE_FORWARDED_HEADER and PHIGATE_METRICS_PORT are checked too', () => {
    expect(() => loadConfig({ PHIGATE_FORWARDED_HEADER: 'x-real-ip' })).toThrow(/^PHIGATE_FORWARDED_HEADER: /);
    expect(() => loadConfig({ PHIGATE_METRICS_PORT: 'nine' })).toThrow(/^PHIGATE_METRICS_PORT: /);
    expect(loadConfig({ PHIGATE_METRICS_PORT: '9464' }).metricsPort).toBe(9464);
    expect(loadConfig({}).metricsPort).toBeNull();
  });
});
