/**
 * A TCP fault proxy in front of one Redis node (or any TCP server), for fault tests of the lock engine:
 * clients connect to `proxy.port`, every connection is forwarded to the target port, and the proxy
 * can, per node:
 *
 * - `pass()`: forward at once;
 * - `delay(ms)`: hold every chunk `ms` before forwarding it, in order (a slow link; nothing is reordered);
 * - `blackHole()`: accept connections and bytes but forward nothing and send no RST (a partition, a
 *   dropped route): the peer sees a live socket that never answers;
 * - `reset()`: destroy every open connection with an RST (a crashed middlebox); new ones go through;
 * - `refuse()`: like `reset()`, and every new connection is reset at once until `heal()`;
 * - `heal()`: back to `pass()`. Bytes held by a black hole are then delivered, in order, as TCP would
 *   once a partition heals (late replies, late commands).
 *
 * A close by either side is forwarded after the bytes before it, so it is held and delayed like them.
 * Nothing is ever reordered or dropped inside a connection: only whole connections are cut.
 */
import net from 'node:net';

const HOST = '127.0.0.1';

export type ProxyMode =
  | { readonly kind: 'pass' }
  | { readonly kind: 'delay'; readonly ms: number }
  | { readonly kind: 'blackhole' }
  | { readonly kind: 'refuse' };

/** One chunk (or the close after the last one) waiting to be forwarded; `at` is Infinity while held. */
interface Pending {
  readonly chunk: Buffer | 'end';
  at: number;
}

/** One direction of a connection: forwards chunks in arrival order, each no earlier than its `at`. */
class Pipe {
  readonly #queue: Pending[] = [];
  readonly #to: net.Socket;
  readonly #onEnd: () => void;
  #timer: NodeJS.Timeout | undefined;
  #lastAt = 0;

  constructor(to: net.Socket, onEnd: () => void) {
    this.#to = to;
    this.#onEnd = onEnd;
  }

  push(chunk: Buffer | 'end', mode: ProxyMode): void {
    const now = performance.now();
    // Later chunks never overtake earlier ones: each is due no earlier than the one before it.
    const at =
      mode.kind === 'blackhole' || mode.kind === 'refuse'
        ? Number.POSITIVE_INFINITY
        : Math.max(this.#lastAt, mode.kind === 'delay' ? now + mode.ms : now);
    if (at !== Number.POSITIVE_INFINITY) this.#lastAt = at;
    this.#queue.push({ chunk, at });
    this.#pump();
  }

  /** Held chunks become due now (a black hole healed), still in order. */
  release(): void {
    const now = performance.now();
    for (const pending of this.#queue) {
      if (pending.at === Number.POSITIVE_INFINITY) pending.at = Math.max(now, this.#lastAt);
    }
    this.#lastAt = Math.max(this.#lastAt, now);
    this.#pump();
  }

  clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
  }

  #pump(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = performance.now();
    while (this.#queue.length > 0) {
      const head = this.#queue[0] as Pending;
      if (head.at > now) {
        if (head.at !== Number.POSITIVE_INFINITY) {
          this.#timer = setTimeout(() => this.#pump(), Math.ceil(head.at - now));
          this.#timer.unref();
        }
        return;
      }
      this.#queue.shift();
      if (head.chunk === 'end') {
        this.#onEnd();
        return;
      }
      if (!this.#to.destroyed) this.#to.write(head.chunk);
    }
  }
}

/** A client connection and its upstream connection, with one pipe per direction. */
class Link {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly toUpstream: Pipe;
  readonly toClient: Pipe;
  readonly #onClosed: (link: Link) => void;
  #closed = false;

