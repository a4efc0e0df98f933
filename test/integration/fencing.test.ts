import { Redis } from 'ioredis';
import { describe, expect, it, vi } from 'vitest';
import type { Logger } from 'winston';
import { isLock, Redlock } from '../../src/index.ts';
import {
  clusterMajority,
  eventually,
  loadScripts,
  redlockOver,
  scriptCalls,
  silentLogger,
} from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

describe('fencing tokens and completion markers across majorities', () => {
  // AOF with fsync always: a killed node comes back with its counters, as the fencing guarantee assumes.
  const redis = useRedisNodes(3, { appendonly: true });

  /** Leaves exactly the nodes in `up` running (the others killed), and waits for `clients` to reconnect. */
  async function withMajority(up: number[], clients: Redis[]): Promise<void> {
    await Promise.all(
      redis.nodes.map(async (node, i) => {
        if (up.includes(i) && !node.isRunning) await node.restart();
        if (!up.includes(i) && node.isRunning) await node.kill();
      }),
    );
    await eventually(async () => up.every((i) => clients[i]?.status === 'ready'));
  }

  it('hands out strictly increasing tokens when successive holders are granted by different majorities', async () => {
    const { redlock, clients } = redlockOver(redis, { retryCount: 10 });
    // Diverged counters, as after partial grants: A is ahead of B and C.
    await clients[0]?.set('srw:{acct:7}:fence', '5000');
    await clients[1]?.set('srw:{acct:7}:fence', '1000');
    await clients[2]?.set('srw:{acct:7}:fence', '1000');

    const tokens: number[] = [];
    for (const up of [
      [0, 1],
      [1, 2],
      [0, 2],
      [1, 2],
      [0, 1],
      [0, 2],
    ]) {
      await withMajority(up, clients);
      const lock = await redlock.acquire('acct:7');
      tokens.push(lock.fencingToken);
      await lock.release();
    }
    await withMajority([0, 1, 2], clients);
    await redlock.quit();

    expect(tokens[0]).toBe(5001);
    // Without the write-back, B and C would grant 1002 after A granted 5001.
    expect(tokens.every((t, i) => i === 0 || t > (tokens[i - 1] ?? 0))).toBe(true);
  });

  it('writes the token back only when granting nodes disagree, and a later majority then agrees', async () => {
    const { redlock, clients } = redlockOver(redis);
    // Only A and B up, so both must answer: the grant cannot be decided without either of them.
    await withMajority([0, 1], clients);
    await clients[0]?.set('srw:{acct:8}:fence', '9000');
    await clients[1]?.set('srw:{acct:8}:fence', '3000');
    await loadScripts(clients.slice(0, 2));
    await Promise.all(redis.nodes.slice(0, 2).map((n) => n.resetStats()));
    const first = await redlock.acquire('acct:8');
    expect(first.fencingToken).toBe(9001);
    const stats = await scriptCalls(redis, [0, 1]);
    expect(stats).toEqual([1, 2]); // acquire on both, then one raise on B, which was behind
    await first.release();

    await Promise.all(redis.nodes.slice(0, 2).map((n) => n.resetStats()));
    const second = await redlock.acquire('acct:8');
    expect(second.fencingToken).toBe(9002);
    expect(await scriptCalls(redis, [0, 1])).toEqual([1, 1]); // they agree again: no extra round trip
    await second.release();
    await withMajority([0, 1, 2], clients);
    await redlock.quit();
  });

  it('sees a completion marker through any majority', async () => {
    const { redlock, clients } = redlockOver(redis, { retryCount: 10 });
    await withMajority([0, 1], clients);
    const lock = await redlock.acquire('job:9');
    expect(await lock.complete()).toBe(true); // marker on A and B only

    for (const up of [
      [1, 2],
      [0, 2],
      [0, 1, 2],
    ]) {
      await withMajority(up, clients);
      const [out] = await redlock.acquireMany(['job:9'], { retryCount: 0 });
      expect(out && !isLock(out) && out.reason, `majority ${up.join(',')}`).toBe('done');
    }
    await redlock.quit();
  });
});

describe('node kinds', () => {
  const plain = useRedisNodes(2);
  const cluster = useRedisNodes(1, { cluster: true });

  it('works with a node that is a Redis Cluster, batching keys of different slots', async () => {
    const { redlock, done } = await clusterMajority(cluster, plain);
    // One plain node down: every grant and marker now needs the cluster node's answer.
    try {
      const keys = ['slot:a', 'slot:b', 'slot:c', 'slot:d'];
      const locks = (await redlock.acquireMany(keys)).filter(isLock);
      expect(locks).toHaveLength(4);
      expect(await redlock.completeMany(locks)).toEqual([true, true, true, true]);
      const again = await redlock.acquireMany(keys, { retryCount: 0 });
      expect(again.map((r) => !isLock(r) && r.reason)).toEqual(['done', 'done', 'done', 'done']);
    } finally {
      await done();
    }
  });

  it('works with a single node, and warns that it is not fault tolerant', async () => {
    const warn = vi.fn();
    const logger = { warn, debug: vi.fn(), info: vi.fn(), error: vi.fn() } as unknown as Logger;
    const redlock = new Redlock([plain.nodes[0]?.client() as Redis], { logger });
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('not fault tolerant'));
    const lock = await redlock.acquire('single');
    expect(lock.isHeld).toBe(true);
    await lock.release();
    await redlock.quit();
  });

  it('waits for a client still making its first connection instead of counting it as a "no"', async () => {
    // lazyConnect and no offline queue: the engine must not depend on the user's client options.
    const clients = plain.nodes.map(
      (node) => new Redis({ port: node.port, host: node.host, lazyConnect: true, enableOfflineQueue: false }),
    );
    const redlock = new Redlock(clients, { logger: silentLogger });
    expect(clients.every((c) => c.status === 'wait')).toBe(true);
    const lock = await redlock.acquire('cold-start', { retryCount: 0 });
    expect(lock.isHeld).toBe(true);
    await lock.release();
    await redlock.quit();
  });

  it('does not wait for a client whose node is down at start: it counts as a "no" at once', async () => {
    await plain.nodes[1]?.kill();
    const clients = [
      plain.nodes[0]?.client() as Redis,
      new Redis({ port: plain.nodes[1]?.port, lazyConnect: true }),
    ];
    clients[1]?.on('error', () => undefined);
    const redlock = new Redlock([...clients, cluster.nodes[0]?.client() as Redis], {
      logger: silentLogger,
      connectTimeoutMs: 5_000,
    });
    const started = performance.now();
    const lock = await redlock.acquire('down-at-start');
    expect(performance.now() - started).toBeLessThan(1_000);
    await lock.release();
    await redlock.quit();
    await plain.nodes[1]?.restart();
  });
});
