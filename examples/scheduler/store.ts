import type { Redis } from 'ioredis';

/**
 * Where the scheduler example's reports go: one Redis hash per task key, holding the report and the
 * fencing token it was written with. A write carrying a token older than the stored one is rejected, so
 * a worker paused past its lock's validity cannot overwrite the report of a newer run.
 */
export class ReportStore {
  readonly #redis: Redis;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  /** Saves the report of `taskKey`; false when `fencingToken` is stale (a newer holder already wrote). */
  async save(taskKey: string, report: string, fencingToken: number): Promise<boolean> {
    const accepted = await this.#redis.eval(
      `local last = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
       if tonumber(ARGV[1]) < last then return 0 end
       redis.call('HSET', KEYS[1], 'token', ARGV[1], 'report', ARGV[2])
       redis.call('HINCRBY', KEYS[1], 'writes', 1)
       return 1`,
      1,
      `report:${taskKey}`,
      String(fencingToken),
      report,
    );
    return accepted === 1;
  }

  /** The stored report of `taskKey`, the token it was written with, and how many writes were accepted. */
  async get(taskKey: string): Promise<{ report: string; fencingToken: number; writes: number } | null> {
    const hash = await this.#redis.hgetall(`report:${taskKey}`);
    if (hash.report === undefined) return null;
    return { report: hash.report, fencingToken: Number(hash.token), writes: Number(hash.writes) };
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
