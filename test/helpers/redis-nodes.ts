/**
 * Test harness that runs real, independent `redis-server` processes on free ports.
 *
 * Every node lives in its own temp dir, can be killed / paused / restarted to simulate
 * failures, and is always cleaned up: by `stop()`, and as a last resort by a
 * `process.on('exit')` hook so no redis-server outlives the test process.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';

const HOST = '127.0.0.1';
/** The machine's own Redis lives here: never start on, or talk to, it. */
const FORBIDDEN_PORT = 6379;
const READY_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 25;
/** How often we retry with a fresh port when another process grabbed ours between probe and bind. */
const MAX_START_ATTEMPTS = 5;

export interface StartOptions {
  /** AOF with `appendfsync always`, so writes survive `kill()` + `restart()`. */
  appendonly?: boolean;
  /** Make every node its own single-node Redis Cluster owning all 16384 slots. */
  cluster?: boolean;
}

/** One `redis-server` process. */
export interface RedisNode {
  readonly port: number;
  readonly host: string;
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  /** Temp dir holding the log, AOF/RDB and (cluster) nodes.conf. */
  readonly dir: string;
  readonly isRunning: boolean;
  readonly isPaused: boolean;
  /** SIGKILL (a crash, no shutdown save); resolves once the process has exited. */
  kill(): Promise<void>;
  /** SIGSTOP: the node keeps its sockets but answers nothing, like a GC pause or a frozen VM. */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
  /**
   * Start again on the same port and dir (killing it first if needed) and wait until it is usable.
   * Cluster nodes take ~2 s: redis keeps a rebooted master out of cluster_state:ok that long.
   */
  restart(): Promise<void>;
  /** Kill for good, disconnect this node's clients and remove its temp dir. */
  stop(): Promise<void>;
  /** A tracked ioredis client for this node (see {@link clientOptions}). */
  client(opts?: RedisOptions): Redis;
  /** `INFO commandstats` as command name -> calls, e.g. `{ evalsha: 3, eval: 1, 'client|setinfo': 2 }`. */
  commandStats(): Promise<Record<string, number>>;
  /** `CONFIG RESETSTAT`, so a later `commandStats()` only counts what the test did. */
  resetStats(): Promise<void>;
  flushAll(): Promise<void>;
}

/** A set of independent nodes (not replicas of each other: think Redlock quorum members). */
export interface RedisNodes {
  readonly nodes: RedisNode[];
  /** One new tracked client per node, in node order. */
  clients(opts?: RedisOptions): Redis[];
  /** Kill every node, disconnect every tracked client, remove temp dirs. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Last-resort cleanup: a failing test or a thrown beforeAll must not leak servers.

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function killChildSync(child: ChildProcess): void {
  try {
    // A stopped process would still die from SIGKILL, but continue it first so it
    // can never linger in the stopped state if the kill were somehow lost.
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  } catch {
    // Already gone.
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) killChildSync(child);
    for (const dir of liveDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // Best effort: the OS tmp cleaner will get it.
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Short-lived admin connections: let the harness probe / administer a node without the
// handshake of a normal client (HELLO, CLIENT SETINFO, INFO ready-check), so the command
// stats the tests assert on only count what the tests themselves sent.

/**
 * Runs `fn` on a fresh ioredis connection to `port` that sends nothing but `fn`'s commands,
 * never retries or queues, gives up after `timeoutMs` (connect, and each command), and is
 * always disconnected afterwards.
 */
async function withAdmin<T>(port: number, fn: (admin: Redis) => Promise<T>, timeoutMs = 1_000): Promise<T> {
  const admin = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    // RESP2 skips HELLO; with disableClientInfo and no ready check the handshake is empty.
    protocol: 2,
    disableClientInfo: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  // Failures surface through the rejected promises; without a listener ioredis would log them.
  admin.on('error', () => {});
  try {
    await admin.connect();
    return await fn(admin);
  } finally {
    admin.disconnect();
  }
}

function infoField(info: string, field: string): string | undefined {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match?.[1]?.trim();
}

// ---------------------------------------------------------------------------

/** A port the OS considers free right now (it may be taken again before redis binds it: callers retry). */
async function findFreePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.unref();
      server.on('error', reject);
      server.listen(0, HOST, () => {
        const address = server.address();
        const found = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(found));
      });
    });
    // Cluster bus ports are configured explicitly, so any port works; just never the machine Redis.
    if (port !== FORBIDDEN_PORT && port !== 0) return port;
  }
}

