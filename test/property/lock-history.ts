/**
 * The recorded history of a schedule run against the lock engine, and the checker over it.
 * Shared by the actor processes (test/property/lock-actor.ts), which record, and the property test,
 * which checks. Pure: no vitest, no processes.
 *
 * Times are milliseconds of CLOCK_MONOTONIC (process.hrtime), which every process on the machine
 * shares; a Lock's deadline (performance.now(), the same clock from another origin) is converted.
 */

/** Monotonic ms, comparable across the processes of this machine. */
export function sharedNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** A time of this process's performance.now() clock, in {@link sharedNow}'s. */
export function toShared(performanceMs: number): number {
  return performanceMs + (sharedNow() - performance.now());
}

/** One lock granted by acquireMany. */
export interface LockRecord {
  readonly id: string;
  readonly actor: number;
  readonly key: string;
  /** Whose completion marker it writes. */
  readonly idempotencyKey: string;
  readonly token: number;
  /** When the acquireMany call that granted it started, and when it answered. */
  readonly callStart: number;
  readonly grantedAt: number;
  /** When its holder first released or completed it, if it did. */
  endCallAt?: number;
  /** When its signal aborted, and why. */
  abortedAt?: number;
  abortReason?: string;
  /** Its deadline once it ended (frozen from then on), or at the end of the run. */
  deadline: number;
}

export type CallOp = 'acquire' | 'release' | 'complete' | 'extend';

export interface CallRecord {
  readonly actor: number;
  readonly op: CallOp;
  /** The lock key, and the idempotency key (of the lock acted on, or asked for). */
  readonly key: string;
  readonly idempotencyKey: string;
  /** The lock acted on (release, complete, extend) or granted (acquire). */
  lockId?: string;
  readonly start: number;
  end?: number;
  /** acquire: 'granted' or the refusal's reason; complete: 'ok' or 'not-ok'; others: 'done' or an error. */
  outcome?: string;
  /** complete: the lock was held (valid, not ended) when the call was sent. */
  heldAtCall?: boolean;
  claimExpired?: boolean;
  /** How long the engine may take to answer it, from its options (actor pauses not included). */
  readonly boundMs: number;
}

export interface ActorHistory {
  readonly actor: number;
  readonly locks: LockRecord[];
  readonly calls: CallRecord[];
  /** Unhandled rejections and uncaught exceptions seen in the actor's process. */
  readonly escaped: string[];
}

export interface History {
  readonly locks: readonly LockRecord[];
  readonly calls: readonly CallRecord[];
  readonly escaped: readonly string[];
  /** When each actor process was stopped (SIGSTOP) and continued: its calls' bounds exclude that time. */
  readonly stops: readonly { readonly actor: number; readonly from: number; readonly to: number }[];
  /** What the schedule did (faults, heals), for the trail. */
  readonly notes?: readonly { readonly at: number; readonly text: string }[];
}

export interface Violation {
  readonly rule:
    | 'two-valid-holders'
    | 'fencing-not-increasing'
    | 'done-without-completion'
    | 'late-completion-after-regrant'
    | 'granted-after-completion'
    | 'call-unbounded'
    | 'call-unsettled'
    | 'escaped';
  readonly detail: string;
}

export interface CheckOptions {
  /** Slack for timestamps taken in different processes (same clock; the ordering of reads). */
  readonly clockSlackMs: number;
  /** Added to every call's bound: event-loop lag on a loaded machine. */
  readonly boundSlackMs: number;
}

/**
 * A lock's valid hold, as its holder saw it: from the answer of the acquire that granted it, to the
 * first of its deadline (the engine's validity: TTL less elapsed time and the drift margin, so no
 * margin is added here), its signal aborting, and its holder ending it (release, complete).
 */
export function validHold(lock: LockRecord): { from: number; to: number } {
  const to = Math.min(
    lock.deadline,
    lock.abortedAt ?? Number.POSITIVE_INFINITY,
    lock.endCallAt ?? Number.POSITIVE_INFINITY,
  );
  return { from: lock.grantedAt, to };
}

const fmt = (ms: number): string => ms.toFixed(1);

function describeLock(lock: LockRecord, origin: number): string {
  const hold = validHold(lock);
  return `${lock.id} (actor ${lock.actor}, token ${lock.token}, valid ${fmt(hold.from - origin)}..${fmt(hold.to - origin)} ms${lock.abortReason ? `, lost: ${lock.abortReason}` : ''})`;
}

