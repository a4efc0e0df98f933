import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../helpers/fault-proxy.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

describe('FaultProxy', () => {
  const redis = useRedisNodes(1);
  let proxy: FaultProxy;
  let client: Redis;

  beforeAll(async () => {
    proxy = await FaultProxy.start(redis.nodes[0]?.port ?? 0);
    client = redis.nodes[0]?.client({ port: proxy.port, autoResendUnfulfilledCommands: false }) as Redis;
    await client.ping();
  });
  afterAll(() => proxy.close());

  it('delays every reply, in order', async () => {
    proxy.delay(120);
    const started = performance.now();
    const replies = await Promise.all([client.set('d', '1'), client.incr('d'), client.get('d')]);
    const took = performance.now() - started;
    proxy.pass();
    expect(replies).toEqual(['OK', 2, '2']);
    expect(took).toBeGreaterThanOrEqual(115);
  });

  it('black-holes without closing the connection, and delivers what it held once healed', async () => {
    proxy.blackHole();
    let answered = false;
    const reply = client.incr('held').then((n) => {
      answered = true;
      return n;
    });
    await sleep(250);
    expect(answered).toBe(false);
    expect(client.status).toBe('ready');
    proxy.heal();
    expect(await reply).toBe(1);
  });

  it('resets connections, and refuses new ones until healed', async () => {
    const closed = new Promise((resolve) => client.once('close', resolve));
    proxy.refuse();
    await closed;
    await sleep(150);
    expect(client.status).not.toBe('ready');
    proxy.heal();
    await eventually(async () => client.status === 'ready', 3_000);
    expect(await client.ping()).toBe('PONG');
  });
});
