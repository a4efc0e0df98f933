/**
 * One Redlock instance in its own process, driven over IPC by the schedule tests
 * (test/property/redlock-schedules.test.ts), so that it can be stopped (SIGSTOP) past its locks'
 * validity while the others go on. It records every call and every lock it is granted, in the shared
 * monotonic clock (see lock-history.ts), and sends its history when told to finish.
 *
 *   fork('test/property/lock-actor.ts')   messages in: ActorCommand   messages out: ActorReply
 *
 * Imports only helpers that do not load vitest.
 */
import { Redis } from 'ioredis';
import { isLock, type Lock, Redlock, type RedlockOptions } from '../../src/index.ts';
import { silentLogger } from '../helpers/lock.ts';
import { type ActorHistory, type CallRecord, type LockRecord, sharedNow, toShared } from './lock-history.ts';

export interface ActorInit {
  readonly actor: number;
  readonly ports: readonly number[];
  readonly redlock: Pick<
    RedlockOptions,
    'ttlMs' | 'commandTimeoutMs' | 'connectTimeoutMs' | 'retryDelayMs' | 'retryJitterMs' | 'driftFactor'
  >;
  /** ioredis' autoResendUnfulfilledCommands: resend what was unanswered at a disconnect after reconnecting. */
  readonly resend: boolean;
  /** ioredis' maxRetriesPerRequest (null: forever). */
  readonly maxRetriesPerRequest: number | null;
  /** Sabotage, to show the checker catches it: record every deadline this much later than it is. */
  readonly overstateValidityMs?: number;
}

export type ActorCommand =
  | { readonly cmd: 'init'; readonly init: ActorInit }
  | {
      readonly cmd: 'acquire';
      readonly key: string;
      readonly idempotencyKey: string;
      readonly retryCount: number;
      /** What the holder does with a granted lock once its work took `afterMs`, as a handler would. */
      readonly afterWork?: AfterWork | undefined;
    }
  | { readonly cmd: 'release' }
  | { readonly cmd: 'complete'; readonly claimExpired: boolean }
  | { readonly cmd: 'extend' }
  | { readonly cmd: 'finish'; readonly settleMs: number };

export interface AfterWork {
  readonly action: 'release' | 'complete';
  readonly afterMs: number;
  readonly claimExpired: boolean;
}

export type ActorReply =
  | { readonly reply: 'ready'; readonly actor: number }
  | { readonly reply: 'history'; readonly history: ActorHistory; readonly unsettled: number };

interface Held {
  readonly lock: Lock;
  readonly record: LockRecord;
  /** A release or complete was called on it: no further one is. */
  ended: boolean;
}

let actor = -1;
let redlock: Redlock | undefined;
let options: ActorInit['redlock'] = {};
let overstateMs = 0;
let held: Held[] = [];
let calls: CallRecord[] = [];
let locks: LockRecord[] = [];
let escaped: string[] = [];
let nextLock = 0;
const inflight = new Set<Promise<unknown>>();

process.on('unhandledRejection', (reason) => {
  escaped.push(`actor ${actor}: unhandled rejection: ${String((reason as Error)?.stack ?? reason)}`);
});
process.on('uncaughtException', (error) => {
  escaped.push(`actor ${actor}: uncaught exception: ${String(error?.stack ?? error)}`);
});
// The parent went away (a crashed test run): do not linger.
process.on('disconnect', () => process.exit(0));

function send(reply: ActorReply): void {
  process.send?.(reply);
}

/** How long each call may take by the engine's own bounds (every node call is bounded by the command timeout). */
function boundOf(op: CallRecord['op'], retryCount = 0): number {
  const command = options.commandTimeoutMs ?? 0;
  const connect = options.connectTimeoutMs ?? 0;
  const roundTrip = connect + command;
  switch (op) {
    case 'acquire': {
      // Per attempt: the acquire, a fence raise, the rollback is not waited for; retries wait in between.
      const attempts = retryCount + 1;
      const pause = (options.retryDelayMs ?? 0) + (options.retryJitterMs ?? 0);
      return attempts * 2 * roundTrip + retryCount * pause;
    }
    case 'release':
    case 'extend':
      return roundTrip;
    case 'complete':
      // Reclaim, complete, then the release of what was not marked.
      return 3 * roundTrip;
  }
}

function track<T>(call: CallRecord, work: () => Promise<T>, settle: (value: T) => void): void {
  calls.push(call);
  const done = work().then(
    (value) => {
      call.end = sharedNow();
      settle(value);
    },
    (error: unknown) => {
      call.end = sharedNow();
      call.outcome = `threw: ${String((error as Error)?.message ?? error)}`;
    },
  );
  inflight.add(done);
  void done.finally(() => inflight.delete(done));
}

/** The oldest lock not yet released or completed by us (lost ones too: a late complete is the point). */
function oldestOpen(): Held | undefined {
  return held.find((h) => !h.ended);
}

/** A lock's deadline in the shared clock (overstated only when sabotaged). */
function deadlineOf(lock: Lock): number {
  return toShared(lock.deadline) + overstateMs;
}

function endOf(h: Held): void {
  h.ended = true;
  h.record.endCallAt ??= sharedNow();
}