/** Every rule the history breaks; empty when it is a history the engine promises. */
export function checkHistory(history: History, options: CheckOptions): Violation[] {
  const violations: Violation[] = [];
  const origin = Math.min(...history.calls.map((c) => c.start), Number.POSITIVE_INFINITY);
  const at = (ms: number): string => fmt(ms - origin);
  const byKey = new Map<string, LockRecord[]>();
  for (const lock of history.locks) byKey.set(lock.key, [...(byKey.get(lock.key) ?? []), lock]);
  const lockById = new Map(history.locks.map((l) => [l.id, l]));

  for (const [key, locks] of byKey) {
    const sorted = [...locks].sort((a, b) => a.grantedAt - b.grantedAt);
    for (let i = 0; i < sorted.length; i++) {
      const a = sorted[i] as LockRecord;
      const ha = validHold(a);
      for (let j = i + 1; j < sorted.length; j++) {
        const b = sorted[j] as LockRecord;
        const hb = validHold(b);
        // Both valid at once, beyond what reading two processes' clocks can explain.
        const overlap = Math.min(ha.to, hb.to) - Math.max(ha.from, hb.from);
        if (overlap > options.clockSlackMs) {
          violations.push({
            rule: 'two-valid-holders',
            detail: `key ${key}: ${describeLock(a, origin)} and ${describeLock(b, origin)} overlap by ${fmt(overlap)} ms`,
          });
        }
        // Only grants whose calls did not overlap are ordered: b's call started after a was granted.
        if (a.grantedAt + options.clockSlackMs < b.callStart && b.token <= a.token) {
          violations.push({
            rule: 'fencing-not-increasing',
            detail: `key ${key}: ${describeLock(b, origin)} was granted after ${describeLock(a, origin)} with a token not above it`,
          });
        }
      }
    }
  }

  /** Another lock of the key granted after `lock` was, and before `before`: a reclaim must then fail. */
  const regrantedBetween = (lock: LockRecord, before: number): LockRecord | undefined =>
    (byKey.get(lock.key) ?? []).find(
      (other) =>
        other.id !== lock.id &&
        other.callStart > lock.grantedAt + options.clockSlackMs &&
        other.grantedAt + options.clockSlackMs < before,
    );

  const completes = history.calls.filter((c) => c.op === 'complete');
  for (const call of completes) {
    const lock = call.lockId ? lockById.get(call.lockId) : undefined;
    if (!lock || call.heldAtCall || call.outcome !== 'ok') continue;
    const other = regrantedBetween(lock, call.start);
    if (other) {
      violations.push({
        rule: 'late-completion-after-regrant',
        detail: `complete() of ${describeLock(lock, origin)} at ${at(call.start)} ms answered ok although ${describeLock(other, origin)} was granted since`,
      });
    }
  }

  for (const call of history.calls) {
    if (call.op !== 'acquire' || call.end === undefined) continue;
    const end = call.end;
    if (call.outcome === 'done') {
      // A marker exists only if a complete() of the key was sent by a valid holder (held when sent,
      // or a late one that may have reclaimed it: nobody granted the key since).
      const justified = completes.some((c) => {
        const lock = c.lockId ? lockById.get(c.lockId) : undefined;
        if (!lock || lock.idempotencyKey !== call.idempotencyKey || c.start > end + options.clockSlackMs)
          return false;
        return c.heldAtCall === true || c.outcome === 'ok' || !regrantedBetween(lock, c.start);
      });
      if (!justified) {
        violations.push({
          rule: 'done-without-completion',
          detail: `acquire of ${call.key} (${call.idempotencyKey}) by actor ${call.actor} answered 'done' at ${at(end)} ms, but no valid holder had completed it`,
        });
      }
    }
    if (call.outcome === 'granted') {
      const before = completes.find((c) => {
        const lock = c.lockId ? lockById.get(c.lockId) : undefined;
        return (
          lock?.idempotencyKey === call.idempotencyKey &&
          c.outcome === 'ok' &&
          c.end !== undefined &&
          c.end + options.clockSlackMs < call.start
        );
      });
      if (before) {
        violations.push({
          rule: 'granted-after-completion',
          detail: `acquire of ${call.key} (${call.idempotencyKey}) by actor ${call.actor} at ${at(call.start)} ms was granted (${call.lockId}) after complete() of ${before.lockId} answered ok at ${at(before.end ?? 0)} ms`,
        });
      }
    }
  }

  for (const call of history.calls) {
    const what = `${call.op}(${call.key}${call.lockId ? `, ${call.lockId}` : ''}) by actor ${call.actor} at ${at(call.start)} ms`;
    if (call.end === undefined) {
      violations.push({ rule: 'call-unsettled', detail: `${what} never settled` });
      continue;
    }
    const stopped = history.stops
      .filter((s) => s.actor === call.actor)
      .reduce((sum, s) => sum + Math.max(0, Math.min(s.to, call.end ?? 0) - Math.max(s.from, call.start)), 0);
    const took = call.end - call.start - stopped;
    if (took > call.boundMs + options.boundSlackMs) {
      violations.push({
        rule: 'call-unbounded',
        detail: `${what} took ${fmt(took)} ms (not counting ${fmt(stopped)} ms stopped), bound ${call.boundMs} ms`,
      });
    }
  }

  for (const escaped of history.escaped) violations.push({ rule: 'escaped', detail: escaped });
  return violations;
}

/** The history as lines, oldest first, for a failure's trail. */
export function describeHistory(history: History): string {
  const origin = Math.min(...history.calls.map((c) => c.start), Number.POSITIVE_INFINITY);
  const lines = [
    ...history.calls.map((c) => ({
      at: c.start,
      text: `actor ${c.actor} ${c.op}(${c.key}${c.lockId ? `, ${c.lockId}` : ''}${c.claimExpired ? ', claimExpired' : ''}) -> ${c.outcome ?? 'unsettled'}${c.end !== undefined ? ` at ${fmt(c.end - origin)}` : ''}${c.heldAtCall === false ? ' (sent late)' : ''}`,
    })),
    ...history.locks.map((l) => ({ at: l.grantedAt, text: `  lock ${describeLock(l, origin)}` })),
    ...(history.notes ?? []).map((n) => ({ at: n.at, text: `* ${n.text}` })),
    ...history.stops.map((s) => ({
      at: s.from,
      text: `actor ${s.actor} stopped until ${fmt(s.to - origin)}`,
    })),
  ].sort((a, b) => a.at - b.at);
  return lines.map((l) => `${fmt(l.at - origin).padStart(8)} ms  ${l.text}`).join('\n');
}
