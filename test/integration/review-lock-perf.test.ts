import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../chaos/schedule.ts';
import { isLock, type Lock, LockLostError, Redlock } from '../../src/index.ts';
import { ACQUIRE_SCRIPT } from '../../src/lock/acquire.ts';
import { EXTEND_SCRIPT } from '../../src/lock/extend.ts';
import { RELEASE_SCRIPT } from '../../src/lock/release.ts';
import { defineScript } from '../../src/lock/script.ts';
import {
  clusterMajority,
  eventually,
  redlockOver,
  scriptCalls,
  silentLogger,
  sleep,
  whenAborted,
} from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

// Adversarial review of the engine's performance change (9afcda5): multi-key EXISTS / MGET / DEL in
// the scripts, a lazy AbortController, an extender timer left armed, a one-chunk fast path in send.

/** The scripts as they were before 9afcda5: one GET / EXISTS / DEL per lock. */
const OLD_ACQUIRE = `
local ttl, counterTtl, first = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 1, #KEYS / 3 do
  local lock, fence, marker, value = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[3 + i]
  local granted = false
  if redis.call('EXISTS', marker) == 1 then
    out[i] = 0
  elseif redis.call('SET', lock, value, 'NX', 'PX', ttl) then
    granted = true
  elseif redis.call('GET', lock) == value then
    redis.call('PEXPIRE', lock, ttl)
    granted = true
  else
    out[i] = -(math.max(redis.call('PTTL', lock), 0) + 1)
  end
  if granted then
    local seeded
    if counterTtl > 0 then
      seeded = redis.call('SET', fence, first, 'NX', 'PX', counterTtl)
    else
      seeded = redis.call('SET', fence, first, 'NX')
    end
    out[i] = seeded and tonumber(first) or redis.call('INCR', fence)
  end
end
return out`;
const OLD_RELEASE = `
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out`;
const OLD_EXTEND = `
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2 * i - 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out`;

async function evalOrError(client: Redis, lua: string, keys: string[], args: (string | number)[]) {
  try {
    return { reply: await client.eval(lua, keys.length, ...keys, ...args) };
  } catch (error) {
    return { error: (error as Error).message.replace(/script: \w+/, 'script').replace(/f_\w+/, 'f') };
  }
}

/** Every key on a node, with its type, string value and whether it has a TTL. */
async function stateOf(client: Redis): Promise<Record<string, string>> {
  const keys = (await client.keys('*')).sort();
  const out: Record<string, string> = {};
  for (const key of keys) {
    const type = await client.type(key);
    const pttl = await client.pttl(key);
    const value = type === 'string' ? await client.get(key) : type;
    out[key] = `${type}:${value}:${pttl > 0 ? 'ttl' : pttl}`;
  }
  return out;
}

/** Negative acquire answers carry a PTTL that may differ by a millisecond between two nodes. */
function normalise(reply: unknown): unknown {
  if (!Array.isArray(reply)) return reply;
  return reply.map((v) => (typeof v === 'number' && v < 0 ? (v < -1 ? 'held-ttl' : 'held-nottl') : v));
}

