import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { addressInUse, onFreePort, onFreePorts, refusingPort } from '../../support/free-port.ts';

// The test support's ports: a port found free is not reserved, so a server told its port retries on
// another when it lost it, and a port meant to refuse connections is held so that nobody can take it.

const listen = (port: number) =>
  new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
const close = (s: net.Server) => new Promise((resolve) => s.close(resolve));
const connectError = (port: number) =>
  new Promise<string | undefined>((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => (c.destroy(), resolve(undefined)));
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
  });

describe('ports for test servers', () => {
  it('starts again on another port when another process took the one found free before the server bound it', async () => {
    const tried: number[] = [];
    const taken: net.Server[] = [];
    const server = await onFreePort(async (port) => {
      tried.push(port);
      // Somebody else binds the port first, once.
      if (tried.length === 1) taken.push(await listen(port));
      return listen(port);
    });
    try {
      expect(tried).toHaveLength(2);
      expect(tried[1]).not.toBe(tried[0]);
      expect((server.address() as net.AddressInfo).port).toBe(tried[1]);
    } finally {
      await Promise.all([server, ...taken].map(close));
    }
  });

  it('gives distinct ports, and passes on a failure that is not an address in use, or one past its attempts', async () => {
    const ports = await onFreePorts(4, async (p) => p);
    expect(new Set(ports).size).toBe(4);
    let runs = 0;
    await expect(onFreePort(async () => (runs++, Promise.reject(new Error('no such binary'))))).rejects.toThrow('no such binary');
    expect(runs).toBe(1);
    await expect(onFreePort(async () => (runs++, Promise.reject(new Error('bind: Address already in use'))), 3)).rejects.toThrow('Address already in use');
    expect(runs).toBe(4);
    expect([addressInUse({ code: 'EADDRINUSE' }), addressInUse(new Error('could not bind IPv4 address "127.0.0.1": Address already in use')), addressInUse(new Error('ECONNREFUSED'))]).toEqual([true, true, false]);
  });

  it('a refusing port refuses connections and cannot be bound while held', async () => {
    const held = await refusingPort();
    try {
      expect(await connectError(held.port)).toBe('ECONNREFUSED');
      await expect(listen(held.port)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      await held.release();
    }
  });
});
