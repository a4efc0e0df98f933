import { describe, expect, it } from 'vitest';
import { type CallRecord, checkHistory, type History, type LockRecord } from './lock-history.ts';

const options = { clockSlackMs: 1, boundSlackMs: 100 };

function lock(id: string, fields: Partial<LockRecord> & { grantedAt: number; deadline: number }): LockRecord {
  return {
    id,
    actor: 0,
    key: 'k',
    idempotencyKey: 'k',
    token: 1,
    callStart: fields.grantedAt - 2,
    ...fields,
  };
}

function call(fields: Partial<CallRecord> & { op: CallRecord['op']; start: number }): CallRecord {
  return { actor: 0, key: 'k', idempotencyKey: 'k', boundMs: 100, end: fields.start + 2, ...fields };
}

function history(locks: LockRecord[], calls: CallRecord[], extra: Partial<History> = {}): History {
  return { locks, calls, escaped: [], stops: [], ...extra };
}

const rules = (h: History): string[] => checkHistory(h, options).map((v) => v.rule);

describe('checkHistory', () => {
  it('accepts holds that follow each other, with increasing tokens', () => {
    const a = lock('a', { grantedAt: 10, deadline: 400, endCallAt: 100, token: 5 });
    const b = lock('b', { grantedAt: 105, deadline: 500, token: 6 });
    expect(rules(history([a, b], [call({ op: 'acquire', start: 8 })]))).toEqual([]);
  });

  it('flags two holds valid at once, and a token that did not increase', () => {
    const a = lock('a', { grantedAt: 10, deadline: 400, token: 5 });
    const b = lock('b', { grantedAt: 200, deadline: 600, token: 5, actor: 1 });
    expect(rules(history([a, b], []))).toEqual(['two-valid-holders', 'fencing-not-increasing']);
  });

  it('ends a hold at its deadline, its loss or its release, whichever comes first', () => {
    const lost = lock('a', { grantedAt: 10, deadline: 400, abortedAt: 50, token: 1 });
    const b = lock('b', { grantedAt: 60, deadline: 600, token: 2 });
    expect(rules(history([lost, b], []))).toEqual([]);
    // Its acquire answered after its validity had run out (its process was stopped): never valid, and
    // its grant is not ordered against one made while its call was in flight.
    const stale = lock('c', { callStart: 0, grantedAt: 500, deadline: 450, token: 3 });
    expect(rules(history([stale, lock('d', { grantedAt: 460, deadline: 900, token: 4 })], []))).toEqual([]);
  });

  it("flags a 'done' nobody completed, and accepts one completed by a valid holder", () => {
    const done = call({ op: 'acquire', start: 300, outcome: 'done' });
    const a = lock('a', { grantedAt: 10, deadline: 400, endCallAt: 100 });
    expect(rules(history([a], [done]))).toEqual(['done-without-completion']);
    const completed = call({ op: 'complete', start: 100, lockId: 'a', heldAtCall: true, outcome: 'not-ok' });
    expect(rules(history([a], [completed, done]))).toEqual([]);
  });

  it('flags a late completion that succeeded although the key was granted to another since', () => {
    const a = lock('a', { grantedAt: 10, deadline: 400, endCallAt: 900, token: 1 });
    const b = lock('b', { grantedAt: 500, deadline: 800, endCallAt: 600, token: 2, actor: 1 });
    const late = call({ op: 'complete', start: 900, lockId: 'a', heldAtCall: false, outcome: 'ok' });
    expect(rules(history([a, b], [late]))).toEqual(['late-completion-after-regrant']);
    // A late completion without a regrant in between may legitimately have reclaimed the lock.
    expect(rules(history([a], [late]))).toEqual([]);
  });

  it('flags a grant of an idempotency key after its completion answered ok', () => {
    const a = lock('a', { grantedAt: 10, deadline: 400, endCallAt: 100 });
    const completed = call({ op: 'complete', start: 100, lockId: 'a', heldAtCall: true, outcome: 'ok' });
    const again = call({ op: 'acquire', start: 200, outcome: 'granted', lockId: 'b' });
    const b = lock('b', { grantedAt: 202, deadline: 600, token: 2 });
    expect(rules(history([a, b], [completed, again]))).toEqual(['granted-after-completion']);
    // Another operation under the same lock key has its own marker.
    expect(rules(history([a, b], [completed, { ...again, idempotencyKey: 'k:other' }]))).toEqual([]);
  });

  it('flags calls past their bound or never settled, not counting the time their actor was stopped', () => {
    const slow = call({ op: 'release', start: 0, end: 1_000 });
    expect(rules(history([], [slow]))).toEqual(['call-unbounded']);
    expect(rules(history([], [slow], { stops: [{ actor: 0, from: 50, to: 900 }] }))).toEqual([]);
    expect(rules(history([], [{ ...slow, end: undefined }]))).toEqual(['call-unsettled']);
  });

  it('flags anything that escaped as an unhandled rejection', () => {
    expect(rules(history([], [], { escaped: ['actor 0: unhandled rejection: boom'] }))).toEqual(['escaped']);
  });
});