describe('scripts: the new multi-key scripts answer exactly as the per-key ones did', () => {
  const redis = useRedisNodes(2);

  it('differential fuzz: random states and random batches (duplicates, mixed done / not done, partial markers)', async () => {
    const oldNode = redis.nodes[0]?.client() as Redis;
    const newNode = redis.nodes[1]?.client() as Redis;
    const rand = mulberry32(0x9afcda5); // deterministic, so a failing trial can be replayed
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const prefixes = ['srw:', '', 'a:{b}:', '{x}'];
    const names = ['k1', 'k2', 'k3', 'k4'];
    const values = ['v0', 'v1', 'v2'];
    for (let trial = 0; trial < 400; trial++) {
      await Promise.all([oldNode.flushall(), newNode.flushall()]);
      const prefix = pick(prefixes);
      const lockOf = (k: string) => `${prefix}{${k}}:lock`;
      const fenceOf = (k: string) => `${prefix}{${k}}:fence`;
      const markerOf = (k: string) => `${prefix}{${k}}:done`;
      // Hashes at lock keys only for acquire (see the next test for release and extend).
      const script = pick(['acquire', 'release', 'extend'] as const);
      const setup: [string, ...(string | number)[]][] = [];
      for (const k of names) {
        const lockState = pick([
          'none',
          'v0',
          'v1',
          'other',
          'nottl',
          ...(script === 'acquire' ? ['hash'] : []),
        ]);
        if (lockState === 'hash') setup.push(['hset', lockOf(k), 'f', 'x']);
        else if (lockState === 'nottl') setup.push(['set', lockOf(k), 'v2']);
        else if (lockState !== 'none') setup.push(['set', lockOf(k), lockState, 'PX', 60_000]);
        if (rand() < 0.5) setup.push(['set', fenceOf(k), String(1000 + Math.floor(rand() * 100))]);
        const m = rand();
        if (m < 0.3) setup.push(['set', markerOf(k), '1', 'PX', 60_000]);
        else if (m < 0.35) setup.push(['hset', markerOf(k), 'f', 'x']);
      }
      for (const node of [oldNode, newNode])
        for (const [cmd, ...args] of setup) await node.call(cmd, ...args);
      const n = 1 + Math.floor(rand() * 6);
      const batch = Array.from({ length: n }, () => ({
        key: pick(names),
        idem: pick(names),
        value: pick(values),
      }));
      let keys: string[];
      let args: (string | number)[];
      let olds: string;
      let news: string;
      if (script === 'acquire') {
        keys = batch.flatMap((b) => [lockOf(b.key), fenceOf(b.key), markerOf(b.idem)]);
        args = [30_000, pick([0, 90_000]), '5000', ...batch.map((b) => b.value)];
        olds = OLD_ACQUIRE;
        news = ACQUIRE_SCRIPT.lua;
      } else if (script === 'release') {
        keys = batch.map((b) => lockOf(b.key));
        args = batch.map((b) => b.value);
        olds = OLD_RELEASE;
        news = RELEASE_SCRIPT.lua;
      } else {
        keys = batch.map((b) => lockOf(b.key));
        args = batch.flatMap((b) => [b.value, 45_000]);
        olds = OLD_EXTEND;
        news = EXTEND_SCRIPT.lua;
      }
      const [o, w] = await Promise.all([
        evalOrError(oldNode, olds, keys, args),
        evalOrError(newNode, news, keys, args),
      ]);
      const label = JSON.stringify({ trial, script, prefix, setup, batch });
      expect('error' in w, `${label}\nold ${JSON.stringify(o)}\nnew ${JSON.stringify(w)}`).toBe('error' in o);
      if ('reply' in o && 'reply' in w) expect(normalise(w.reply), label).toEqual(normalise(o.reply));
      expect(await stateOf(newNode), label).toEqual(await stateOf(oldNode));
    }
  });

  it('a hash at a lock key in a release / extend batch: that lock answers 0 alone, the others are served', async () => {
    const node = redis.nodes[0]?.client() as Redis;
    await node.flushall();
    await node.set('srw:{a}:lock', 'va', 'PX', 60_000);
    await node.hset('srw:{h}:lock', 'f', 'x');
    await node.set('srw:{b}:lock', 'vb', 'PX', 60_000);
    const keys = ['srw:{a}:lock', 'srw:{h}:lock', 'srw:{b}:lock'];
    expect(await node.eval(EXTEND_SCRIPT.lua, 3, ...keys, 'va', 90_000, 'vh', 90_000, 'vb', 90_000)).toEqual([
      1, 0, 1,
    ]);
    expect(await node.eval(RELEASE_SCRIPT.lua, 3, ...keys, 'va', 'vh', 'vb')).toEqual([1, 0, 1]);
    expect(await node.type('srw:{h}:lock')).toBe('hash');
    expect(await node.exists('srw:{a}:lock', 'srw:{b}:lock')).toBe(0);
  });
});

