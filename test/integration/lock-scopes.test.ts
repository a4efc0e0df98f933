import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { isLock, type Lock, Redlock } from '../../src/index.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

/** Every completion marker and lock key on every node, as `node: key`. */
async function keysOnNodes(clients: readonly Redis[], pattern: string): Promise<string[]> {
  const all = await Promise.all(clients.map((c) => c.keys(pattern)));
  return all.flatMap((keys, i) => keys.map((k) => `${i}: ${k}`)).sort();
}

describe('Redlock: mutual exclusion and deduplication are two scopes', () => {
  const redis = useRedisNodes(3);

  it("a completed idempotency key answers 'done'; another operation under the same lock key still runs", async () => {
    const { redlock } = redlockOver(redis);
    try {
      const charge = await redlock.acquire({ key: 'order-1', idempotencyKey: 'charge-1' });
      expect(await charge.complete()).toBe(true);
      // Same lock key, a different operation: granted (today's main answered 'done' and lost it).
      const ship = await redlock.acquireMany([{ key: 'order-1', idempotencyKey: 'ship-1' }]);
      expect(ship.map((r) => (isLock(r) ? 'granted' : r.reason))).toEqual(['granted']);
      // The same operation under another lock key: its marker answers 'done'.
      const again = await redlock.acquireMany([{ key: 'order-2', idempotencyKey: 'charge-1' }]);
      expect(again.map((r) => (isLock(r) ? 'granted' : r.reason))).toEqual(['done']);
      await redlock.releaseMany(ship.filter(isLock));
      // A plain key is its own idempotency key.
      const plain = await redlock.acquire('m-1');
      expect(plain.idempotencyKey).toBe('m-1');
      await plain.complete();
      expect((await redlock.acquireMany(['m-1']))[0]).toMatchObject({ reason: 'done' });
    } finally {
      await redlock.quit();
    }
  });

  it('rejects an empty idempotency key, naming it', async () => {
    const { redlock } = redlockOver(redis);
    try {
      await expect(redlock.acquireMany([{ key: 'k', idempotencyKey: '' }])).rejects.toThrow(
        /keys\[0\]\.idempotencyKey/,
      );
    } finally {
      await redlock.quit();
    }
  });
});

