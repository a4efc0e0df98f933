/**
 * What one lock costs on each side, measured directly rather than through a whole worker run:
 *
 * - redis-server: `INFO commandstats` usec per EVALSHA of each script (acquire, complete) on batches of
 *   BATCH fresh keys, and `INFO cpu` per key (script time plus the round trip's own parsing and
 *   syscalls), next to what redis-semaphore's per-message acquire + release costs on the same node.
 * - this process: CPU µs (process.cpuUsage) per key of acquireMany(BATCH) + completeMany over NODES
 *   nodes, this tree's engine against a baseline tree's (`--baseline=DIR`, e.g. a worktree of HEAD),
 *   interleaved round by round so load on a shared machine hits both alike.
 *
 *   node bench/lua-cost.ts                          # this tree only
 *   node bench/lua-cost.ts --baseline=/tmp/wt-perf  # side by side with DIR/src (a comma-separated list: several)
 *   node bench/lua-cost.ts --rounds=7 --batches=600
 */
import type { Redis } from 'ioredis';
import { RedlockMutex } from 'redis-semaphore';
import { createLogger, isLock, type Lock, Redlock } from '../src/index.ts';
import { type RedisNodes, startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { median, redisCpuUs } from './rows.ts';
import { flagValue, fmt, fmtRatio, markdownTable, progress, rotate, runMain } from './shared.ts';

const BATCH = 10;
const NODES = 3;

const flag = (name: string): string | undefined => flagValue(name);

const ROUNDS = Number(flag('rounds') ?? 5);
/** Batches of BATCH keys per measurement. */
const BATCHES = Number(flag('batches') ?? 400);
const BASELINE = flag('baseline');

interface Engine {
  readonly name: string;
  readonly redlock: Redlock;
  readonly isLock: (r: unknown) => boolean;
}

/** EVALSHA calls and usec on one node, and the usec of the commands the scripts ran (inner). */
async function evalStats(admin: Redis): Promise<{ calls: number; usec: number; innerUsec: number }> {
  const info = await admin.info('commandstats');
  let calls = 0;
  let usec = 0;
  let innerUsec = 0;
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    if (m[1] === 'evalsha') {
      calls = Number(m[2]);
      usec = Number(m[3]);
    } else if (/^(set|get|mget|exists|del|incr|pexpire|pttl)$/.test(m[1] ?? '')) innerUsec += Number(m[3]);
  }
  return { calls, usec, innerUsec };
}

let seq = 0;

/** One measurement: BATCHES acquireMany + completeMany of fresh keys, one batch at a time. */
async function measure(
  engine: Engine,
  redis: RedisNodes,
  admins: Redis[],
): Promise<{
  nodeUsPerKey: number;
  redisUsPerKey: number;
  acquireUsec: number;
  completeUsec: number;
  luaShare: number;
}> {
  await Promise.all(redis.nodes.map((n) => n.flushAll()));
  await Promise.all(redis.nodes.map((n) => n.resetStats()));
  const admin = admins[0] as Redis;
  let acquireUsec = 0;
  let acquireCalls = 0;
  let completeUsec = 0;
  let completeCalls = 0;
  let innerUsec = 0;
  const redisBefore = await redisCpuUs(admins);
  let nodeUs = 0;
  for (let b = 0; b < BATCHES; b++) {
    const keys = Array.from({ length: BATCH }, () => `m-${++seq}-5f0c3c1e-8b7a-4c1d-9d2e-1a2b3c4d5e6f`);
    const s0 = b % 50 === 0 ? await evalStats(admin) : undefined;
    const c0 = process.cpuUsage();
    const results = await engine.redlock.acquireMany(keys, { retryCount: 0, autoExtend: false });
    const c1 = process.cpuUsage(c0);
    const locks = results.filter((r) => engine.isLock(r)) as Lock[];
    if (locks.length !== BATCH) throw new Error(`${engine.name}: ${locks.length} of ${BATCH} locked`);
    const s1 = s0 ? await evalStats(admin) : undefined;
    const c2 = process.cpuUsage();
    await engine.redlock.completeMany(locks);
    const c3 = process.cpuUsage(c2);
    nodeUs += c1.user + c1.system + c3.user + c3.system;
    if (s0 && s1) {
      const s2 = await evalStats(admin);
      acquireUsec += s1.usec - s0.usec;
      acquireCalls += s1.calls - s0.calls;
      completeUsec += s2.usec - s1.usec;
      completeCalls += s2.calls - s1.calls;
      innerUsec += s2.innerUsec - s0.innerUsec;
    }
  }
  const redisUs = (await redisCpuUs(admins)) - redisBefore;
  const keys = BATCHES * BATCH;
  return {
    nodeUsPerKey: nodeUs / keys,
    redisUsPerKey: redisUs / keys,
    acquireUsec: acquireUsec / Math.max(1, acquireCalls),
    completeUsec: completeUsec / Math.max(1, completeCalls),
    /** Of both scripts' time, the share spent outside the commands they ran (Lua, argument tables). */
    luaShare: 1 - innerUsec / Math.max(1, acquireUsec + completeUsec),
  };
}

