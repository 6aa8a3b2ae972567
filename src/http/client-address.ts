import net from 'node:net';

/** Which forwarding header the balancers in front write (PHIGATE_FORWARDED_HEADER). */
export type ForwardedHeader = 'x-forwarded-for' | 'forwarded';

export interface ClientAddressOptions {
  /** CIDRs of the balancers (PHIGATE_TRUSTED_PROXIES), already validated by loadConfig. */
  readonly trustedProxies: readonly string[];
  readonly header: ForwardedHeader;
}

/** Hops beyond this many are not looked at: a chain that long is no deployment's. */
const MAX_HOPS = 32;

/**
 * The address an audit row names as the client. A forwarding header is read only when the socket
 * peer is a trusted balancer, and then from the right: each hop a trusted proxy reports is
 * believed, and the first one that is not a trusted proxy is the client. Anything left of it was
 * written by the client and may be forged. A hop that is no address (`unknown`, an obfuscated
 * name) ends the walk at the proxy that reported it.
 */
export function createClientAddress(opts: ClientAddressOptions): (socketAddr: string | null, headers: Readonly<Record<string, string | string[] | undefined>>) => string | null {
  const trusted = new net.BlockList();
  for (const cidr of opts.trustedProxies) {
    const [address, bits] = cidr.split('/') as [string, string | undefined];
    const type = net.isIPv6(address) ? 'ipv6' : 'ipv4';
    trusted.addSubnet(address, bits === undefined ? (type === 'ipv6' ? 128 : 32) : Number(bits), type);
  }
  const isTrusted = (addr: string) => trusted.check(addr, net.isIPv6(addr) ? 'ipv6' : 'ipv4');
  const read = opts.header === 'forwarded' ? forwardedFor : xForwardedFor;

  return (socketAddr, headers) => {
    const peer = socketAddr === null ? null : plainAddress(socketAddr);
    if (peer === null || opts.trustedProxies.length === 0 || !isTrusted(peer)) return peer;
    const raw = headers[opts.header];
    const hops = read(Array.isArray(raw) ? raw.join(',') : (raw ?? ''));
    let client = peer;
    for (let i = hops.length - 1; i >= Math.max(0, hops.length - MAX_HOPS); i--) {
      const hop = plainAddress(hops[i]!);
      if (hop === null) break;
      client = hop;
      if (!isTrusted(hop)) break;
    }
    return client;
  };
}

function xForwardedFor(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

/** RFC 7239: `for=` of each element, quotes and IPv6 brackets removed. */
function forwardedFor(value: string): string[] {
  const hops: string[] = [];
  for (const element of value.split(',')) {
    const pair = element.split(';').map((p) => p.trim()).find((p) => p.toLowerCase().startsWith('for='));
    // An element without `for=` still is a hop, one that names no address.
    hops.push(pair === undefined ? '' : pair.slice(4).replace(/^"(.*)"$/, '$1'));
  }
  return hops;
}

/**
 * An IP address without port, brackets, IPv6 zone id or IPv4-mapped prefix; null when it is none.
 * The zone (`fe80::1%eth0`, `%25eth0` in a URI) is dropped, not refused: it names an interface of
 * the host that wrote it, not the client, and it is the one part `isIP` lets through as free text
 * of any length, which would otherwise be stored as the audit's address and split one client's
 * rows across made-up "addresses".
 */
function plainAddress(value: string): string | null {
  let v = value.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(v);
  if (bracketed) v = bracketed[1]!;
  else if (/^[\d.]+:\d+$/.test(v)) v = v.slice(0, v.lastIndexOf(':'));
  const zone = v.indexOf('%');
  if (zone !== -1) v = v.slice(0, zone);
  if (v.toLowerCase().startsWith('::ffff:') && net.isIPv4(v.slice(7))) v = v.slice(7);
  return net.isIP(v) === 0 ? null : v;
}

/** `null` when `cidr` is an address or an address/prefix; otherwise what is wrong with it. */
export function cidrProblem(cidr: string): string | null {
  const [address, bits, extra] = cidr.split('/');
  if (extra !== undefined || address === undefined) return `${cidr} is not a CIDR`;
  if (address.includes('%')) return `${cidr} has an IPv6 zone id (%...): give the address alone`;
  const family = net.isIP(address);
  if (family === 0) return `${cidr} does not start with an IPv4 or IPv6 address`;
  if (bits === undefined) return null;
  const max = family === 6 ? 128 : 32;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return `${cidr} has a prefix length outside 0-${max}`;
  return null;
}
