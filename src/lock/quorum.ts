/** Quorum math of Redlock, kept pure so it can be unit tested. */

/** A majority of `nodeCount` nodes: floor(N/2) + 1. */
export function quorumOf(nodeCount: number): number {
  return Math.floor(nodeCount / 2) + 1;
}

/**
 * How long a grant stays valid: the TTL less the time the grant took, less the clock drift allowance
 * (ttl * driftFactor, plus 2 ms for the granularity of Redis expiry). Not positive means no grant.
 */
export function validityMs(ttlMs: number, elapsedMs: number, driftFactor: number): number {
  return ttlMs - elapsedMs - (ttlMs * driftFactor + 2);
}

/** A delay of `baseMs` plus up to `jitterMs` of random jitter, so contenders do not retry in lockstep. */
export function withJitter(baseMs: number, jitterMs: number): number {
  return baseMs + Math.floor(Math.random() * (jitterMs + 1));
}
