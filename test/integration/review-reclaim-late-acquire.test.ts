/**
 * Found in review: RECLAIM_SCRIPT took back a lock wherever the lock key held our owner value, without
 * checking the fencing counter. Our own acquire, delivered late to a node (a black-holed link that
 * delivers on heal, a resend), writes our value there after someone else was granted the key and
 * released it. A late holder then counted that node toward its quorum and wrote its completion marker,
 * although another holder had been granted the key since. Reclaim now also needs the counter at our
 * token on every node it counts ("no grant here since"), as it already did where the key was gone.
 */
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { isLock, Redlock } from '../../src/index.ts';
import type { FaultProxy } from '../helpers/fault-proxy.ts';
import { eventually, loadScripts, silentLogger } from '../helpers/lock.ts';
import { useProxiedNodes } from '../helpers/proxied-nodes.ts';

describe('reclaim after our own acquire was delivered late', () => {
  const { redis, proxies: proxiesOf, viaProxies } = useProxiedNodes(3);

  it('does not count a node our late acquire wrote to after another holder was granted the key', async () => {
    const proxies = proxiesOf();
    const [, pB, pC] = proxies as [FaultProxy, FaultProxy, FaultProxy];
    const viaProxy = viaProxies({ maxRetriesPerRequest: null });
    const direct = redis.clients();
    const admin = redis.nodes[2]?.client() as Redis;
    const options = { ttlMs: 2_000, commandTimeoutMs: 150, retryCount: 0, logger: silentLogger };
    const p = new Redlock(viaProxy, options);
    const q = new Redlock(direct, options);
    try {
      await loadScripts(direct);
      await eventually(async () => [...viaProxy, ...direct].every((c) => c.status === 'ready'));

      // P is granted K by A and B; its acquire to C is held in a black hole (delivered on heal).
      pC.blackHole();
      const lock = await p.acquire('K');
      // Then B is cut off too: extensions reach only A, so the lock lapses ('expired'), while A's copy
      // is renewed by every extension tried and outlives the lock.
      pB.blackHole();
      await eventually(async () => lock.state === 'lost', 4_000);
      expect(lock.expiredUnclaimed).toBe(true);

      // Q is granted K on B and C once B's copy has expired (A still has P's copy), and releases it.
      const granted = await eventually(async () => {
        const [result] = await q.acquireMany(['K']);
        return result && isLock(result) ? result : undefined;
      }, 3_000);
      expect(granted.fencingToken).toBeGreaterThan(lock.fencingToken);
      await granted.release();

      // P's acquire now reaches C and writes P's value there.
      pC.heal();
      await eventually(async () => (await admin.get('srw:{K}:lock')) === lock.value);
      expect(await direct[0]?.get('srw:{K}:lock')).toBe(lock.value);

      // Before: A and C both answered "ours", a quorum, and P wrote its marker after Q's grant.
      const [completed] = await p.completeMany([lock], { claimExpired: true });
      expect(completed).toBe(false);
      const [again] = await q.acquireMany(['K']);
      expect(again !== undefined && !isLock(again) && again.reason).not.toBe('done');
      if (again && isLock(again)) await again.release();
    } finally {
      for (const proxy of proxies) proxy.heal();
      await Promise.all([p.quit(), q.quit()]);
      admin.disconnect();
    }
  });
});