describe('the engine over 3 nodes: batches around the 500-lock chunk', () => {
  const redis = useRedisNodes(3);

  for (const size of [499, 500, 501, 1001]) {
    it(`${size} keys, some completed (first, last, at the chunk edges): 'done' for exactly those, granted, extended and released otherwise`, async () => {
      const { redlock, clients } = redlockOver(redis, { ttlMs: 7_000, commandTimeoutMs: 2_000 });
      try {
        const keys = Array.from({ length: size }, (_, i) => `chunk${size}:${i}`);
        const doneAt = [0, 498, 499, 500, size - 1].filter((i) => i < size);
        const first = (await redlock.acquireMany(doneAt.map((i) => keys[i] as string))).filter(isLock);
        expect(first).toHaveLength(new Set(doneAt).size);
        expect(await redlock.completeMany(first)).toEqual(first.map(() => true));
        await Promise.all(redis.nodes.map((n) => n.resetStats()));
        const results = await redlock.acquireMany(keys, { retryCount: 0 });
        expect(await scriptCalls(redis)).toEqual(redis.nodes.map(() => Math.ceil(size / 500)));
        const expected = keys.map((_, i) => (doneAt.includes(i) ? 'done' : 'granted'));
        expect(results.map((r) => (isLock(r) ? 'granted' : r.reason))).toEqual(expected);
        const locks = results.filter(isLock);
        const tokens = new Set(locks.map((l) => l.fencingToken));
        expect(tokens.size).toBeGreaterThan(0);
        await redlock.extendMany(locks);
        expect(locks.every((l) => l.isHeld)).toBe(true);
        const pttls = await Promise.all(clients.map((c) => c.pttl(`srw:{${keys[1]}}:lock`)));
        expect(pttls.every((p) => p > 6_000)).toBe(true);
        await redlock.releaseMany(locks);
        await eventually(async () =>
          (await Promise.all(clients.map((c) => c.keys('srw:{chunk*}:lock')))).every((k) => k.length === 0),
        );
      } finally {
        await redlock.quit();
      }
    });
  }

  it('the same key twice in one acquireMany, and a lock released twice in one releaseMany', async () => {
    const { redlock, clients } = redlockOver(redis);
    try {
      const [a, b] = await redlock.acquireMany(['dup', 'dup'], { retryCount: 0 });
      expect(a && isLock(a)).toBe(true);
      expect(b && !isLock(b) && b.reason).toBe('held');
      const lock = a as Lock;
      await redlock.extendMany([lock, lock]);
      expect(lock.isHeld).toBe(true);
      await redlock.releaseMany([lock, lock]);
      await eventually(async () =>
        (await Promise.all(clients.map((c) => c.exists('srw:{dup}:lock')))).every((n) => n === 0),
      );
    } finally {
      await redlock.quit();
    }
  });

  it('NOSCRIPT after SCRIPT FLUSH on every node: multi-lock acquire, extend, release fall back to EVAL', async () => {
    const { redlock, clients } = redlockOver(redis);
    try {
      await Promise.all(clients.map((c) => c.script('FLUSH')));
      const locks = (await redlock.acquireMany(['ns:a', 'ns:b', 'ns:c'])).filter(isLock);
      expect(locks).toHaveLength(3);
      await Promise.all(clients.map((c) => c.script('FLUSH')));
      await redlock.extendMany(locks);
      expect(locks.every((l) => l.isHeld)).toBe(true);
      await Promise.all(clients.map((c) => c.script('FLUSH')));
      await redlock.releaseMany(locks);
      await eventually(async () =>
        (await Promise.all(clients.map((c) => c.exists('srw:{ns:a}:lock', 'srw:{ns:c}:lock')))).every(
          (n) => n === 0,
        ),
      );
    } finally {
      await redlock.quit();
    }
  });

  it('a reply count mismatch on the fast path is a "no" for that node, not a wrong answer', async () => {
    const { redlock } = redlockOver(redis);
    try {
      const short = defineScript('short', { keysPerLock: 1, argsPerLock: 0 }, 'return {1}');
      const node = redlock.nodes[0];
      const reply = await node?.run(
        short,
        [],
        [
          { keys: ['x'], args: [] },
          { keys: ['y'], args: [] },
        ],
      );
      expect(reply?.ok).toBe(false);
      expect(!reply?.ok && reply?.error.message).toMatch(/answered 1 of 2/);
      expect(node?.backlog).toBe(0);
      const nonArray = defineScript('scalar', { keysPerLock: 1, argsPerLock: 0 }, 'return 7');
      const r2 = await node?.run(nonArray, [], [{ keys: ['x'], args: [] }]);
      expect(!r2?.ok && r2?.error.message).toMatch(/returned number/);
    } finally {
      await redlock.quit();
    }
  });

  it('a node that stops answering mid-call (SIGSTOP): bounded, backlog given back once it answers', async () => {
    const { redlock } = redlockOver(redis, { commandTimeoutMs: 150 });
    try {
      const held = (await redlock.acquireMany(['bh:a', 'bh:b'])).filter(isLock);
      // The acquire resolves on a quorum: node 0 may still owe its answer, which would count too.
      await eventually(async () => redlock.nodes[0]?.backlog === 0);
      redis.nodes[0]?.pause();
      await sleep(30);
      const started = performance.now();
      const more = await redlock.acquireMany(['bh:c', 'bh:d'], { retryCount: 0 });
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(more.every(isLock)).toBe(true);
      expect(redlock.nodes[0]?.backlog).toBe(2);
      redis.nodes[0]?.resume();
      await eventually(async () => redlock.nodes[0]?.backlog === 0);
      await redlock.releaseMany([...held, ...more.filter(isLock)]);
    } finally {
      redis.nodes[0]?.resume();
      await redlock.quit();
    }
  });
});

