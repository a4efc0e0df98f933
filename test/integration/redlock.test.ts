import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLock, type Lock, LockCompletedError, LockContendedError, type Redlock } from '../../src/index.ts';
import { redlockOver, scriptCalls, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

describe('Redlock on 3 healthy nodes', () => {
  const redis = useRedisNodes(3);
  let redlock: Redlock;

  beforeAll(() => {
    redlock = redlockOver(redis).redlock;
  });
  afterAll(() => redlock.quit());

  it('grants a lock to one owner and refuses a second one as contended', async () => {
    const lock = await redlock.acquire('order:1');
    expect(lock.key).toBe('order:1');
    expect(lock.isHeld).toBe(true);
    expect(lock.validUntil).toBeGreaterThan(Date.now());
    await expect(redlock.acquire('order:1', { retryCount: 1 })).rejects.toBeInstanceOf(LockContendedError);
    await lock.release();
    const again = await redlock.acquire('order:1');
    expect(again.fencingToken).toBeGreaterThan(lock.fencingToken);
    await again.release();
  });

  it('answers per key in acquireMany, held keys refused with the holder remaining time', async () => {
    const held = await redlock.acquire('b:2', { ttlMs: 1_500 });
    const out = await redlock.acquireMany(['b:1', 'b:2', 'b:3'], { retryCount: 0 });
    expect(out.map((r) => (isLock(r) ? 'lock' : r.reason))).toEqual(['lock', 'held', 'lock']);
    const refusal = out[1];
    if (!refusal || isLock(refusal)) throw new Error('expected a refusal');
    expect(refusal.retryAfterMs).toBeGreaterThan(0);
    expect(refusal.retryAfterMs).toBeLessThanOrEqual(1_500);
    await redlock.releaseMany([held, ...out.filter(isLock)]);
  });

  it('grants only one of two requests for the same key in one batch', async () => {
    const out = await redlock.acquireMany(['dup', 'dup'], { retryCount: 0 });
    expect(out.filter(isLock)).toHaveLength(1);
    await redlock.releaseMany(out.filter(isLock));
  });

  it('answers done after complete(), in the same single round trip, and using() refuses it', async () => {
    const lock = await redlock.acquire('c:1');
    expect(await lock.complete({ ttlMs: 5_000 })).toBe(true);
    expect(lock.state).toBe('completed');
    // complete() returns at quorum: let the last node answer before counting from zero.
    await Promise.all(redlock.nodes.map((n) => n.client.ping()));
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    const [out] = await redlock.acquireMany(['c:1']);
    expect(out && !isLock(out) && out.reason).toBe('done');
    expect(await scriptCalls(redis)).toEqual([1, 1, 1]);
    await expect(redlock.using('c:1', async () => 'ran')).rejects.toBeInstanceOf(LockCompletedError);
  });

  it('runs using() under the lock and releases in finally, also when the function throws', async () => {
    const result = await redlock.using('u:1', async (lock) => {
      expect(lock.isHeld).toBe(true);
      return 42;
    });
    expect(result).toBe(42);
    await expect(
      redlock.using('u:1', async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const after = await redlock.acquire('u:1', { retryCount: 0 });
    await after.release();
  });

  it('costs one round trip per node for acquire, extend, release and complete of 10 keys', async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `batch:${i}`);
    // Warm the script cache so EVALSHA hits and no NOSCRIPT fallback is counted.
    const warm = (await redlock.acquireMany(['warm:1', 'warm:2'])).filter(isLock);
    await redlock.extendMany(warm);
    await redlock.completeMany(warm.slice(0, 1));
    await redlock.releaseMany(warm.slice(1));

    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    const locks = (await redlock.acquireMany(keys)).filter(isLock);
    expect(locks).toHaveLength(10);
    expect(await scriptCalls(redis)).toEqual([1, 1, 1]);
    // Fresh keys on healthy nodes: every node answered the same counter, so no fencing write-back.
    expect(new Set(locks.map((l) => l.fencingToken)).size).toBeGreaterThan(0);

    await redlock.extendMany(locks);
    expect(await scriptCalls(redis)).toEqual([2, 2, 2]);
    expect(locks.every((l) => l.isHeld)).toBe(true);

    await redlock.releaseMany(locks.slice(0, 5));
    expect(await scriptCalls(redis)).toEqual([3, 3, 3]);

    expect(await redlock.completeMany(locks.slice(5))).toEqual([true, true, true, true, true]);
    expect(await scriptCalls(redis)).toEqual([4, 4, 4]);
  });

  it('auto-extends every held lock in one batched call per node per tick', async () => {
    const locks = (
      await redlock.acquireMany(
        Array.from({ length: 20 }, (_, i) => `ext:${i}`),
        { ttlMs: 600 },
      )
    ).filter(isLock);
    expect(locks).toHaveLength(20);
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    await sleep(1_300); // about 6 ticks of ttl/3
    const calls = await scriptCalls(redis);
    expect(locks.every((l) => l.isHeld && !l.signal.aborted)).toBe(true);
    for (const c of calls) {
      expect(c).toBeGreaterThanOrEqual(4);
      expect(c).toBeLessThanOrEqual(9); // per-lock timers would cost ~20 x 6
    }
    await redlock.releaseMany(locks);
  });

  it('merges locks taken at different moments into one renewal batch, not one tick each', async () => {
    // 20 acquisitions spread over 200 ms: renewing only the locks already due would keep 20 ticks a period.
    const locks: Lock[] = [];
    for (let i = 0; i < 20; i++) {
      locks.push(await redlock.acquire(`spread:${i}`, { ttlMs: 600 }));
      await sleep(10);
    }
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    await sleep(1_300); // about 6 periods of ttl/3
    const calls = await scriptCalls(redis);
    expect(locks.every((l) => l.isHeld)).toBe(true);
    for (const c of calls) expect(c).toBeLessThanOrEqual(15);
    await redlock.releaseMany(locks);
  });

  it('keeps the lock only as long as its ttl when autoExtend is off, and signals the loss', async () => {
    const lock: Lock = await redlock.acquire('noext', { ttlMs: 400, autoExtend: false });
    const reason = await new Promise<unknown>((resolve) =>
      lock.signal.addEventListener('abort', () => resolve(lock.signal.reason)),
    );
    expect((reason as Error).name).toBe('LockLostError');
    expect(Date.now()).toBeGreaterThanOrEqual(lock.validUntil - 5);
    const next = await redlock.acquire('noext');
    await next.release();
  });
});
