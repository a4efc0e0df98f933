/**
 * Counts live timers of the soak worker process, ref'd and unref'd alike.
 *
 * `process.getActiveResourcesInfo()` only lists ref'd timers, and the library's own timers (heartbeat,
 * lock extender) are unref'd on purpose, so a leak of them would be invisible there. This module wraps
 * `setTimeout` / `setInterval` (the globals and the `node:timers` exports, synced to their ESM bindings)
 * and keeps every timer they return until Node marks it destroyed (fired once, or cleared): what is left
 * is the set of live timers. Pruned at every `liveTimers()` call, so a destroyed timer is held at most
 * one sample interval longer than it would be anyway.
 *
 * Must be imported before anything that captures `setTimeout` at import time (first import of
 * soak/worker.ts). Timers made by Node internals (socket timeouts, timers/promises) are not seen.
 *
 * With `SOAK_TIMER_STACKS=1`, the creation stack of each timer is kept too, so live timers can be
 * grouped by where they were made (slow: for investigation only).
 */
import { syncBuiltinESMExports } from 'node:module';
import timers from 'node:timers';

const withStacks = process.env.SOAK_TIMER_STACKS === '1';
/** Live (not yet destroyed) timers, with their creation stack when asked for. */
const live = new Map<NodeJS.Timeout, string | undefined>();
let created = 0;

function isDestroyed(timer: NodeJS.Timeout): boolean {
  return (timer as unknown as { _destroyed?: boolean })._destroyed === true;
}

function wrap<F extends (...args: never[]) => NodeJS.Timeout>(original: F): F {
  const wrapped = function (this: unknown, ...args: Parameters<F>): NodeJS.Timeout {
    const timer = Reflect.apply(original, this, args) as NodeJS.Timeout;
    created++;
    live.set(timer, withStacks ? new Error().stack?.split('\n').slice(2, 8).join('\n') : undefined);
    return timer;
  };
  // util.promisify.custom and friends.
  for (const symbol of Object.getOwnPropertySymbols(original)) {
    Object.defineProperty(wrapped, symbol, Object.getOwnPropertyDescriptor(original, symbol) ?? {});
  }
  return wrapped as unknown as F;
}

const wrappedSetTimeout = wrap(timers.setTimeout as unknown as (...args: never[]) => NodeJS.Timeout);
const wrappedSetInterval = wrap(timers.setInterval as unknown as (...args: never[]) => NodeJS.Timeout);
globalThis.setTimeout = wrappedSetTimeout as unknown as typeof globalThis.setTimeout;
globalThis.setInterval = wrappedSetInterval as unknown as typeof globalThis.setInterval;
(timers as { setTimeout: unknown }).setTimeout = wrappedSetTimeout;
(timers as { setInterval: unknown }).setInterval = wrappedSetInterval;
syncBuiltinESMExports();

export interface TimerCounts {
  /** Timers not yet fired (one-shot) or cleared. */
  readonly live: number;
  /** Of which keep the process alive. */
  readonly ref: number;
  readonly unref: number;
  /** Timers made since the process started. */
  readonly created: number;
}

export function liveTimers(): TimerCounts {
  let ref = 0;
  for (const timer of live.keys()) {
    if (isDestroyed(timer)) live.delete(timer);
    else if (timer.hasRef()) ref++;
  }
  return { live: live.size, ref, unref: live.size - ref, created };
}

/** Live timers grouped by creation stack (empty unless SOAK_TIMER_STACKS=1), most frequent first. */
export function liveTimerStacks(limit = 10): { count: number; stack: string }[] {
  liveTimers();
  const byStack = new Map<string, number>();
  for (const stack of live.values()) {
    if (stack !== undefined) byStack.set(stack, (byStack.get(stack) ?? 0) + 1);
  }
  return [...byStack.entries()]
    .map(([stack, count]) => ({ count, stack }))
    .sort((a, b) => b.count - a.count)
    .slice(0, limit);
}
