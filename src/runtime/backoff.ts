/** Visibility backoffs, in whole seconds as SQS wants them. Pure, so they are unit tested. */

const SQS_MAX_VISIBILITY_SEC = 43_200;

function capped(seconds: number, maxSec: number): number {
  return Math.max(0, Math.min(Math.ceil(seconds), maxSec, SQS_MAX_VISIBILITY_SEC));
}

/** After a handler failure: base * 2^(receiveCount - 1), plus up to 20 % jitter, capped. */
export function failureBackoffSec(
  receiveCount: number,
  baseSec: number,
  maxSec: number,
  random = Math.random,
): number {
  const exponent = Math.min(Math.max(receiveCount, 1) - 1, 30);
  const delay = baseSec * 2 ** exponent;
  return capped(delay * (1 + 0.2 * random()), maxSec);
}

/** Lock held by another worker: come back about when its lock would expire, plus up to 1 s of jitter. */
export function contendedBackoffSec(retryAfterMs: number, maxSec: number, random = Math.random): number {
  return capped(Math.max(1, retryAfterMs / 1000 + random()), maxSec);
}

/** No quorum: come back after the base delay plus up to half of it again. */
export function quorumBackoffSec(baseSec: number, maxSec: number, random = Math.random): number {
  return capped(baseSec * (1 + 0.5 * random()), maxSec);
}