  constructor(client: net.Socket, targetPort: number, mode: () => ProxyMode, onClosed: (link: Link) => void) {
    this.client = client;
    this.#onClosed = onClosed;
    this.upstream = net.connect({ host: HOST, port: targetPort, noDelay: true });
    this.toUpstream = new Pipe(this.upstream, () => this.close());
    this.toClient = new Pipe(client, () => this.close());
    client.on('data', (chunk: Buffer) => this.toUpstream.push(chunk, mode()));
    this.upstream.on('data', (chunk: Buffer) => this.toClient.push(chunk, mode()));
    // A close is forwarded behind the bytes before it (held or delayed like them): a command sent just
    // before its client went away still reaches the node once a black hole heals, as over TCP.
    const clientGone = (): void => this.toUpstream.push('end', mode());
    const upstreamGone = (): void => this.toClient.push('end', mode());
    client.on('end', clientGone);
    client.on('close', clientGone);
    this.upstream.on('end', upstreamGone);
    // The node is down (refused, killed): the client sees its connection reset, as it would directly.
    this.upstream.on('error', () => this.reset());
    this.upstream.on('close', upstreamGone);
    client.on('error', () => undefined);
  }

  /** Both sides closed (FIN), pipes dropped. */
  close(): void {
    if (this.#end()) {
      this.client.destroy();
      this.upstream.destroy();
    }
  }

  /** The client's connection is reset (RST), the upstream one closed. */
  reset(): void {
    if (this.#end()) {
      if (!this.client.destroyed) this.client.resetAndDestroy();
      this.upstream.destroy();
    }
  }

  #end(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    this.toUpstream.clear();
    this.toClient.clear();
    this.#onClosed(this);
    return true;
  }
}

export class FaultProxy {
  readonly targetPort: number;
  readonly #server: net.Server;
  readonly #links = new Set<Link>();
  #mode: ProxyMode = { kind: 'pass' };

  private constructor(server: net.Server, targetPort: number) {
    this.#server = server;
    this.targetPort = targetPort;
  }

  /** A proxy on a free port of 127.0.0.1 forwarding to `targetPort` on 127.0.0.1. */
  static async start(targetPort: number): Promise<FaultProxy> {
    const server = net.createServer({ noDelay: true });
    const proxy = new FaultProxy(server, targetPort);
    server.on('connection', (socket) => proxy.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, HOST, () => resolve());
    });
    server.unref();
    return proxy;
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  get mode(): ProxyMode {
    return this.#mode;
  }

  /** Open client connections. */
  get connections(): number {
    return this.#links.size;
  }

  pass(): void {
    this.heal();
  }

  delay(ms: number): void {
    this.#mode = { kind: 'delay', ms };
  }

  blackHole(): void {
    this.#mode = { kind: 'blackhole' };
  }

  /** Resets every open connection; new ones are forwarded as the current mode says. */
  reset(): void {
    for (const link of [...this.#links]) link.reset();
  }

  /** Resets every open connection and every new one until `heal()`. */
  refuse(): void {
    this.#mode = { kind: 'refuse' };
    this.reset();
  }

  /** Forwards at once again; what a black hole held is delivered now, in order. */
  /** Starts one of the schedules' proxy faults (`delayMs` for 'delay'). */
  startFault(fault: 'blackhole' | 'refuse' | 'delay', delayMs: number): void {
    if (fault === 'blackhole') this.blackHole();
    else if (fault === 'refuse') this.refuse();
    else this.delay(delayMs);
  }

  heal(): void {
    this.#mode = { kind: 'pass' };
    for (const link of this.#links) {
      link.toUpstream.release();
      link.toClient.release();
    }
  }

  async close(): Promise<void> {
    for (const link of [...this.#links]) link.close();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    if (this.#mode.kind === 'refuse') {
      socket.on('error', () => undefined);
      socket.resetAndDestroy();
      return;
    }
    const link = new Link(
      socket,
      this.targetPort,
      () => this.#mode,
      (l) => this.#links.delete(l),
    );
    this.#links.add(link);
  }
}

/** One proxy per target port, in order. */
export async function startFaultProxies(targetPorts: readonly number[]): Promise<FaultProxy[]> {
  return Promise.all(targetPorts.map((port) => FaultProxy.start(port)));
}
