/**
 * Found in review: a rollback release that falls back from EVALSHA to EVAL (NOSCRIPT, after a node
 * restart or SCRIPT FLUSH: the script cache is never persisted, even with appendonly) goes out one round
 * trip later than it was issued. A retry of the same acquireMany used the same owner value, so its
 * acquire, written meanwhile, ran before that EVAL on the node, counted as a grant there, and was then
 * deleted by the delayed release: the lock was held on a minority while its holder believed it valid,
 * and a second Redlock was granted the same key. Each attempt now has its own owner value.
 */
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { isLock, Redlock } from '../../src/index.ts';
import type { FaultProxy } from '../helpers/fault-proxy.ts';
import { eventually, loadScripts, silentLogger, sleep } from '../helpers/lock.ts';
import { useProxiedNodes } from '../helpers/proxied-nodes.ts';

describe('a retry after a rollback that a NOSCRIPT fallback reorders', () => {
  const { redis, proxies: proxiesOf, viaProxies } = useProxiedNodes(3);
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function scenario(flushC: boolean) {
    const proxies = proxiesOf();
    const [pA, pB, pC] = proxies as [FaultProxy, FaultProxy, FaultProxy];
    for (const p of proxies) p.heal();
    for (const n of redis.nodes) await n.flushAll();
    const viaProxy = viaProxies({ retryStrategy: () => 50 });
    const w1 = new Redlock(viaProxy, {
      ttlMs: 5_000,
      commandTimeoutMs: 500,
      retryCount: 3,
      retryDelayMs: 200,
      retryJitterMs: 0,
      logger: silentLogger,
    });
    cleanups.push(() => w1.quit());
    await eventually(async () => viaProxy.every((c) => c.status === 'ready'));

    // Node C restarted (its data kept, its script cache empty); since then an acquire ran on it
    // (caching the acquire script), no release yet.
    const adminC = redis.nodes[2]?.client() as Redis;
    cleanups.push(() => void adminC.disconnect());
    // Control: every script cached on C. Otherwise: C restarted (script cache empty).
    if (flushC) await adminC.script('FLUSH');
    else await loadScripts([adminC]);
    const prime = await w1.acquire('prime');
    expect(prime.fencingToken).toBeGreaterThan(0);

    // Faults: A down (connections refused), B partitioned for the first attempt, C on a slow link
    // (200 ms each way: a 400 ms round trip, below the 500 ms command timeout).
    pA.refuse();
    await eventually(async () => viaProxy[0]?.status !== 'ready');
    pB.blackHole();
    pC.delay(200);

    const t0 = performance.now();
    // Attempt 1: A fails, B times out at 500 ms, C grants at ~400 ms -> 'quorum', rolled back on B and C.
    // B heals before attempt 2 (sent ~200 ms after the decision).
    const healB = setTimeout(() => pB.heal(), 600);
    const lock = await w1.acquire('K');
    clearTimeout(healB);
    const acquiredAfter = performance.now() - t0;
    expect(lock.isHeld).toBe(true);

    // The rollback's EVAL reaches C after attempt 2's grant there.
    await sleep(500);
    pC.pass();
    const cValue = await adminC.get('srw:{K}:lock');
    const adminB = redis.nodes[1]?.client() as Redis;
    cleanups.push(() => void adminB.disconnect());
    const bValue = await adminB.get('srw:{K}:lock');

    // A second Redlock (another worker) with direct connections; A is up for it.
    const direct = redis.clients();
    const w2 = new Redlock(direct, {
      ttlMs: 5_000,
      commandTimeoutMs: 500,
      retryCount: 0,
      logger: silentLogger,
    });
    cleanups.push(() => w2.quit());
    await eventually(async () => direct.every((c) => c.status === 'ready'));
    const [second] = await w2.acquireMany(['K'], { retryCount: 0 });

    const report = {
      acquiredAfterMs: Math.round(acquiredAfter),
      firstToken: lock.fencingToken,
      firstStillHeld: lock.isHeld,
      onB: bValue === lock.value ? 'first' : bValue,
      onC: cValue === lock.value ? 'first' : cValue,
      secondGranted: second !== undefined && isLock(second),
      secondToken: second !== undefined && isLock(second) ? second.fencingToken : undefined,
    };
    if (second !== undefined && isLock(second)) await second.release();
    await lock.release();
    return report;
  }

  it('control: C with its scripts cached (no NOSCRIPT): the second Redlock is refused', async () => {
    const report = await scenario(false);
    expect(report, JSON.stringify(report)).toMatchObject({ secondGranted: false, onC: 'first' });
  });

  it('never grants a key to two Redlocks at once (C restarted: its script cache empty)', async () => {
    const report = await scenario(true);
    // Before: both believed they held K at the same time.
    expect(report, JSON.stringify(report)).toMatchObject({ secondGranted: false });
  });
});
