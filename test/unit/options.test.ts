import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BaseHandler, ConfigError, createLogger, Redlock } from '../../src/index.ts';
import { REDLOCK_DEFAULTS, resolveRedlockOptions } from '../../src/lock/options.ts';
import { resolveWorkerOptions, WORKER_DEFAULTS } from '../../src/runtime/options.ts';

describe('resolveRedlockOptions', () => {
  it('applies every default', () => {
    const { logger, ...resolved } = resolveRedlockOptions();
    expect(resolved).toEqual(REDLOCK_DEFAULTS);
    expect(logger).toBeUndefined();
  });

  it('keeps given values and ignores undefined ones', () => {
    const resolved = resolveRedlockOptions({ ttlMs: 5_000, retryCount: undefined });
    expect(resolved.ttlMs).toBe(5_000);
    expect(resolved.retryCount).toBe(REDLOCK_DEFAULTS.retryCount);
  });

  it.each([
    [{ ttlMs: -1 }, 'ttlMs must be an integer between 10 and 2147483647. Received: -1'],
    [{ ttlMs: 1.5 }, 'ttlMs must be an integer between 10 and 2147483647. Received: 1.5'],
    // Above what a timer takes (it would fire at once) or Redis accepts (refused only at run time).
    [{ ttlMs: 3e9 }, 'ttlMs must be an integer between 10 and 2147483647. Received: 3000000000'],
    [{ completionTtlMs: 1e19 }, 'completionTtlMs must be an integer between 1 and 315360000000'],
    [{ fencingTtlMs: 1e19 }, 'fencingTtlMs must be an integer between 0 and 315360000000'],
    [{ commandTimeoutMs: 3e9 }, 'commandTimeoutMs must be an integer between 1 and 2147483647'],
    [{ acquireTimeoutMs: 3e9 }, 'acquireTimeoutMs must be an integer between 0 and 2147483647'],
    [{ driftFactor: 2 }, 'driftFactor must be a number between 0 and 0.5. Received: 2'],
    [
      { retryCount: '3' as unknown as number },
      'retryCount must be an integer between 0 and 1000. Received: "3"',
    ],
    [{ autoExtend: 'yes' as unknown as boolean }, 'autoExtend must be a boolean. Received: "yes"'],
    [{ keyPrefix: 7 as unknown as string }, 'keyPrefix must be a string. Received: 7'],
  ])('rejects %j with a message naming the option and the value', (options, message) => {
    expect(() => resolveRedlockOptions(options)).toThrow(message);
  });

  it('checks rules across options: the command timeout must leave room for a retried extension', () => {
    const error = (() => {
      try {
        resolveRedlockOptions({ ttlMs: 900, commandTimeoutMs: 300 });
      } catch (e) {
        return e;
      }
    })() as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.name).toBe('ConfigError');
    expect(error.option).toBe('commandTimeoutMs');
    expect(error.value).toBe(300);
    expect(error.message).toContain('ttlMs (900)');
  });

  it('derives the defaults that depend on the TTL, so a short TTL alone is valid', () => {
    expect(resolveRedlockOptions({ ttlMs: 1_000 }).commandTimeoutMs).toBe(100);
    expect(resolveRedlockOptions({ ttlMs: 30_000 }).commandTimeoutMs).toBe(500);
    expect(resolveRedlockOptions({ ttlMs: 10 }).commandTimeoutMs).toBe(3);
    expect(resolveRedlockOptions({ ttlMs: 60 }).commandTimeoutMs).toBe(10);
    expect(resolveRedlockOptions({ ttlMs: 100_000_000 }).fencingTtlMs).toBe(200_000_000);
    // The reported case: new Redlock(clients, { ttlMs: 1000 }) threw on the fixed 500 ms default.
    const client = new Redis({ lazyConnect: true });
    try {
      expect(
        new Redlock([client], { ttlMs: 1_000, logger: createLogger({ silent: true }) }).options,
      ).toMatchObject({
        ttlMs: 1_000,
        commandTimeoutMs: 100,
      });
    } finally {
      client.disconnect();
    }
  });

  it('names only options the user set in a conflict', () => {
    const error = (() => {
      try {
        resolveRedlockOptions({ commandTimeoutMs: 20_000 });
      } catch (e) {
        return e;
      }
    })() as ConfigError;
    expect(error.option).toBe('commandTimeoutMs');
    expect(error.message).toContain('the default lock TTL (30000 ms)');
    expect(error.message).not.toContain('ttlMs');
  });

  it('requires the fencing counter to outlive the lock', () => {
    expect(() => resolveRedlockOptions({ ttlMs: 60_000, fencingTtlMs: 30_000 })).toThrow(
      /fencingTtlMs must be 0/,
    );
    expect(resolveRedlockOptions({ fencingTtlMs: 0 }).fencingTtlMs).toBe(0);
  });
});

describe('resolveWorkerOptions', () => {
  class Noop extends BaseHandler<string> {
    hydrate(): string {
      return '';
    }
    async handle(): Promise<void> {}
  }
  // Lazy clients never connect: resolving options is pure logic.
  const redlock = new Redlock(
    [1, 2, 3].map((port) => new Redis({ port, lazyConnect: true })),
    { ttlMs: 3_000, commandTimeoutMs: 100, logger: createLogger({ silent: true }) },
  );
  const base = { queueUrl: 'http://localhost:4566/000000000000/q', handler: new Noop(), redlock };

  it('applies every default, completionWindowMs 50 included', () => {
    const o = resolveWorkerOptions(base);
    // Visibility heartbeat and SQS deadline: a third of the 30 s visibility (the 10 s cap).
    expect(o).toMatchObject({
      ...WORKER_DEFAULTS,
      fifo: false,
      heartbeatIntervalMs: 10_000,
      sqsTimeoutMs: 10_000,
    });
    expect(o.completionWindowMs).toBe(50);
  });

  it.each([
    [{ completionWindowMs: -1 }, 'completionWindowMs must be an integer >= 0. Received: -1'],
    [{ completionWindowMs: 2.5 }, 'completionWindowMs must be an integer >= 0. Received: 2.5'],
    [
      { completionWindowMs: 1_001 },
      "completionWindowMs must be at most a third of the Redlock's ttlMs (3000)",
    ],
    [{ batchSize: 11 }, 'batchSize must be an integer between 1 and 10. Received: 11'],
    [{ sqsTimeoutMs: 50 }, 'sqsTimeoutMs must be an integer between 100 and 60000. Received: 50'],
    [
      { visibilityTimeoutSec: 1, sqsTimeoutMs: 2_000 },
      'sqsTimeoutMs must be at most visibilityTimeoutSec (1 s)',
    ],
  ])('rejects %j with a message naming the option and the value', (options, message) => {
    expect(() => resolveWorkerOptions({ ...base, ...options })).toThrow(message);
  });
});