function logTail(logfile: string, lines = 15): string {
  try {
    return readFileSync(logfile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log file)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Default client options: fail fast while a node is down, but keep reconnecting so a restart is picked up. */
function clientOptions(port: number, opts: RedisOptions | undefined): RedisOptions {
  return {
    host: HOST,
    port,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 50,
    ...opts,
  };
}

class BindError extends Error {
  override name = 'BindError';
}

class Node implements RedisNode {
  readonly host = HOST;
  readonly dir: string;
  readonly #options: StartOptions;
  readonly #logfile: string;
  readonly #clients = new Set<Redis>();
  #port: number;
  /** Cluster bus port; explicit (`--cluster-port`) so data ports above 55535 work too. */
  #clusterPort: number;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #paused = false;
  #stopped = false;

  constructor(dir: string, port: number, clusterPort: number, options: StartOptions) {
    this.dir = dir;
    this.#port = port;
    this.#clusterPort = clusterPort;
    this.#options = options;
    this.#logfile = path.join(dir, 'redis.log');
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `redis://${HOST}:${this.#port}`;
  }

  get isRunning(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  get isPaused(): boolean {
    return this.isRunning && this.#paused;
  }

  /** First start: retries on a fresh port if another process took ours between probe and bind. */
  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#spawnAndWait();
        break;
      } catch (err) {
        if (!(err instanceof BindError) || attempt >= MAX_START_ATTEMPTS) throw err;
        this.#port = await findFreePort();
        if (this.#options.cluster) this.#clusterPort = await findFreePort();
      }
    }
    if (this.#options.cluster) {
      await withAdmin(this.#port, (admin) => admin.cluster('ADDSLOTSRANGE', 0, 16383));
      await this.#waitClusterOk();
    }
  }

  async restart(): Promise<void> {
    if (this.#stopped) throw new Error(`redis ${this.#port}: restart() after stop()`);
    await this.kill();
    // Same port on purpose (clients reconnect to it); a short retry covers a slow socket release.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#spawnAndWait();
        break;
      } catch (err) {
        if (!(err instanceof BindError) || attempt >= MAX_START_ATTEMPTS) throw err;
        await sleep(100);
      }
    }
    // nodes.conf in the dir still records our slots. A restarted cluster master reports
    // cluster_state:fail for a fixed ~2 s (CLUSTER_WRITABLE_DELAY in redis, not configurable).
    if (this.#options.cluster) await this.#waitClusterOk();
  }

  #args(): string[] {
    const args = [
      '--port',
      String(this.#port),
      '--bind',
      HOST,
      '--dir',
      this.dir,
      '--logfile',
      this.#logfile,
      '--daemonize',
      'no',
      '--save',
      '',
    ];
    if (this.#options.appendonly) args.push('--appendonly', 'yes', '--appendfsync', 'always');
    else args.push('--appendonly', 'no');
    if (this.#options.cluster) {
      args.push(
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-port',
        String(this.#clusterPort),
        // A lone node never learns its own IP from a peer, so CLUSTER SLOTS would announce "" and
        // ioredis' Cluster client would drop the seed and never become ready.
        '--cluster-announce-ip',
        HOST,
      );
    }
    return args;
  }

  async #spawnAndWait(): Promise<void> {
    installExitHook();
    const child = spawn('redis-server', this.#args(), {
      cwd: this.dir,
      stdio: 'ignore',
      // Same process group as us (not detached), so a Ctrl-C to the terminal reaches it too.
      detached: false,
    });
    // Don't let an idle redis child keep the test process alive; the exit hook kills it.
    child.unref();
    liveChildren.add(child);
    this.#child = child;
    this.#paused = false;
    let spawnError: Error | undefined;
    this.#exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        liveChildren.delete(child);
        resolve();
      });
      child.once('error', (err) => {
        // spawn failure (e.g. redis-server not on PATH): no 'exit' follows.
        spawnError = err;
        liveChildren.delete(child);
        resolve();
      });
    });

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`redis-server could not be spawned: ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        const tail = logTail(this.#logfile);
        const message = `redis-server on port ${this.#port} exited early (code ${child.exitCode}, signal ${child.signalCode}). Log tail:\n${tail}`;
        throw /Address already in use|Could not create server TCP listening socket/i.test(tail)
          ? new BindError(message)
          : new Error(message);
      }
      try {
        // Check the answering server really is our child: if our bind failed, another
        // process (e.g. a parallel test's redis) may be the one listening on this port.
        const ready = await withAdmin(
          this.#port,
          async (admin) =>
            infoField(await admin.info('server'), 'process_id') === String(child.pid) &&
            // INFO is allowed while an AOF is loading; PING is not, so it proves readiness.
            (await admin.ping()) === 'PONG',
          500,
        );
        if (ready) return;
      } catch (err) {
        lastError = err;
      }
      await sleep(POLL_INTERVAL_MS);
    }
    killChildSync(child);
    await this.#exited;
    throw new Error(
      `redis-server on port ${this.#port} did not answer PING within ${READY_TIMEOUT_MS} ms ` +
        `(last error: ${lastError instanceof Error ? lastError.message : String(lastError)}). Log tail:\n${logTail(this.#logfile)}`,
    );
  }

  async #waitClusterOk(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const info = await withAdmin(this.#port, (admin) => admin.cluster('INFO'), 500);
        last = infoField(info, 'cluster_state') ?? '';
        if (last === 'ok') return;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(POLL_INTERVAL_MS);
    }
    throw new Error(
      `redis cluster node on port ${this.#port} did not reach cluster_state:ok within ${READY_TIMEOUT_MS} ms ` +
        `(last: ${last}). Log tail:\n${logTail(this.#logfile)}`,
    );
  }

  async kill(): Promise<void> {
    const child = this.#child;
    if (!child || !this.isRunning) return;
    // While waiting for the exit, keep the event loop alive (the child is otherwise unref'd).
    child.ref();
    killChildSync(child);
    await this.#exited;
    child.unref();
    this.#paused = false;
  }

  pause(): void {
    if (!this.isRunning) throw new Error(`redis ${this.#port}: pause() while not running`);
    this.#child?.kill('SIGSTOP');
    this.#paused = true;
  }

  resume(): void {
    if (!this.isRunning) throw new Error(`redis ${this.#port}: resume() while not running`);
    this.#child?.kill('SIGCONT');
    this.#paused = false;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const client of this.#clients) client.disconnect();
    this.#clients.clear();
    await this.kill();
    await rm(this.dir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
  }

  client(opts?: RedisOptions): Redis {
    const client = new Redis(clientOptions(this.#port, opts));
    // Killed / paused nodes are the point of these tests: connection errors are expected noise,
    // and an 'error' event without a listener would be reported as unhandled.
    client.on('error', () => {});
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    return client;
  }

  async commandStats(): Promise<Record<string, number>> {
    const info = await withAdmin(this.#port, (admin) => admin.info('commandstats'));
    const stats: Record<string, number> = {};
    // e.g. "cmdstat_evalsha:calls=3,usec=42,usec_per_call=14.00,rejected_calls=0,failed_calls=0"
    for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      const [, name, calls] = match;
      if (name !== undefined && calls !== undefined) stats[name] = Number(calls);
    }
    return stats;
  }

  async resetStats(): Promise<void> {
    await withAdmin(this.#port, (admin) => admin.config('RESETSTAT'));
  }

  async flushAll(): Promise<void> {
    await withAdmin(this.#port, (admin) => admin.flushall());
  }
}

/**
 * Starts `count` independent redis-server processes on free ports (never 6379).
 *
 * @example
 * const redis = await startRedisNodes(3, { appendonly: true });
 * try {
 *   const [a] = redis.clients();
 *   await redis.nodes[1]?.kill();
 * } finally {
 *   await redis.stop();
 * }
 */
export async function startRedisNodes(count: number, options: StartOptions = {}): Promise<RedisNodes> {
  installExitHook();
  const nodes: Node[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  try {
    // Sequential port probing avoids handing the same just-freed port to two nodes.
    for (let i = 0; i < count; i++) {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'redis-node-'));
      liveDirs.add(dir);
      const port = await findFreePort();
      const clusterPort = options.cluster ? await findFreePort() : 0;
      const node = new Node(dir, port, clusterPort, options);
      nodes.push(node);
      await node.start();
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes,
    clients: (opts) => nodes.map((node) => node.client(opts)),
    stop,
  };
}

/**
 * Vitest wrapper: starts the nodes in `beforeAll`, stops them in `afterAll`, and returns a
 * live view whose members may be used inside tests (not at describe-collection time).
 *
 * @example
 * describe('lock', () => {
 *   const redis = useRedisNodes(3);
 *   it('acquires', async () => {
 *     const clients = redis.clients();
 *     await redis.nodes[0]?.kill();
 *   });
 * });
 */
export function useRedisNodes(count: number, options: StartOptions = {}): RedisNodes {
  let current: RedisNodes | undefined;
  const get = (): RedisNodes => {
    if (!current)
      throw new Error('useRedisNodes(): nodes are only available inside tests / hooks after beforeAll');
    return current;
  };
  beforeAll(async () => {
    current = await startRedisNodes(count, options);
  }, 30_000);
  afterAll(async () => {
    await current?.stop();
    current = undefined;
  });
  return {
    get nodes() {
      return get().nodes;
    },
    clients: (opts) => get().clients(opts),
    stop: () => get().stop(),
  };
}