async function init(config: ActorInit): Promise<void> {
  if (redlock) await redlock.quit();
  actor = config.actor;
  options = config.redlock;
  overstateMs = config.overstateValidityMs ?? 0;
  held = [];
  calls = [];
  locks = [];
  escaped = [];
  const clients = config.ports.map((port) => {
    const client = new Redis({
      host: '127.0.0.1',
      port,
      connectTimeout: 200,
      retryStrategy: () => 50,
      maxRetriesPerRequest: config.maxRetriesPerRequest,
      autoResendUnfulfilledCommands: config.resend,
    });
    // Faults are the point: connection errors are expected.
    client.on('error', () => undefined);
    return client;
  });
  await Promise.all(
    clients.map(
      (client) =>
        new Promise<void>((resolve) => {
          if (client.status === 'ready') resolve();
          else client.once('ready', () => resolve());
        }),
    ),
  );
  redlock = new Redlock(clients, { ...config.redlock, logger: silentLogger });
}

function acquire(key: string, idempotencyKey: string, retryCount: number, afterWork?: AfterWork): void {
  const engine = redlock as Redlock;
  const call: CallRecord = {
    actor,
    op: 'acquire',
    key,
    idempotencyKey,
    start: sharedNow(),
    boundMs: boundOf('acquire', retryCount),
  };
  track(
    call,
    () => engine.acquireMany([{ key, idempotencyKey }], { retryCount }),
    ([result]) => {
      if (!result || !isLock(result)) {
        call.outcome = result?.reason ?? 'none';
        return;
      }
      const id = `a${actor}.${nextLock++}`;
      const record: LockRecord = {
        id,
        actor,
        key,
        idempotencyKey,
        token: result.fencingToken,
        callStart: call.start,
        grantedAt: call.end ?? sharedNow(),
        deadline: deadlineOf(result),
      };
      call.outcome = 'granted';
      call.lockId = id;
      const h: Held = { lock: result, record, ended: false };
      result.signal.addEventListener(
        'abort',
        () => {
          record.abortedAt = sharedNow();
          record.abortReason = String((result.signal.reason as Error)?.message ?? result.signal.reason);
          record.deadline = deadlineOf(result);
        },
        { once: true },
      );
      locks.push(record);
      held.push(h);
      if (afterWork) {
        setTimeout(() => {
          if (h.ended) return;
          if (afterWork.action === 'release') release(h);
          else complete(h, afterWork.claimExpired);
        }, afterWork.afterMs);
      }
    },
  );
}

function release(h: Held | undefined = oldestOpen()): void {
  if (!h) return;
  endOf(h);
  h.record.deadline = deadlineOf(h.lock);
  const call: CallRecord = {
    actor,
    op: 'release',
    key: h.lock.key,
    idempotencyKey: h.lock.idempotencyKey,
    lockId: h.record.id,
    start: sharedNow(),
    boundMs: boundOf('release'),
  };
  track(
    call,
    () => h.lock.release(),
    () => {
      call.outcome = 'done';
    },
  );
}

function complete(h: Held | undefined, claimExpired: boolean): void {
  if (!h) return;
  const engine = redlock as Redlock;
  const heldAtCall = h.lock.isHeld;
  endOf(h);
  h.record.deadline = deadlineOf(h.lock);
  const call: CallRecord = {
    actor,
    op: 'complete',
    key: h.lock.key,
    idempotencyKey: h.lock.idempotencyKey,
    lockId: h.record.id,
    start: sharedNow(),
    heldAtCall,
    claimExpired,
    boundMs: boundOf('complete'),
  };
  track(
    call,
    () => engine.completeMany([h.lock], { claimExpired }),
    ([ok]) => {
      call.outcome = ok ? 'ok' : 'not-ok';
    },
  );
}

function extend(): void {
  const h = held.find((x) => !x.ended && x.lock.state === 'held');
  if (!h) return;
  const call: CallRecord = {
    actor,
    op: 'extend',
    key: h.lock.key,
    idempotencyKey: h.lock.idempotencyKey,
    lockId: h.record.id,
    start: sharedNow(),
    boundMs: boundOf('extend'),
  };
  track(
    call,
    () => h.lock.extend(),
    () => {
      call.outcome = 'done';
    },
  );
}

/** Waits for the calls in flight (at most `settleMs`), releases what is still open, and reports. */
async function finish(settleMs: number): Promise<void> {
  const settled = (ms: number) =>
    Promise.race([Promise.allSettled([...inflight]), new Promise((r) => setTimeout(r, ms))]);
  await settled(settleMs);
  while (oldestOpen()) release(oldestOpen());
  await settled(settleMs);
  send({ reply: 'history', history: { actor, locks, calls, escaped }, unsettled: inflight.size });
}

process.on('message', (message: ActorCommand) => {
  switch (message.cmd) {
    case 'init':
      init(message.init).then(
        () => send({ reply: 'ready', actor }),
        (error: unknown) => escaped.push(`actor ${actor}: init failed: ${String(error)}`),
      );
      return;
    case 'acquire':
      acquire(message.key, message.idempotencyKey, message.retryCount, message.afterWork);
      return;
    case 'release':
      release();
      return;
    case 'complete':
      complete(oldestOpen(), message.claimExpired);
      return;
    case 'extend':
      extend();
      return;
    case 'finish':
      void finish(message.settleMs);
      return;
  }
});
