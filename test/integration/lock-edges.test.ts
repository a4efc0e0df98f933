import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { isLock, type Lock } from '../../src/index.ts';
import { clusterMajority, eventually, redlockOver, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

// Edge cases of the two-key lock engine, each a problem found in an adversarial review (issue 9).

describe('Redlock edge cases: acquire answered "done" early', () => {
  const redis = useRedisNodes(3);

  /**
   * ioredis resends, on reconnect, the commands a killed node never answered (the first acquire, which
   * was decided without it): it would come back holding that lock. Empty it after those resends.
   */
  async function emptyAfterResends(node: number): Promise<void> {
    await sleep(100);
    await redis.nodes[node]?.flushAll();
  }

  it('rolls back the grants of nodes that answered after a marker decided "done"', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 3_000 });
    const admin = redis.nodes[2]?.client() as Redis;
    try {
      // op:A1 is completed while node 2 is down; node 2 comes back empty: its marker is on 0 and 1 only.
      const lock = await redlock.acquire({ key: 'order:A', idempotencyKey: 'op:A1' });
      await redis.nodes[2]?.kill();
      expect(await lock.complete()).toBe(true);
      await redis.nodes[2]?.restart();
      await eventually(async () => clients[2]?.status === 'ready' && admin.status === 'ready');
      await emptyAfterResends(2);

      // A duplicate of op:A1: decided 'done' by node 0 or 1; node 2 answers later (paused) and grants.
      redis.nodes[2]?.pause();
      await sleep(50); // SIGSTOP has landed: node 2 answers after nodes 0 and 1
      const [dup] = await redlock.acquireMany([{ key: 'order:A', idempotencyKey: 'op:A1' }], {
        retryCount: 0,
      });
      expect(dup && !isLock(dup) && dup.reason).toBe('done');
      redis.nodes[2]?.resume();

      // Nobody holds order:A: the late grant on node 2 must be undone like any partial grant (a
      // rollback queued behind it on the same connection). Give node 2 time to run what it was sent.
      await sleep(200);
      const pttl = await admin.pttl('srw:{order:A}:lock');
      expect(pttl, `order:A still locked on node 2 for ${pttl} ms by a refused attempt`).toBe(-2);
    } finally {
      await redlock.quit();
    }
  });

  it('so another operation on the same lock key is not refused as "held" by no one', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 3_000 });
    try {
      const lock = await redlock.acquire({ key: 'order:B', idempotencyKey: 'op:B1' });
      await redis.nodes[2]?.kill();
      expect(await lock.complete()).toBe(true);
      await redis.nodes[2]?.restart();
      await eventually(async () => clients[2]?.status === 'ready');
      await emptyAfterResends(2);

      redis.nodes[2]?.pause();
      await sleep(50); // SIGSTOP has landed: node 2 answers after nodes 0 and 1
      const [dup] = await redlock.acquireMany([{ key: 'order:B', idempotencyKey: 'op:B1' }], {
        retryCount: 0,
      });
      expect(dup && !isLock(dup) && dup.reason).toBe('done');
      redis.nodes[2]?.resume();
      await sleep(100);

      // The next operation of order B, with one other node down: nodes 1 and 2 are a quorum and free.
      await redis.nodes[0]?.kill();
      const [next] = await redlock.acquireMany([{ key: 'order:B', idempotencyKey: 'op:B2' }], {
        retryCount: 0,
      });
      expect(next && (isLock(next) ? 'granted' : `${next.reason}: ${next.detail}`)).toBe('granted');
    } finally {
      await redis.nodes[0]?.restart();
      await redlock.quit();
    }
  });
});

describe('Redlock edge cases: a Cluster node and keys of two slots', () => {
  const plain = useRedisNodes(2);
  const cluster = useRedisNodes(1, { cluster: true });

  it('refuses only the cross-slot target, not every lock of the batch on that node', async () => {
    const { redlock, done } = await clusterMajority(cluster, plain);
    try {
      // 'same' has one slot for its lock and marker; the other (lock key != idempotency key) has two.
      const results = await redlock.acquireMany(['same', { key: 'order:C', idempotencyKey: 'op:C1' }], {
        retryCount: 0,
      });
      const [same] = results;
      expect(same && (isLock(same) ? 'granted' : `${same.reason}: ${same.detail}`)).toBe('granted');
    } finally {
      await done();
    }
  });
});

