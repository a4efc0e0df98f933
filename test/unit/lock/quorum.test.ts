import { describe, expect, it } from 'vitest';
import { quorumOf, validityMs, withJitter } from '../../../src/lock/quorum.ts';

describe('quorum math', () => {
  it('needs a majority: floor(N/2) + 1', () => {
    expect([1, 2, 3, 4, 5, 7].map(quorumOf)).toEqual([1, 2, 2, 3, 3, 4]);
  });

  it('takes elapsed time and drift off the TTL', () => {
    expect(validityMs(30_000, 10, 0.01)).toBe(30_000 - 10 - 302);
    expect(validityMs(300, 0, 0.01)).toBe(295);
  });

  it('leaves no validity when the grant took longer than the TTL allows', () => {
    expect(validityMs(100, 97, 0.01)).toBeLessThanOrEqual(0);
  });

  it('adds jitter within its bound', () => {
    const delays = Array.from({ length: 200 }, () => withJitter(100, 50));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...delays)).toBeLessThanOrEqual(150);
    expect(new Set(delays).size).toBeGreaterThan(1);
  });
});
