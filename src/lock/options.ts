import type { Logger } from 'winston';
import { ConfigError } from '../errors.ts';
import { boolean, dropUndefined, integer, MAX_REDIS_TTL_MS, MAX_TIMER_MS, number } from '../validate.ts';

/** Options of {@link Redlock}. Every field is optional; defaults are resolved by {@link resolveRedlockOptions}. */
export interface RedlockOptions {
  /**
   * How long a lock lives on each node without an extension, in ms.
   * @defaultValue 30000
   */
  ttlMs?: number;
  /**
   * Clock drift allowance as a fraction of the TTL: validity = ttl - elapsed - (ttl * driftFactor + 2 ms).
   * @defaultValue 0.01
   */
  driftFactor?: number;
  /**
   * How many times `acquire` tries again after a failed attempt (held or no quorum). `acquireMany`
   * takes the same default; the worker passes 0 and backs off through SQS instead.
   * @defaultValue 3
   */
  retryCount?: number;
  /**
   * Base delay between attempts, in ms.
   * @defaultValue 200
   */
  retryDelayMs?: number;
  /**
   * Up to this much random delay is added to each retry delay, in ms.
   * @defaultValue 100
   */
  retryJitterMs?: number;
  /**
   * Upper bound on the whole acquisition, retries included, in ms: no attempt starts after it.
   * @defaultValue 10000
   */
  acquireTimeoutMs?: number;
  /**
   * How long one command to one node may take before that node counts as a "no", in ms. A dead, slow
   * or paused node never stalls an operation for longer. Must be below a third of `ttlMs`.
   * @defaultValue the smaller of 500 and a tenth of `ttlMs`
   */
  commandTimeoutMs?: number;
  /**
   * How long to wait for a client that is still making its first connection (a Lambda cold start)
   * before it counts as a "no", in ms. Clients that were connected before and are now reconnecting
   * are not waited for.
   * @defaultValue 5000
   */
  connectTimeoutMs?: number;
  /**
   * Extend held locks automatically (one batched call per node per tick, about ttl/3).
   * @defaultValue true
   */
  autoExtend?: boolean;
  /**
   * How long a completion marker written by `complete()` lives, in ms: the window in which a
   * redelivered duplicate is recognised and acked without running the handler again.
   * @defaultValue 86400000 (24 h)
   */
  completionTtlMs?: number;
  /**
   * How long an idle key's fencing counter is kept, in ms (0 keeps it forever). Counters are seeded
   * from the clock, so tokens stay monotonic after an idle counter expires; see the README.
   * Must be 0 or above `ttlMs`.
   * @defaultValue the larger of 86400000 (24 h) and twice `ttlMs`
   */
  fencingTtlMs?: number;
  /**
   * Prefix of every Redis key the engine writes.
   * @defaultValue 'srw:'
   */
  keyPrefix?: string;
  /**
   * A winston logger for warnings (a single node is not fault tolerant) and lock events.
   * @defaultValue a JSON logger at `LOG_LEVEL` (see createLogger)
   */
  logger?: Logger;
}

export type ResolvedRedlockOptions = Required<Omit<RedlockOptions, 'logger'>> & {
  logger: Logger | undefined;
};

export const REDLOCK_DEFAULTS = {
  ttlMs: 30_000,
  driftFactor: 0.01,
  retryCount: 3,
  retryDelayMs: 200,
  retryJitterMs: 100,
  acquireTimeoutMs: 10_000,
  commandTimeoutMs: 500,
  connectTimeoutMs: 5_000,
  autoExtend: true,
  completionTtlMs: 86_400_000,
  fencingTtlMs: 86_400_000,
  keyPrefix: 'srw:',
} as const satisfies Required<Omit<RedlockOptions, 'logger'>>;

/** The command timeout a TTL gets when none is set: short enough for an extension to fail and be retried in time. */
export function defaultCommandTimeoutMs(ttlMs: number): number {
  // A tenth of the TTL, at most 500 ms; for very short TTLs at least 10 ms while below a third of it.
  const floor = Math.min(10, Math.floor((ttlMs - 1) / 3));
  return Math.max(floor, Math.min(REDLOCK_DEFAULTS.commandTimeoutMs, Math.floor(ttlMs / 10)));
}

/**
 * Applies defaults and checks every rule, alone and across options. Defaults that depend on another
 * option are derived from it, so a conflict can only come from values the user set, and its
 * ConfigError names one of those. Throws {@link ConfigError}.
 */
export function resolveRedlockOptions(options: RedlockOptions = {}): ResolvedRedlockOptions {
  const set = dropUndefined(options);
  const ttlMs = integer('ttlMs', set.ttlMs ?? REDLOCK_DEFAULTS.ttlMs, { min: 10, max: MAX_TIMER_MS });
  const o = {
    ...REDLOCK_DEFAULTS,
    commandTimeoutMs: defaultCommandTimeoutMs(ttlMs),
    fencingTtlMs: Math.max(REDLOCK_DEFAULTS.fencingTtlMs, 2 * ttlMs),
    ...set,
    ttlMs,
    logger: options.logger,
  };
  number('driftFactor', o.driftFactor, { min: 0, max: 0.5 });
  integer('retryCount', o.retryCount, { min: 0, max: 1_000 });
  integer('retryDelayMs', o.retryDelayMs, { min: 0, max: MAX_TIMER_MS });
  integer('retryJitterMs', o.retryJitterMs, { min: 0, max: MAX_TIMER_MS });
  integer('acquireTimeoutMs', o.acquireTimeoutMs, { min: 0, max: MAX_TIMER_MS });
  integer('commandTimeoutMs', o.commandTimeoutMs, { min: 1, max: MAX_TIMER_MS });
  integer('connectTimeoutMs', o.connectTimeoutMs, { min: 0, max: MAX_TIMER_MS });
  boolean('autoExtend', o.autoExtend);
  integer('completionTtlMs', o.completionTtlMs, { min: 1, max: MAX_REDIS_TTL_MS });
  integer('fencingTtlMs', o.fencingTtlMs, { min: 0, max: MAX_REDIS_TTL_MS });
  if (typeof o.keyPrefix !== 'string') throw new ConfigError('keyPrefix', o.keyPrefix, 'must be a string');
  if (o.commandTimeoutMs * 3 >= o.ttlMs) {
    // Only reachable with commandTimeoutMs set (the derived one fits): name it, and ttlMs only if set.
    const ttl = set.ttlMs === undefined ? `the default lock TTL (${o.ttlMs} ms)` : `ttlMs (${o.ttlMs})`;
    throw new ConfigError(
      'commandTimeoutMs',
      o.commandTimeoutMs,
      `must be below a third of ${ttl} so an extension can fail and be retried before the lock expires`,
    );
  }
  if (o.fencingTtlMs !== 0 && o.fencingTtlMs <= o.ttlMs) {
    const ttl = set.ttlMs === undefined ? `the default lock TTL (${o.ttlMs} ms)` : `ttlMs (${o.ttlMs})`;
    throw new ConfigError('fencingTtlMs', o.fencingTtlMs, `must be 0 (forever) or above ${ttl}`);
  }
  return o;
}

/** A per-call TTL override is checked against the same rules as the option. */
export function checkTtl(option: string, ttlMs: number, commandTimeoutMs: number): number {
  integer(option, ttlMs, { min: 10, max: MAX_TIMER_MS });
  if (commandTimeoutMs * 3 >= ttlMs) {
    throw new ConfigError(option, ttlMs, `must be above 3 x commandTimeoutMs (${commandTimeoutMs})`);
  }
  return ttlMs;
}
