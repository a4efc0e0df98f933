import type { Redis } from 'ioredis';

/**
 * A ledger of side effects kept on its own Redis node (not one of the quorum nodes), so that worker
 * processes share it. It counts, per message: effects applied, handler runs started, and runs that
 * overlapped another run of the same message; and it keeps a fencing-checked store that rejects a
 * write whose token is lower than the last one accepted, as a careful downstream would.
 */
export class Ledger {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, prefix = 'ledger') {
    this.#redis = redis;
    this.#prefix = prefix;
  }

  /** Marks a run of `id` as started; resolves how many runs of it are in progress now (1 = alone). */
  async begin(id: string): Promise<number> {
    const running = await this.#redis.hincrby(`${this.#prefix}:running`, id, 1);
    await this.#redis.hincrby(`${this.#prefix}:starts`, id, 1);
    if (running > 1) await this.#redis.hincrby(`${this.#prefix}:overlaps`, id, 1);
    return running;
  }

  async end(id: string): Promise<void> {
    await this.#redis.hincrby(`${this.#prefix}:running`, id, -1);
  }

  /** Applies the side effect if `token` is not older than the last accepted one; false = rejected as stale. */
  async apply(id: string, token: number): Promise<boolean> {
    const accepted = (await this.#redis.eval(
      `local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
       if tonumber(ARGV[2]) < last then return 0 end
       redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
       redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
       return 1`,
      2,
      `${this.#prefix}:tokens`,
      `${this.#prefix}:effects`,
      id,
      String(token),
    )) as number;
    if (!accepted) await this.#redis.hincrby(`${this.#prefix}:stale`, id, 1);
    return accepted === 1;
  }

  async report(ids: readonly string[]): Promise<LedgerReport> {
    const [effects, starts, overlaps, stale] = await Promise.all(
      ['effects', 'starts', 'overlaps', 'stale'].map((k) => this.#redis.hgetall(`${this.#prefix}:${k}`)),
    );
    const count = (h: Record<string, string> | undefined, id: string): number => Number(h?.[id] ?? 0);
    return {
      sent: ids.length,
      applied: ids.filter((id) => count(effects, id) >= 1).length,
      lost: ids.filter((id) => count(effects, id) === 0).length,
      appliedTwice: ids.filter((id) => count(effects, id) > 1).length,
      concurrentRuns: ids.reduce((n, id) => n + count(overlaps, id), 0),
      runsStarted: ids.reduce((n, id) => n + count(starts, id), 0),
      staleRejected: ids.reduce((n, id) => n + count(stale, id), 0),
    };
  }
}

export interface LedgerReport {
  sent: number;
  applied: number;
  lost: number;
  appliedTwice: number;
  concurrentRuns: number;
  runsStarted: number;
  staleRejected: number;
}
