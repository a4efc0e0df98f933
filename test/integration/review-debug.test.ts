import type { Redis } from 'ioredis';
import { it } from 'vitest';
import { isLock } from '../../src/index.ts';
import { eventually, redlockOver, sleep } from '../../test/helpers/lock.ts';
import { useRedisNodes } from '../../test/helpers/redis-nodes.ts';
const redis = useRedisNodes(3);
it('debug', async () => {
  for (let round = 0; round < 5; round++) {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 3_000 });
    const admin = redis.nodes[2]?.client() as Redis;
    const key = `order:${round}`;
    const lock = await redlock.acquire({ key, idempotencyKey: 'op:1' });
    await redis.nodes[2]?.kill();
    console.log('complete', await lock.complete());
    await redis.nodes[2]?.restart();
    await eventually(async () => clients[2]?.status === 'ready' && admin.status === 'ready');
    console.log('before', await admin.keys('*'));
    redis.nodes[2]?.pause();
    const t0 = performance.now();
    const [dup] = await redlock.acquireMany([{ key, idempotencyKey: 'op:1' }], { retryCount: 0 });
    console.log('dup', dup && !isLock(dup) && dup.reason, performance.now() - t0, redlock.nodes[2]?.backlog);
    redis.nodes[2]?.resume();
    await sleep(50);
    console.log('after', await admin.keys('*'), await admin.pttl(`srw:{${key}}:lock`));
    await redlock.quit();
  }
});