/** redis-semaphore's acquire + release of one key per message, for scale (redis side only). */
async function measureSemaphore(clients: Redis[], redis: RedisNodes, admins: Redis[]): Promise<number> {
  await Promise.all(redis.nodes.map((n) => n.flushAll()));
  const before = await redisCpuUs(admins);
  for (let b = 0; b < BATCHES; b++) {
    await Promise.all(
      Array.from({ length: BATCH }, async () => {
        const mutex = new RedlockMutex(clients, `s-${++seq}`, {
          lockTimeout: 30_000,
          acquireAttemptsLimit: 1,
        });
        await mutex.acquire();
        await mutex.release();
      }),
    );
  }
  return ((await redisCpuUs(admins)) - before) / (BATCHES * BATCH);
}

async function main(): Promise<void> {
  const redis = await startRedisNodes(NODES);
  const silent = createLogger({ silent: true });
  const engines: Engine[] = [];
  const admins = redis.clients();
  const semaphoreClients = redis.clients();
  try {
    const ours = redis.clients();
    await Promise.all([...admins, ...ours, ...semaphoreClients].map((c) => c.ping()));
    engines.push({
      name: 'this tree',
      redlock: new Redlock(ours, { logger: silent }),
      isLock: (r) => isLock(r as never),
    });
    for (const dir of BASELINE?.split(',') ?? []) {
      const base = (await import(`${dir}/src/index.ts`)) as typeof import('../src/index.ts');
      const clients = redis.clients();
      await Promise.all(clients.map((c) => c.ping()));
      engines.push({
        name: dir,
        redlock: new base.Redlock(clients, { logger: base.createLogger({ silent: true }) }),
        isLock: (r) => base.isLock(r as never),
      });
    }
    // Warm-up: JIT and the script caches.
    for (const engine of engines) await measure(engine, redis, admins);
    const results = new Map<string, Awaited<ReturnType<typeof measure>>[]>();
    const semaphore: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = rotate(engines, round);
      for (const engine of order) {
        const r = await measure(engine, redis, admins);
        results.set(engine.name, [...(results.get(engine.name) ?? []), r]);
        progress(
          `round ${round + 1}/${ROUNDS} ${engine.name}: node ${fmt(r.nodeUsPerKey, 1)} µs/key, redis ${fmt(r.redisUsPerKey, 1)} µs/key, ` +
            `acquire ${fmt(r.acquireUsec, 1)} usec/call, complete ${fmt(r.completeUsec, 1)} usec/call`,
        );
      }
      semaphore.push(await measureSemaphore(semaphoreClients, redis, admins));
    }
    const med = (name: string, pick: (r: Awaited<ReturnType<typeof measure>>) => number): number =>
      median((results.get(name) ?? []).map(pick));
    const first = engines[0]?.name ?? '';
    const rows = engines.map((e) => [
      e.name,
      fmt(
        med(e.name, (r) => r.nodeUsPerKey),
        1,
      ),
      fmtRatio(med(e.name, (r) => r.nodeUsPerKey) / med(first, (r) => r.nodeUsPerKey)),
      fmt(
        med(e.name, (r) => r.redisUsPerKey),
        1,
      ),
      fmt(
        med(e.name, (r) => r.acquireUsec),
        1,
      ),
      fmt(
        med(e.name, (r) => r.completeUsec),
        1,
      ),
      `${fmt(med(e.name, (r) => r.luaShare) * 100)}%`,
      fmt(Math.min(...(results.get(e.name) ?? []).map((r) => r.nodeUsPerKey)), 1),
      fmt(Math.min(...(results.get(e.name) ?? []).map((r) => r.redisUsPerKey)), 1),
    ]);
    rows.push([
      'redis-semaphore RedlockMutex acquire + release per key',
      '–',
      '–',
      fmt(median(semaphore), 1),
      '–',
      '–',
      '–',
      '–',
      fmt(Math.min(...semaphore), 1),
    ]);
    const load = (await import('node:os'))
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' / ');
    console.log(
      markdownTable(
        [
          `engine (${NODES} nodes, batches of ${BATCH}, medians of ${ROUNDS} rounds × ${BATCHES} batches)`,
          'node CPU µs/key (acquire + complete)',
          'vs this tree',
          `redis CPU µs/key (${NODES} servers, INFO cpu)`,
          'acquire EVALSHA usec/call (1 node)',
          'complete EVALSHA usec/call (1 node)',
          'script time outside its commands',
          'node µs/key, best round',
          'redis µs/key, best round',
        ],
        rows,
        ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
    );
    console.log(`\nLoad average at end (1 / 5 / 15 min): ${load}`);
  } finally {
    for (const e of engines) await e.redlock.quit();
    await redis.stop();
  }
}

await runMain(main);