describe('the lazy AbortController', () => {
  const redis = useRedisNodes(3);

  it("lost on time ('expired') before anyone read signal: signal, read later, is aborted with that error", async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 400, commandTimeoutMs: 50 });
    try {
      const events: LockLostError[] = [];
      redlock.on('lock_lost', (e) => events.push(e.error));
      const lock = await redlock.acquire('lazy:expired', { autoExtend: false });
      await eventually(async () => lock.state === 'lost', 2_000);
      expect(lock.expiredUnclaimed).toBe(true);
      const signal = lock.signal;
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(LockLostError);
      expect((signal.reason as LockLostError).reason).toBe('expired');
      expect(signal.reason).toBe(events[0]);
      expect(lock.signal).toBe(signal);
      expect(await whenAborted(signal)).toBe(0);
      await expect(lock.extend()).rejects.toBe(signal.reason);
    } finally {
      await redlock.quit();
    }
  });

  it("lost as 'not_owner' before anyone read signal: extend() throws the same error signal aborts with", async () => {
    const { redlock, clients } = redlockOver(redis);
    try {
      const lock = await redlock.acquire('lazy:taken');
      await Promise.all(clients.map((c) => c.set('srw:{lazy:taken}:lock', 'someone-else', 'PX', 5_000)));
      const thrown = await lock.extend().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(thrown).toBeInstanceOf(LockLostError);
      expect((thrown as LockLostError).reason).toBe('not_owner');
      expect(lock.expiredUnclaimed).toBe(false);
      expect(lock.signal.aborted).toBe(true);
      expect(lock.signal.reason).toBe(thrown);
      // AbortSignal.any over it (as the pipeline's handler context does) is aborted at once too.
      expect(AbortSignal.any([lock.signal, new AbortController().signal]).reason).toBe(thrown);
    } finally {
      await redlock.quit();
    }
  });

  it('signal read before the loss: its listener fires with the error', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 400, commandTimeoutMs: 50 });
    try {
      const lock = await redlock.acquire('lazy:early', { autoExtend: false });
      const reason = new Promise((resolve) =>
        lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true }),
      );
      const r = await reason;
      expect(r).toBeInstanceOf(LockLostError);
      expect((r as LockLostError).reason).toBe('expired');
    } finally {
      await redlock.quit();
    }
  });

  it('using(): a loss never looked at by fn still rejects', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 400, commandTimeoutMs: 50 });
    try {
      const out = redlock.using('lazy:using', () => sleep(700), { autoExtend: false });
      await expect(out).rejects.toBeInstanceOf(LockLostError);
    } finally {
      await redlock.quit();
    }
  });

  it('quit() with a lock nobody read the signal of: signal aborted (expired) afterwards', async () => {
    const { redlock } = redlockOver(redis);
    const lock = await redlock.acquire('lazy:quit');
    await redlock.quit();
    expect(lock.state).toBe('lost');
    expect((lock.signal.reason as LockLostError).reason).toBe('expired');
  });
});

