import { Redis } from 'ioredis';
import type { Logger } from 'winston';
import { Redlock, type RedlockOptions } from '../../src/index.ts';
import { ACQUIRE_SCRIPT } from '../../src/lock/acquire.ts';
import { COMPLETE_SCRIPT } from '../../src/lock/complete.ts';
import { EXTEND_SCRIPT } from '../../src/lock/extend.ts';
import { RAISE_FENCE_SCRIPT } from '../../src/lock/fence.ts';
import { RECLAIM_SCRIPT } from '../../src/lock/reclaim.ts';
import { RELEASE_SCRIPT } from '../../src/lock/release.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { RedisNodes } from './redis-nodes.ts';

/** A logger that prints nothing: tests assert on events, not log lines. */
export const silentLogger: Logger = createLogger({ silent: true });

/** A Redlock over fresh clients to every node of `redis`, with fast test timings unless overridden. */
export function redlockOver(
  redis: RedisNodes,
  options: RedlockOptions = {},
): { redlock: Redlock; clients: Redis[] } {
  const clients = redis.clients();
  const redlock = new Redlock(clients, {
    ttlMs: 2_000,
    commandTimeoutMs: 100,
    retryDelayMs: 20,
    retryJitterMs: 20,
    logger: silentLogger,
    ...options,
  });
  return { redlock, clients };
}

/** Calls of EVALSHA and EVAL per node (of `which`, default all) since the last reset: the lock engine's round trips. */
export async function scriptCalls(redis: RedisNodes, which?: number[]): Promise<number[]> {
  const nodes = which ? which.map((i) => redis.nodes[i]).filter((n) => n !== undefined) : redis.nodes;
  const stats = await Promise.all(nodes.map((node) => node.commandStats()));
  return stats.map((s) => (s.evalsha ?? 0) + (s.eval ?? 0));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Sleeps `ms`, returning early when `signal` aborts (at once if it already has): how a well-behaved
 * handler does its work. Shared by the test handlers, the demo and the chaos suite.
 */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Resolves when `signal` aborts, with the time it took. */
export function whenAborted(signal: AbortSignal): Promise<number> {
  const started = performance.now();
  return new Promise((resolve) => {
    if (signal.aborted) resolve(0);
    else signal.addEventListener('abort', () => resolve(performance.now() - started), { once: true });
  });
}

/** Polls `fn` until it resolves truthy or `timeoutMs` passes. */
export async function eventually<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 5_000): Promise<T> {
  const until = performance.now() + timeoutMs;
  let lastError: unknown;
  while (performance.now() < until) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(25);
  }
  throw new Error(`condition not met within ${timeoutMs} ms`, { cause: lastError });
}

/** Loads every engine script on every client's node, so EVALSHA counts are round trips (no NOSCRIPT fallback). */
export async function loadScripts(clients: readonly Redis[]): Promise<void> {
  const scripts = [
    ACQUIRE_SCRIPT,
    EXTEND_SCRIPT,
    RELEASE_SCRIPT,
    COMPLETE_SCRIPT,
    RAISE_FENCE_SCRIPT,
    RECLAIM_SCRIPT,
  ];
  await Promise.all(clients.flatMap((client) => scripts.map((script) => client.script('LOAD', script.lua))));
}

/**
 * A Redlock over a one-node Redis Cluster and two plain nodes, the first plain node killed: every
 * decision needs the Cluster node's answer. `done()` restarts that node and quits the Redlock.
 */
export async function clusterMajority(
  cluster: RedisNodes,
  plain: RedisNodes,
): Promise<{ redlock: Redlock; done(): Promise<void> }> {
  const clusterClient = new Redis.Cluster([{ host: '127.0.0.1', port: cluster.nodes[0]?.port ?? 0 }], {
    redisOptions: { maxRetriesPerRequest: 1 },
  });
  clusterClient.on('error', () => undefined);
  const redlock = new Redlock([clusterClient, ...plain.clients()], {
    commandTimeoutMs: 200,
    logger: silentLogger,
  });
  await eventually(async () => clusterClient.status === 'ready');
  await plain.nodes[0]?.kill();
  return {
    redlock,
    async done() {
      await plain.nodes[0]?.restart();
      await redlock.quit();
    },
  };
}