describe('Redlock: a late completion writes no marker unless it holds a valid quorum lock again', () => {
  const redis = useRedisNodes(3);

  it('a stale holder that completes after another worker was granted the key on a majority writes no marker anywhere', async () => {
    const clients = redis.clients();
    const a = new Redlock(clients, {
      ttlMs: 300,
      commandTimeoutMs: 50,
      autoExtend: false,
      logger: silentLogger,
    });
    // B cannot reach node 3 (nothing listens where its client points): it is granted by nodes 1-2.
    const unreachableClient = (): Redis => {
      const client = new Redis({
        port: 1,
        lazyConnect: true,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
      });
      client.on('error', () => undefined);
      return client;
    };
    const bClients = [...redis.clients().slice(0, 2), unreachableClient()];
    const b = new Redlock(bClients, {
      ttlMs: 2_000,
      commandTimeoutMs: 50,
      connectTimeoutMs: 50,
      retryCount: 0,
      logger: silentLogger,
    });
    // The redelivery's worker cannot reach node 2: its quorum must include node 3, where A wrote.
    const [c1, , c3] = redis.clients();
    const cClients = [c1 as Redis, unreachableClient(), c3 as Redis];
    const c = new Redlock(cClients, {
      ttlMs: 2_000,
      commandTimeoutMs: 50,
      connectTimeoutMs: 50,
      retryCount: 0,
      logger: silentLogger,
    });
    await eventually(async () =>
      [...clients, ...bClients.slice(0, 2), c1, c3].every((x) => x?.status === 'ready'),
    );
    try {
      const stale = await a.acquire('pay-1');
      // A stalls past its validity: the lock expires on every node.
      await eventually(async () => stale.signal.aborted, 2_000);
      await sleep(50);
      const [held] = await b.acquireMany(['pay-1']);
      expect(held && isLock(held)).toBe(true);
      expect((held as Lock).fencingToken).toBeGreaterThan(stale.fencingToken);

      // A's handler "succeeded" late: node 3 still has no lock and fence == A's token, nodes 1-2 are B's.
      const [completed] = await a.completeMany([stale], { claimExpired: true });
      expect(completed).toBe(false);
      // No marker anywhere (today's main wrote one on node 3).
      expect(await keysOnNodes(clients, 'srw:*:done')).toEqual([]);

      // B's handler fails: it releases. The redelivery must be granted and run, not answered 'done'.
      await b.releaseMany([held as Lock]);
      const [redelivered] = await c.acquireMany(['pay-1']);
      expect(redelivered && isLock(redelivered) ? 'granted' : redelivered).toBe('granted');
      await c.releaseMany([redelivered as Lock]);
    } finally {
      await Promise.all([a.quit(), b.quit(), c.quit()]);
    }
  });

  it('a late holder that no one overtook takes its lock back on a quorum and completes', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 300, commandTimeoutMs: 50, autoExtend: false });
    try {
      const lock = await redlock.acquire('late-ok');
      await eventually(async () => lock.signal.aborted, 2_000);
      expect(await redlock.completeMany([lock], { claimExpired: true })).toEqual([true]);
      // Decided on a quorum; the last node's marker comes a moment later.
      await eventually(async () => (await keysOnNodes(clients, 'srw:{late-ok}:done')).length === 3, 2_000);
      expect(await keysOnNodes(clients, 'srw:{late-ok}:lock')).toEqual([]);
    } finally {
      await redlock.quit();
    }
  });

  it('a late holder that reclaims only a minority rolls that minority back', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 300, commandTimeoutMs: 50, autoExtend: false });
    try {
      const lock = await redlock.acquire('late-minority');
      await eventually(async () => lock.signal.aborted, 2_000);
      await eventually(
        async () => (await keysOnNodes(clients, 'srw:{late-minority}:lock')).length === 0,
        2_000,
      );
      // Someone was granted on nodes 1-2 and finished (counters moved on, locks gone).
      await Promise.all(clients.slice(0, 2).map((c) => c.incr('srw:{late-minority}:fence')));
      expect(await redlock.completeMany([lock], { claimExpired: true })).toEqual([false]);
      // Node 3 said 'ours again', and was rolled back: nothing is left of the late lock.
      await eventually(
        async () => (await keysOnNodes(clients, 'srw:{late-minority}:lock')).length === 0,
        2_000,
      );
      expect(await keysOnNodes(clients, 'srw:{late-minority}:done')).toEqual([]);
    } finally {
      await redlock.quit();
    }
  });
});

describe('Redlock: big input and quit', () => {
  const redis = useRedisNodes(3);

  it('acquires, completes and releases 100,000 keys in one call without throwing, and the nodes stay usable', async () => {
    // Generous bounds: 100,000 locks take a loaded 2-core machine seconds, and this test is about size, not time.
    const { redlock } = redlockOver(redis, { ttlMs: 90_000, commandTimeoutMs: 20_000 });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const keys = Array.from({ length: 100_000 }, (_, i) => `big-${i}`);
      const results = await redlock.acquireMany(keys, { autoExtend: false });
      const locks = results.filter(isLock);
      expect(locks).toHaveLength(100_000);
      // Decided on a quorum; the last node's answer comes a moment later, and the count is exact.
      await eventually(async () => redlock.nodes.every((n) => n.backlog === 0), 5_000);
      const done = await redlock.completeMany(locks.slice(0, 50_000));
      expect(done.every(Boolean)).toBe(true);
      await redlock.releaseMany(locks.slice(50_000));
      await eventually(async () => redlock.nodes.every((n) => n.backlog === 0), 5_000);
      // The next small call still works (today's main: QuorumUnavailableError after the RangeError).
      const next = await redlock.acquire('after-big');
      expect(next.fencingToken).toBeGreaterThan(0);
      await next.release();
      await sleep(50);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await redlock.quit();
    }
  });

  it('quit() does not release the lock of a holder that may still run: it aborts its signal and lets it expire', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 1_000 });
    const [admin] = redis.clients();
    const other = redlockOver(redis, { ttlMs: 1_000, retryCount: 0 }).redlock;
    try {
      const lock = await redlock.acquire('running-handler');
      await redlock.quit();
      expect(lock.signal.aborted).toBe(true);
      // Still on the nodes: a second worker cannot take it while the abandoned handler may run.
      expect((await other.acquireMany(['running-handler']))[0]).toMatchObject({ reason: 'held' });
      expect(await admin?.pttl('srw:{running-handler}:lock')).toBeGreaterThan(0);
    } finally {
      admin?.disconnect();
      await other.quit();
    }
  });
});
