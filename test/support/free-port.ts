import net from 'node:net';

/**
 * `count` distinct loopback ports nobody listens on at the moment of asking: each held by a
 * listener until all are found, then let go. Not reserved: use them through onFreePorts.
 */
async function unusedPorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

const IN_USE = /EADDRINUSE|address already in use/i;

/** Whether `err` says an address was in use: its code, or its message (which may carry a server's own output). */
export function addressInUse(err: unknown): boolean {
  if ((err as { code?: unknown } | null)?.code === 'EADDRINUSE') return true;
  return IN_USE.test(err instanceof Error ? err.message : String(err));
}

/**
 * Starts something that must be told its ports before it binds them (a PostgreSQL, a PgBouncer, a
 * gateway whose issuer URL names its port) on ports found free. Found free is not reserved:
 * another process may bind one between the finding and `start` binding it. Then `start` fails with
 * the address in use (addressInUse), and is run again on other ports, up to `attempts` times in
 * all. `start` must leave nothing running when it fails. A server that can listen on port 0 and
 * say which port it got needs none of this.
 */
export async function onFreePorts<T>(count: number, start: (ports: number[]) => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const ports = await unusedPorts(count);
    try {
      return await start(ports);
    } catch (err) {
      if (attempt >= attempts || !addressInUse(err)) throw err;
    }
  }
}

/** onFreePorts for one port. */
export const onFreePort = <T>(start: (port: number) => Promise<T>, attempts = 5): Promise<T> => onFreePorts(1, ([port]) => start(port!), attempts);

export interface RefusingPort {
  readonly port: number;
  release(): Promise<void>;
}

/**
 * A loopback port that refuses connections (ECONNREFUSED) for as long as it is held: the local end
 * of a connection this process keeps open to a listener it has since closed. Nothing listens on
 * it, and no server can bind it while the connection holds it, which a port found free and let go
 * could not promise. release() ends the connection.
 */
export async function refusingPort(): Promise<RefusingPort> {
  let accept!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((resolve) => (accept = resolve));
  const server = net.createServer(accept);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    client.once('error', reject);
    client.once('connect', resolve);
  });
  const peer = await accepted;
  // The listener goes at once (its 'close' waits for the held connection): nobody answers on the client's port.
  server.close();
  return {
    port: client.localPort!,
    async release() {
      client.destroy();
      peer.destroy();
      await new Promise((resolve) => server.once('close', resolve));
    },
  };
}
