/**
 * Review of issue 13: checks that passed (kept as evidence): deferred releases over many reconnects.
 */
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { isLock, Redlock } from '../../src/index.ts';
import { eventually, silentLogger } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

describe('Releases to a reconnecting node, over many reconnects', () => {
  const redis = useRedisNodes(3);
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('a release to a reconnecting node is sent once it is back, cycle after cycle, without piling up listeners', async () => {
    const clients = redis.clients({ retryStrategy: () => 150 });
    const redlock = new Redlock(clients, { ttlMs: 5_000, commandTimeoutMs: 100, logger: silentLogger });
    cleanups.push(() => redlock.quit());
    await eventually(async () => clients.every((c) => c.status === 'ready'));
    const third = clients[2] as Redis;
    const baseline = { ready: third.listenerCount('ready'), end: third.listenerCount('end') };
    const node2 = redis.nodes[2];
    if (!node2) throw new Error('no node 2');
    const admin = node2.client();
    cleanups.push(() => void admin.disconnect());
    for (let cycle = 0; cycle < 15; cycle++) {
      const [lock] = await redlock.acquireMany([`cycle-${cycle}`], { retryCount: 0 });
      if (!lock || !isLock(lock)) throw new Error(`cycle ${cycle}: not locked`);
      // Only the engine's connection to node 2 is closed (not the admin's).
      const id = await third.client('ID');
      await admin.client('KILL', 'ID', String(id));
      await eventually(async () => third.status === 'reconnecting', 2_000);
      await lock.release();
      await eventually(async () => third.status === 'ready', 3_000);
      // The deferred release reached node 2: its copy of the lock is gone.
      await eventually(async () => (await admin.exists(`srw:{cycle-${cycle}}:lock`)) === 0, 2_000);
    }
    expect({ ready: third.listenerCount('ready'), end: third.listenerCount('end') }).toEqual(baseline);
  });
});
