import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  LockCompletedError,
  LockContendedError,
  LockLostError,
  QuorumUnavailableError,
  SqsRedlockWorkerError,
} from '../../src/index.ts';

describe('errors', () => {
  it('share one root, have literal names, carry context and pass the cause through', () => {
    const cause = new Error('ECONNREFUSED');
    const errors = [
      new LockContendedError('k', 120),
      new QuorumUnavailableError('k', ['a:1', 'b:2'], 2, { cause }),
      new LockLostError('k', 7, 'expired', 'validity ended', { cause }),
      new ConfigError('ttlMs', -1, 'must be positive'),
      new LockCompletedError('k'),
    ];
    expect(errors.every((e) => e instanceof SqsRedlockWorkerError && e instanceof Error)).toBe(true);
    expect(errors.map((e) => e.name)).toEqual([
      'LockContendedError',
      'QuorumUnavailableError',
      'LockLostError',
      'ConfigError',
      'LockCompletedError',
    ]);
    const quorum = errors[1] as QuorumUnavailableError;
    expect(quorum.failedNodes).toEqual(['a:1', 'b:2']);
    expect(quorum.cause).toBe(cause);
    expect(quorum.message).toBe('quorum for lock "k" unavailable: 2 nodes needed; failed: a:1, b:2');
    expect((errors[2] as LockLostError).fencingToken).toBe(7);
    expect(errors[3]?.message).toBe('ttlMs must be positive. Received: -1');
  });
});
