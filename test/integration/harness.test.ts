import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { type RedisNode, useRedisNodes } from '../helpers/redis-nodes.ts';

const TIMEOUT = Symbol('timeout');

/** Resolves to TIMEOUT if `promise` has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  return Promise.race([
    promise,
    new Promise<typeof TIMEOUT>((resolve) => setTimeout(() => resolve(TIMEOUT), ms)),
  ]);
}

function at<T>(items: readonly T[], index: number): T {
  const item = items[index];
  if (item === undefined) throw new Error(`no item at index ${index}`);
  return item;
}

describe('redis harness', () => {
  const redis = useRedisNodes(3);

  it('starts nodes on distinct free ports, never 6379', () => {
    const ports = redis.nodes.map((node) => node.port);
    expect(ports).toHaveLength(3);
    expect(new Set(ports).size).toBe(3);
    expect(ports).not.toContain(6379);
    for (const node of redis.nodes) {
      expect(node.host).toBe('127.0.0.1');
      expect(node.url).toBe(`redis://127.0.0.1:${node.port}`);
      expect(node.isRunning).toBe(true);
      expect(node.isPaused).toBe(false);
    }
  });

  it('serves SET/GET through each node', async () => {
    const clients = redis.clients();
    await Promise.all(clients.map((client, i) => client.set('k', `v${i}`)));
    // Each node is independent, so each holds its own value.
    expect(await Promise.all(clients.map((client) => client.get('k')))).toEqual(['v0', 'v1', 'v2']);
  });

  it('kill() makes a node unreachable while the others keep working; restart() brings it back', async () => {
    const clients = redis.clients();
    const node = at(redis.nodes, 0);
    await Promise.all(clients.map((client) => client.ping()));

    await node.kill();
    expect(node.isRunning).toBe(false);
    await expect(at(clients, 0).ping()).rejects.toThrow();
    expect(await at(clients, 1).ping()).toBe('PONG');
    expect(await at(clients, 2).ping()).toBe('PONG');

    await node.restart();
    expect(node.isRunning).toBe(true);
    // The same client reconnects by itself (retryStrategy: every 50 ms) since the port is unchanged.
    expect(await at(clients, 0).ping()).toBe('PONG');
  });

  it('pause() freezes a node until resume()', async () => {
    const node = at(redis.nodes, 1);
    const client = at(redis.clients(), 1);
    expect(await client.ping()).toBe('PONG');

    node.pause();
    expect(node.isPaused).toBe(true);
    const pending = client.ping();
    expect(await within(pending, 200)).toBe(TIMEOUT);

    node.resume();
    expect(node.isPaused).toBe(false);
    // The queued PING is answered once the process runs again.
    expect(await pending).toBe('PONG');
    expect(await client.ping()).toBe('PONG');
  });

  it('commandStats() counts commands, resetStats() clears them', async () => {
    const node = at(redis.nodes, 2);
    const client = node.client();
    await client.ping(); // connected + handshake done before the reset
    await node.resetStats();
    await client.get('a');
    await client.get('b');
    await client.get('c');
    const stats = await node.commandStats();
    // commandStats() uses its own raw connection, so only our GETs are counted.
    expect(stats.get).toBe(3);
    expect(stats.ping).toBeUndefined();
  });

  it('flushAll() empties a node', async () => {
    const node = at(redis.nodes, 2);
    const client = node.client();
    await client.set('x', '1');
    await node.flushAll();
    expect(await client.dbsize()).toBe(0);
  });

  describe('appendonly', () => {
    const aof = useRedisNodes(1, { appendonly: true });

    it('keeps data across kill + restart', async () => {
      const node: RedisNode = at(aof.nodes, 0);
      const client: Redis = node.client();
      await client.set('durable', 'yes');
      await node.kill();
      await node.restart();
      expect(await client.get('durable')).toBe('yes');
    });
  });

  describe('cluster', () => {
    const cluster = useRedisNodes(1, { cluster: true });

    it('is a healthy single-node cluster that runs multi-key scripts on one hash tag', async () => {
      const client = at(cluster.clients(), 0);
      expect(await client.cluster('INFO')).toMatch(/cluster_state:ok/);
      const result = await client.eval(
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return redis.call('MGET', KEYS[1], KEYS[2])",
        2,
        '{t}a',
        '{t}b',
        'v',
      );
      expect(result).toEqual(['v', 'v']);
    });

    it('stays a cluster owning all slots after restart', async () => {
      const node = at(cluster.nodes, 0);
      await node.restart();
      const client = node.client();
      expect(await client.cluster('INFO')).toMatch(/cluster_slots_assigned:16384/);
      expect(await client.get('{t}a')).toBeNull(); // no persistence by default
    });
  });
});
