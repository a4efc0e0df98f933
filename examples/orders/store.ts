import type { Redis } from 'ioredis';

/**
 * The downstream the orders example writes to: a charge ledger in Redis that rejects a write whose
 * fencing token is older than the last one it accepted for the order. This is the check that makes a
 * stale lock holder (paused past its lock's validity) harmless.
 */
export class OrdersStore {
  readonly #redis: Redis;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  /** Records the charge; false when `fencingToken` is stale (a newer holder already wrote). */
  async charge(orderId: string, cents: number, fencingToken: number): Promise<boolean> {
    const accepted = await this.#redis.eval(
      `local last = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
       if tonumber(ARGV[1]) < last then return 0 end
       redis.call('HSET', KEYS[1], 'token', ARGV[1], 'cents', ARGV[2])
       redis.call('HINCRBY', KEYS[1], 'charges', 1)
       return 1`,
      1,
      `order:${orderId}`,
      String(fencingToken),
      String(cents),
    );
    return accepted === 1;
  }

  /** How many times an order was charged (1 is right). */
  async charges(orderId: string): Promise<number> {
    return Number((await this.#redis.hget(`order:${orderId}`, 'charges')) ?? 0);
  }
}
