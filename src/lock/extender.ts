import type { Lock } from './lock.ts';

/**
 * One extender per Redlock: every lock that is due is renewed in one batched call per node, so the
 * cost of a tick does not grow with the number of locks. Timers are unref'd, ticks never overlap, and
 * a lock whose validity runs out is declared lost on time even while an extension is in flight.
 */
export class LockExtender {
  readonly #locks = new Set<Lock>();
  readonly #extend: (locks: Lock[]) => Promise<void>;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;
  #extending = false;
  #stopped = false;

  constructor(extend: (locks: Lock[]) => Promise<void>, now: () => number) {
    this.#extend = extend;
    this.#now = now;
  }

  get size(): number {
    return this.#locks.size;
  }

  track(lock: Lock): void {
    if (this.#stopped) return;
    this.#locks.add(lock);
    // Only the new lock can move the wake-up earlier: no need to look at the others.
    const next = Math.min(
      lock.deadline,
      lock.autoExtend && !this.#extending ? lock.nextExtendAt : Number.POSITIVE_INFINITY,
    );
    if (!this.#timer || next < this.#wakeAt) this.#wakeUpAt(next);
  }

  untrack(lock: Lock): void {
    // The timer stays armed when the set empties (it is unref'd; a tick over no locks just stops):
    // a worker's set empties between most batches, and clearing it there would cost a clearTimeout
    // and a setTimeout per batch. A later lock that needs an earlier wake-up re-arms it in track().
    this.#locks.delete(lock);
  }

  /** Locks held and auto-extended right now. */
  held(): Lock[] {
    return [...this.#locks];
  }

  stop(): void {
    this.#stopped = true;
    this.#locks.clear();
    this.#clear();
  }

  /** Wakes at the earliest deadline, or the earliest due extension when none is in flight. */
  #schedule(): void {
    if (this.#stopped || this.#locks.size === 0) {
      this.#clear();
      return;
    }
    let next = Number.POSITIVE_INFINITY;
    for (const lock of this.#locks) {
      next = Math.min(next, lock.deadline);
      if (!this.#extending && lock.autoExtend) next = Math.min(next, lock.nextExtendAt);
    }
    if (this.#timer && next >= this.#wakeAt) return;
    this.#wakeUpAt(next);
  }

  #wakeUpAt(next: number): void {
    this.#clear();
    this.#wakeAt = next;
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, Math.ceil(next - this.#now())));
    this.#timer.unref();
  }

  #clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wakeAt = Number.POSITIVE_INFINITY;
  }

  #tick(): void {
    this.#timer = undefined;
    this.#wakeAt = Number.POSITIVE_INFINITY;
    const now = this.#now();
    for (const lock of this.#locks) {
      if (!lock.isHeld) {
        // Validity ran out (also after an event-loop stall): lost, whatever an extension may still say.
        if (lock.state === 'held')
          lock.markLost('expired', `validity ended ${Math.round(now - lock.deadline)} ms ago`);
        this.#locks.delete(lock);
      }
    }
    // Locks due within the next sixth of their TTL ride along: renewed together, they stay together, so
    // locks taken at different moments merge into one batch instead of each keeping its own tick.
    const due = [...this.#locks].filter(
      (lock) => lock.autoExtend && lock.nextExtendAt <= now + lock.ttlMs / 6,
    );
    if (due.length > 0 && !this.#extending) {
      this.#extending = true;
      // The extend callback never rejects; the catch is a last guard so no rejection escapes a timer.
      this.#extend(due)
        .catch(() => undefined)
        .finally(() => {
          this.#extending = false;
          this.#schedule();
        });
    }
    this.#schedule();
  }
}
