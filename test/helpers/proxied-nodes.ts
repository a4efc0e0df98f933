import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { type FaultProxy, startFaultProxies } from './fault-proxy.ts';
import { type RedisNodes, useRedisNodes } from './redis-nodes.ts';

/**
 * A test file's Redis nodes, each behind a FaultProxy of its own (started before the file's tests,
 * closed after them). `viaProxies()` makes one client per node through its proxy (the caller closes
 * them, usually through `redlock.quit()`); `redis.clients()` reaches the nodes directly.
 */
export function useProxiedNodes(count: number): {
  redis: RedisNodes;
  proxies: () => FaultProxy[];
  viaProxies: (options?: RedisOptions) => Redis[];
} {
  const redis = useRedisNodes(count);
  let proxies: FaultProxy[] = [];
  beforeAll(async () => {
    proxies = await startFaultProxies(redis.nodes.map((n) => n.port));
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
  });
  return {
    redis,
    proxies: () => proxies,
    viaProxies: (options = {}) =>
      proxies.map((p) => {
        const client = new Redis({ host: '127.0.0.1', port: p.port, ...options });
        client.on('error', () => undefined); // faults are the point: their errors are expected
        return client;
      }),
  };
}