describe('the extender timer left armed when the set empties', () => {
  const redis = useRedisNodes(3);

  it('a shorter-TTL lock tracked while a long wake-up is armed is extended in time', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 20_000 });
    try {
      // Armed for ~6.7 s (a third of 20 s), then the set empties: the timer stays.
      const long = await redlock.acquire('ext:long');
      await long.release();
      expect(redlock.heldLocks).toHaveLength(0);
      const short = await redlock.acquire('ext:short', { ttlMs: 400 });
      await sleep(1_500);
      expect(short.isHeld).toBe(true);
      expect(short.state).toBe('held');
      await short.release();
    } finally {
      await redlock.quit();
    }
  });

  it('a lock tracked while an extension is in flight (node slow) is still extended and its loss is on time', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 900, commandTimeoutMs: 250 });
    try {
      const a = await redlock.acquire('ext:a');
      // Slow every node a little during a's extension (~200 ms in).
      await sleep(180);
      for (const n of redis.nodes) n.pause();
      await sleep(60);
      const bP = redlock.acquire('ext:b');
      for (const n of redis.nodes) n.resume();
      const b = await bP;
      await sleep(1_500);
      expect(a.isHeld).toBe(true);
      expect(b.isHeld).toBe(true);
      await redlock.releaseMany([a, b]);
    } finally {
      for (const n of redis.nodes) n.resume();
      await redlock.quit();
    }
  });

  it('after an event-loop stall longer than validity, a lock nobody looked at is lost on the next tick', async () => {
    const { redlock } = redlockOver(redis, { ttlMs: 400 });
    try {
      const lock = await redlock.acquire('ext:stall');
      const until = performance.now() + 600;
      while (performance.now() < until) {
        /* stall */
      }
      expect(lock.isHeld).toBe(false);
      await eventually(async () => lock.state === 'lost', 1_000);
      expect((lock.signal.reason as LockLostError).reason).toBe('expired');
    } finally {
      await redlock.quit();
    }
  });

  it('an armed timer over an empty set does not keep a process alive', async () => {
    const ports = redis.nodes.map((n) => n.port);
    const { spawn } = await import('node:child_process');
    const code = `
      import { Redis } from 'ioredis';
      import { Redlock } from './src/index.ts';
      const clients = ${JSON.stringify(ports)}.map((port) => new Redis({ port, host: '127.0.0.1' }));
      const redlock = new Redlock(clients, { ttlMs: 3_600_000 });
      const lock = await redlock.acquire('ext:exit');
      await lock.release();
      for (const c of clients) c.disconnect();
      console.log('released');
    `;
    const started = performance.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += String(d);
    });
    child.stderr.on('data', (d) => {
      out += String(d);
    });
    const exit = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(-1);
      }, 8_000);
      child.on('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(out).toContain('released');
    expect(exit, out).toBe(0);
    expect(performance.now() - started).toBeLessThan(8_000);
  });
});

describe('a Redis Cluster node in the majority', () => {
  const plain = useRedisNodes(2);
  const cluster = useRedisNodes(1, { cluster: true });

  it('mixed done / not done keys of many slots, extend and release of many: one answer per key', async () => {
    const { redlock, done } = await clusterMajority(cluster, plain);
    try {
      const keys = Array.from({ length: 12 }, (_, i) => `cl:${i}`);
      const some = (await redlock.acquireMany([keys[1], keys[5], keys[11]] as string[])).filter(isLock);
      expect(await redlock.completeMany(some)).toEqual([true, true, true]);
      const results = await redlock.acquireMany([...keys, 'cl:0'], { retryCount: 0 });
      expect(results.map((r) => (isLock(r) ? 'granted' : r.reason))).toEqual([
        'granted',
        'done',
        'granted',
        'granted',
        'granted',
        'done',
        'granted',
        'granted',
        'granted',
        'granted',
        'granted',
        'done',
        'held',
      ]);
      const locks = results.filter(isLock);
      await redlock.extendMany(locks);
      expect(locks.every((l) => l.isHeld)).toBe(true);
      await redlock.releaseMany(locks);
      const again = await redlock.acquireMany(
        locks.map((l) => l.key),
        { retryCount: 0 },
      );
      expect(again.every(isLock)).toBe(true);
      await redlock.releaseMany(again.filter(isLock));
    } finally {
      await done();
    }
  });

  it('a Cluster client still routes the flat argument array by key (keys of many slots, 600 locks)', async () => {
    const client = new Redis.Cluster([{ host: '127.0.0.1', port: cluster.nodes[0]?.port ?? 0 }]);
    client.on('error', () => undefined);
    const redlock = new Redlock([client], { logger: silentLogger, commandTimeoutMs: 2_000 });
    try {
      await eventually(async () => client.status === 'ready');
      const keys = Array.from({ length: 600 }, (_, i) => `cl600:${i}`);
      const locks = (await redlock.acquireMany(keys)).filter(isLock);
      expect(locks).toHaveLength(600);
      await redlock.extendMany(locks);
      expect(locks.every((l) => l.isHeld)).toBe(true);
      await redlock.releaseMany(locks);
      expect(await client.exists('srw:{cl600:7}:lock')).toBe(0);
    } finally {
      await redlock.quit();
    }
  });
});
