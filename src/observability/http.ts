import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from 'winston';
import type { QuorumStatus } from '../lock/redlock.ts';
import type { PollHealth, WorkerState } from '../runtime/worker.ts';
import { serializeError } from './serialize.ts';

export interface MetricsServerOptions {
  /** Port to listen on; 0 picks a free one (see {@link MetricsServer.port}). */
  port: number;
  /**
   * Address to bind.
   * @defaultValue every interface (`::`, and `0.0.0.0` through it)
   */
  host?: string;
  /** Served on `/metrics`. */
  registry: Registry;
  /** `/readyz` requires `state === 'running'`, and receives that answer (`pollHealth`, when given). */
  worker: ReadinessWorker;
  /** `/readyz` requires `quorumStatus().available`: a quorum that accepts writes. */
  redlock: { quorumStatus(): Promise<QuorumStatus> };
  /**
   * How long one `quorumStatus()` round serves `/readyz`, in ms: probes cost a write on every node, so
   * frequent or concurrent requests share one round instead of sending one each.
   * @defaultValue 1000
   */
  quorumCacheMs?: number;
  /** For failures of the server itself (a scrape that threw). */
  logger?: Logger;
}

/** A listening health and metrics server. */
export interface MetricsServer {
  /** The port bound (the actual one when 0 was asked for). */
  readonly port: number;
  readonly server: Server;
  /** Stops accepting connections, closes idle keep-alive ones and, after a short grace, the rest. */
  close(): Promise<void>;
}

/** What `/readyz` reads of the worker. */
export interface ReadinessWorker {
  readonly state: WorkerState;
  readonly pollHealth?: PollHealth;
}

/** Body of `/readyz`. */
export interface Readiness {
  readonly ready: boolean;
  /** Why not ready; absent when ready. */
  readonly reason?: string;
  readonly state: WorkerState;
  readonly redis?: {
    readonly up: readonly string[];
    readonly down: readonly string[];
    readonly errors?: Readonly<Record<string, string>>;
  };
  /** Present when the poll loops are not healthy. */
  readonly polling?: PollHealth;
}

const CLOSE_GRACE_MS = 1_000;

/**
 * A plain node:http server for operators:
 * - `GET /metrics`: the registry in Prometheus text format;
 * - `GET /healthz`: 200 `ok` while the process serves requests (liveness);
 * - `GET /readyz`: 200 when the worker is polling, its receives answer, and a quorum of Redis nodes
 *   accepts writes (a probe round cached for `quorumCacheMs`), otherwise 503; the JSON body says why
 *   (readiness). It names the Redis nodes (host:port), as `/metrics` does: bind it where only
 *   operators reach it (`host`).
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, worker, logger } = options;
  const redlock = cachedQuorumStatus(options.redlock, options.quorumCacheMs ?? 1_000);

  const server = createServer((req, res) => {
    void route(req, res).catch((error: unknown) => {
      logger?.error('metrics server: request failed', { url: req.url, err: serializeError(error) });
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    });
  });
  // A scrape must never keep a stopped worker alive, nor a dead peer hold a socket for long.
  server.keepAliveTimeout = 5_000;
  server.requestTimeout = 10_000;

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', req.method);
      return;
    }
    switch (path) {
      case '/metrics':
        send(res, 200, registry.contentType, await registry.metrics(), req.method);
        return;
      case '/healthz':
        send(res, 200, 'text/plain; charset=utf-8', 'ok\n', req.method);
        return;
      case '/readyz': {
        const readiness = await checkReadiness(worker, redlock);
        send(
          res,
          readiness.ready ? 200 : 503,
          'application/json; charset=utf-8',
          `${JSON.stringify(readiness)}\n`,
          req.method,
        );
        return;
      }
      default:
        send(
          res,
          404,
          'text/plain; charset=utf-8',
          'not found: try /metrics, /healthz or /readyz\n',
          req.method,
        );
    }
  }

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once('error', onError);
    server.listen({ port: options.port, host: options.host }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (error) => logger?.error('metrics server error', { err: serializeError(error) }));
  const port = (server.address() as AddressInfo).port;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      force.unref();
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    });
    return closing;
  };

  return { port, server, close };
}

/**
 * One `quorumStatus()` round shared by every caller until it is `maxAgeMs` old (counted from its
 * answer); callers meanwhile, concurrent ones included, get the same promise.
 */
export function cachedQuorumStatus(
  redlock: { quorumStatus(): Promise<QuorumStatus> },
  maxAgeMs: number,
): { quorumStatus(): Promise<QuorumStatus> } {
  let cached: { answeredAt: number | undefined; status: Promise<QuorumStatus> } | undefined;
  return {
    quorumStatus() {
      const now = performance.now();
      if (!cached || (cached.answeredAt !== undefined && now - cached.answeredAt >= maxAgeMs)) {
        const entry: { answeredAt: number | undefined; status: Promise<QuorumStatus> } = {
          answeredAt: undefined,
          status: redlock.quorumStatus(),
        };
        const answered = (): void => {
          entry.answeredAt = performance.now();
        };
        entry.status.then(answered, answered);
        cached = entry;
      }
      return cached.status;
    },
  };
}

/**
 * Ready: the worker is polling (not idle, paused, stopping or stopped), its receives answer (none
 * failing, none stuck) and a quorum of Redis nodes accepts writes.
 */
export async function checkReadiness(
  worker: ReadinessWorker,
  redlock: { quorumStatus(): Promise<QuorumStatus> },
): Promise<Readiness> {
  const state = worker.state;
  if (state !== 'running') {
    const reason = state === 'paused' ? 'polling paused: no Redis quorum' : `worker is ${state}`;
    return { ready: false, reason, state };
  }
  const polling = worker.pollHealth;
  if (polling && polling.failingReceives > 0) {
    return {
      ready: false,
      reason: `ReceiveMessage fails: ${polling.lastReceiveError ?? 'error'}`,
      state,
      polling,
    };
  }
  if (polling && polling.stuckPollers > 0) {
    return {
      ready: false,
      reason: `${polling.stuckPollers} ReceiveMessage call(s) open far past waitTimeSeconds`,
      state,
      polling,
    };
  }
  let status: QuorumStatus;
  try {
    status = await redlock.quorumStatus();
  } catch (error) {
    return { ready: false, reason: `quorum check failed: ${(error as Error)?.message ?? error}`, state };
  }
  const redis = { up: status.up, down: status.down, ...(status.errors ? { errors: status.errors } : {}) };
  if (!status.available) return { ready: false, reason: 'no Redis quorum', state, redis };
  return { ready: true, state, redis };
}

function send(res: ServerResponse, status: number, contentType: string, body: string, method?: string): void {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(method === 'HEAD' ? undefined : body);
}