describe('Redlock edge cases: quit() and lock states', () => {
  const redis = useRedisNodes(3);

  it('a lock granted while quit() runs still has its signal aborted', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 1_000 });
    await (await redlock.acquire('quit:warm')).release();
    // The acquire is on the wire when quit() starts; its grant arrives after the extender stopped.
    const acquiring = redlock.acquire('quit:race', { retryCount: 0 });
    const quitting = redlock.quit();
    const lock = await acquiring;
    await quitting;
    // Neither tracked (so never signalled at its deadline) nor aborted by quit().
    const aborted = await eventually(async () => lock.signal.aborted, 2_000).catch(() => false);
    expect({ aborted, state: lock.state, isHeld: lock.isHeld }).toEqual({
      aborted: true,
      state: 'lost',
      isHeld: false,
    });
  });

  it('a second complete() does not turn a completed lock into a released one', async () => {
    const { redlock } = redlockOver(redis);
    try {
      const lock = await redlock.acquire('twice');
      expect(await lock.complete()).toBe(true);
      await lock.complete();
      expect(lock.state).toBe('completed');
    } finally {
      await redlock.quit();
    }
  });

  it('a late lock that was reclaimed and completed reports state "completed"', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 400, autoExtend: false });
    try {
      const lock = await redlock.acquire('late:state');
      // An event-loop stall past the TTL: the extender's tick never ran.
      const until = performance.now() + 500;
      while (performance.now() < until) {
        /* stalled */
      }
      const [ok] = await redlock.completeMany([lock], { claimExpired: true });
      expect(ok).toBe(true);
      const [again] = await redlock.acquireMany(['late:state'], { retryCount: 0 });
      expect(again && !isLock(again) && again.reason).toBe('done');
      expect(lock.state).toBe('completed');
    } finally {
      await redlock.quit();
    }
  });

  it('a completion TTL Redis cannot take is refused before anything is written', async () => {
    const { redlock } = redlockOver(redis);
    const admin = redis.nodes[0]?.client() as Redis;
    try {
      const lock: Lock = await redlock.acquire('ttl:huge');
      const outcome = await lock.complete({ ttlMs: 1e19 }).then(
        async (ok) =>
          `resolved ${ok}; on node 0 the lock key is ${String(await admin.get('srw:{ttl:huge}:lock'))}` +
          ` and the marker ${String(await admin.get('srw:{ttl:huge}:done'))}`,
        (error: Error) => error.name,
      );
      expect(outcome).toBe('ConfigError');
    } finally {
      await redlock.quit();
    }
  });

  it('completeMany with claimExpired takes any number of late locks without throwing', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 6_000, commandTimeoutMs: 1_500, autoExtend: false });
    try {
      const keys = Array.from({ length: 150_000 }, (_, i) => `many:${i}`);
      const locks: Lock[] = [];
      for (let i = 0; i < keys.length; i += 10_000) {
        locks.push(
          ...(await redlock.acquireMany(keys.slice(i, i + 10_000), { retryCount: 0 })).filter(isLock),
        );
      }
      expect(locks).toHaveLength(keys.length);
      for (const lock of locks) lock.markLost('expired', 'test: validity ran out');
      const outcome = await redlock.completeMany(locks, { claimExpired: true }).then(
        (done) => `${done.filter(Boolean).length} completed`,
        (error: Error) => `threw ${error.name}: ${error.message}`,
      );
      // How many complete in time is the nodes' business; completeMany must answer, not throw.
      expect(outcome).toMatch(/^\d+ completed$/);
    } finally {
      await redlock.quit();
    }
  }, 30_000);
});

describe('Redlock edge cases: a reconnect that resends', () => {
  const redis = useRedisNodes(3);

  it('a release to a reconnecting node goes out once it is back, behind the acquire ioredis resends', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 10_000, commandTimeoutMs: 200 });
    const admin = () => redis.nodes[2]?.client() as Redis;
    try {
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      // Node 2 stops answering, then dies with our acquire unanswered: ioredis keeps it to resend.
      redis.nodes[2]?.pause();
      await sleep(50);
      const lock = await redlock.acquire('resent');
      await redis.nodes[2]?.kill();
      await eventually(async () => clients[2]?.status !== 'ready');
      // Released while node 2 is away: the release waits for it to come back.
      await lock.release();
      await redis.nodes[2]?.restart();
      await eventually(async () => clients[2]?.status === 'ready', 5_000);
      // The resent acquire granted there, and the release behind it undid it, long before the 10 s TTL.
      const probe = admin();
      try {
        await eventually(async () => (await probe.pttl('srw:{resent}:lock')) === -2, 2_000);
      } finally {
        probe.disconnect();
      }
    } finally {
      await redlock.quit();
    }
  });
});
