import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, isLock, Lock, LockLostError, type Redlock } from '../../src/index.ts';
import { ADOPT_SCRIPT } from '../../src/lock/adopt.ts';
import {
  DELAY_MARGIN_MS,
  type DispatchResult,
  LOCK_HANDOFF_ATTRIBUTES,
  lockHandoffAttributes,
  Publisher,
} from '../../src/runtime/publisher.ts';
import { LedgerHandler } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually, redlockOver, scriptCalls, silentLogger, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';
import { workerFactory } from '../helpers/worker.ts';

describe('Publisher with lock handoff', () => {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  const env = useSqs();
  const factory = workerFactory(redis, env);
  /** Shared by the publisher and the workers. */
  const handoffSecret = 'publisher-test-handoff-secret-0123456789';
  /** Workers that trust the publisher's handoffs. */
  const workers = {
    start: (...[handler, queueUrl, options]: Parameters<typeof factory.start>) =>
      factory.start(handler, queueUrl, { handoffSecret, ...options }),
    stopAll: () => factory.stopAll(),
  };
  let ledgerClient: Redis;
  /** The scheduler's own Redlock (own connections), as in a separate process. */
  let redlock: Redlock;

  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0] as Redis;
    redlock = redlockOver(redis).redlock;
  });
  afterEach(() => workers.stopAll());
  afterAll(() => redlock.quit());

  const publisherFor = (queueUrl: string): Publisher =>
    new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
  const task = (id: string): string => JSON.stringify({ id });
  function sent(result: DispatchResult): Extract<DispatchResult, { dispatched: true }> {
    if (!result.dispatched) throw new Error(`expected a dispatch, got ${JSON.stringify(result)}`);
    return result;
  }

  it('sends a pending task once; the worker adopts its lock (same token), completes it, deletes it; then it is done', async () => {
    const { queueUrl, queueName } = env.createQueue('handoff');
    const publisher = publisherFor(queueUrl);
    const first = sent(await publisher.dispatch({ taskKey: 'report:1', body: task('r1') }));
    expect(first.fencingToken).toBeGreaterThan(0);
    expect(first.validUntil).toBeGreaterThan(Date.now() + 250_000); // the default 5 min pending window

    const second = await publisher.dispatch({ taskKey: 'report:1', body: task('r1') });
    expect(second).toMatchObject({ dispatched: false, reason: 'pending' });
    expect(second.dispatched === false && second.reason === 'pending' && second.retryAfterMs).toBeGreaterThan(
      250_000,
    );
    expect(env.counts(queueName).total).toBe(1);

    const ledger = new Ledger(ledgerClient, 'handoff');
    const handler = new LedgerHandler(ledger); // keys by MessageId: ignored for a handoff
    const { events } = await workers.start(handler, queueUrl);
    await eventually(async () => events.message_processed.length === 1 && env.counts(queueName).total === 0);
    expect(events.message_processed[0]).toMatchObject({
      messageId: first.messageId,
      lockKey: 'report:1',
      fencingToken: first.fencingToken,
      marked: true,
    });
    expect(handler.seen).toEqual([
      { id: 'r1', receiveCount: 1, fencingToken: first.fencingToken, aborted: false },
    ]);
    expect(await ledger.report(['r1'])).toMatchObject({ applied: 1, appliedTwice: 0, runsStarted: 1 });

    // Completed: the marker says the task ran; dispatching it again is refused, nothing is sent.
    expect(await publisher.dispatch({ taskKey: 'report:1', body: task('r1') })).toEqual({
      dispatched: false,
      reason: 'done',
    });
    expect(env.counts(queueName).total).toBe(0);
    // A new run of the task is a new key.
    sent(await publisher.dispatch({ taskKey: 'report:2', body: task('r2') }));
    await eventually(async () => events.message_processed.length === 2 && env.counts(queueName).total === 0);
    expect(events.lock_contended).toHaveLength(0);
  });

  it('releases the lock when SendMessage fails, and rethrows the SDK error', async () => {
    const { queueUrl } = env.createQueue('exists');
    const bogus = queueUrl.replace(/exists$/, 'no-such-queue');
    const publisher = publisherFor(bogus);
    const failure = await publisher
      .dispatch({ taskKey: 'bogus:1', body: task('b1') })
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(Error);
    expect(failure).not.toBeInstanceOf(ConfigError);
    expect((failure as { $metadata?: unknown }).$metadata).toBeDefined(); // an AWS SDK service error

    // Released at once: not pending, not held.
    const lock = await redlock.acquire('bogus:1', { retryCount: 0 });
    await lock.release();
    const retry = publisherFor(queueUrl);
    sent(await retry.dispatch({ taskKey: 'bogus:1', body: task('b1') }));
  });

  it('runs an expired handoff under a plain acquire (a new token) when no one holds the key', async () => {
    const { queueUrl, queueName } = env.createQueue('expired');
    const publisher = publisherFor(queueUrl);
    const dispatched = sent(await publisher.dispatch({ taskKey: 'exp:1', body: task('e1'), ttlMs: 400 }));
    await sleep(600); // the worker starts after the pending window

    const ledger = new Ledger(ledgerClient, 'expired');
    const handler = new LedgerHandler(ledger);
    const { events } = await workers.start(handler, queueUrl);
    await eventually(async () => events.message_processed.length === 1 && env.counts(queueName).total === 0);
    const processed = events.message_processed[0];
    expect(processed?.lockKey).toBe('exp:1');
    expect(processed?.fencingToken).toBeGreaterThan(dispatched.fencingToken);
    expect(await ledger.report(['e1'])).toMatchObject({ applied: 1, appliedTwice: 0, runsStarted: 1 });
  });

  it('runs a task exactly once when its handoff expired and the scheduler dispatched it again', async () => {
    const { queueUrl, queueName } = env.createQueue('redispatched');
    const publisher = publisherFor(queueUrl);
    const first = sent(await publisher.dispatch({ taskKey: 'again:1', body: task('a1'), ttlMs: 400 }));
    await sleep(600);
    // No longer pending: a scheduler may send it again. Two messages for one task are in the queue.
    const second = sent(await publisher.dispatch({ taskKey: 'again:1', body: task('a1') }));
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(env.counts(queueName).total).toBe(2);

    const ledger = new Ledger(ledgerClient, 'redispatched');
    const handler = new LedgerHandler(ledger);
    const { events } = await workers.start(handler, queueUrl, { retryBaseSec: 0.5 });
    await eventually(
      async () => env.counts(queueName).total === 0 && events.duplicate_skipped.length === 1,
      20_000,
    );
    expect(events.message_processed).toHaveLength(1);
    // The live handoff runs; the expired one waits for it (held, looking again after one lock TTL, not
    // the 5 min pending window), then is acked as a duplicate.
    expect(events.message_processed[0]).toMatchObject({
      lockKey: 'again:1',
      fencingToken: second.fencingToken,
    });
    expect(await ledger.report(['a1'])).toMatchObject({ applied: 1, appliedTwice: 0, runsStarted: 1 });
  });

  it('never runs a handoff twice at once when SQS redelivers it mid-work (visibility 1 s, handler 2.5 s)', async () => {
    const { queueUrl, queueName } = env.createQueue('redelivered', { visibilityTimeoutSec: 1 });
    const publisher = publisherFor(queueUrl);
    const ids = ['m0', 'm1', 'm2'];
    for (const id of ids) {
      sent(await publisher.dispatch({ taskKey: `mid:${id}`, body: JSON.stringify({ id, workMs: 2_500 }) }));
    }
    const ledger = new Ledger(ledgerClient, 'redelivered');
    const options = {
      visibilityTimeoutSec: 1,
      extendVisibility: false,
      concurrency: 2,
      batchSize: 2,
    } as const;
    const started = await Promise.all(
      [new LedgerHandler(ledger), new LedgerHandler(ledger)].map((h) => workers.start(h, queueUrl, options)),
    );
    await eventually(async () => env.counts(queueName).total === 0, 40_000);
    const report = await ledger.report(ids);
    expect(report).toMatchObject({ applied: 3, appliedTwice: 0, concurrentRuns: 0, runsStarted: 3 });
    const count = (name: 'message_processed' | 'lock_contended' | 'lock_lost'): number =>
      started.reduce((n, w) => n + w.events[name].length, 0);
    // Events follow the delete's answer, which may come a moment after the queue looks empty.
    await eventually(async () => count('message_processed') >= 3, 5_000).catch(() => undefined);
    expect(count('message_processed')).toBe(3);
    expect(count('lock_contended')).toBeGreaterThan(0); // the redeliveries met the adopted lock
    expect(count('lock_lost')).toBe(0);
  });

  it('runs a message with a partial or malformed handoff as an ordinary message, under its own lockKey', async () => {
    const { queueUrl, queueName } = env.createQueue('malformed', { maxReceiveCount: 5 });
    const ledger = new Ledger(ledgerClient, 'malformed');
    const handler = new LedgerHandler(ledger); // keys by MessageId
    const { events } = await workers.start(handler, queueUrl);
    const signed = lockHandoffAttributes({ key: 'malformed:1', value: 'x', fencingToken: 7 }, handoffSecret);
    const attr = (value: string) => ({ DataType: 'String', StringValue: value });
    const ids = await sendMessages(env.sqs, queueUrl, [
      { body: task('p1'), attributes: { [LOCK_HANDOFF_ATTRIBUTES.key]: attr('malformed:1') } },
      { body: task('p2'), attributes: { ...signed, [LOCK_HANDOFF_ATTRIBUTES.value]: attr('!7') } },
      { body: task('p3'), attributes: { ...signed, [LOCK_HANDOFF_ATTRIBUTES.fencingToken]: attr('7.5') } },
    ]);
    await eventually(async () => events.message_processed.length === 3 && env.counts(queueName).total === 0);
    expect(events.poison_message).toHaveLength(0);
    expect(events.message_processed.map((e) => e.lockKey).sort()).toEqual([...ids].sort());
    expect(await ledger.report(['p1', 'p2', 'p3'])).toMatchObject({ applied: 3, appliedTwice: 0 });
    // None of them touched the key they named.
    const lock = await redlock.acquire('malformed:1', { retryCount: 0 });
    await lock.release();
  });

  it('Redlock.adoptMany: one round trip per node; the handed-over value proves ownership only once', async () => {
    await Promise.all(redis.clients().map((c) => c.script('LOAD', ADOPT_SCRIPT.lua)));
    const grants = (
      await redlock.acquireMany(['ad:1', 'ad:2', 'ad:3'], { ttlMs: 10_000, autoExtend: false })
    ).filter(isLock);
    const handoffs = grants.map((l) => ({ key: l.key, value: l.value, fencingToken: l.fencingToken }));
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    const adopted = await redlock.adoptMany(handoffs, { ttlMs: 2_000, autoExtend: false });
    await sleep(20);
    expect(await scriptCalls(redis)).toEqual([1, 1, 1]);
    expect(adopted.every((r) => r instanceof Lock)).toBe(true);
    const locks = adopted as Lock[];
    expect(locks.map((l) => l.fencingToken)).toEqual(grants.map((g) => g.fencingToken));
    expect(locks.every((l, i) => l.value !== handoffs[i]?.value && l.isHeld)).toBe(true);

    // A second adoption with the same handoff (a redelivered message) meets another owner.
    const again = await redlock.adoptMany(handoffs);
    expect(again.map((r) => (r instanceof Lock ? 'lock' : r.reason))).toEqual(['held', 'held', 'held']);
    // The adopted locks work like acquired ones: extend, complete, release.
    await locks[0]?.extend();
    expect(await locks[0]?.complete({ ttlMs: 5_000 })).toBe(true);
    await locks[1]?.release();
    const after = await redlock.adoptMany(handoffs.slice(0, 2));
    expect(after.map((r) => (r instanceof Lock ? 'lock' : r.reason))).toEqual(['done', 'expired']);
    await expect(redlock.adopt(handoffs[1] as (typeof handoffs)[number])).rejects.toBeInstanceOf(
      LockLostError,
    );
    await expect(redlock.adopt({ key: 'ad:1', value: '!1', fencingToken: 1 })).rejects.toBeInstanceOf(
      ConfigError,
    );
    await locks[2]?.release();
    // The original grants were handed over: their owner values no longer hold anything.
    await redlock.releaseMany(grants);
  });

  it('refuses a per-message delaySeconds on a FIFO queue before taking the lock', async () => {
    const { queueUrl } = env.createQueue('delay-fifo', { fifo: true });
    const publisher = publisherFor(queueUrl);
    const failure = await publisher
      .dispatch({ taskKey: 'fifo-delay:1', body: task('f1'), delaySeconds: 5, messageGroupId: 'g' })
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as ConfigError).message).toMatch(/delaySeconds.*FIFO/);
    // Nothing was locked: the same task dispatches at once without the delay (0 is allowed too).
    sent(
      await publisher.dispatch({
        taskKey: 'fifo-delay:1',
        body: task('f1'),
        delaySeconds: 0,
        messageGroupId: 'g',
      }),
    );
  });

  it("keeps the pending window a margin above the delay, the queue's own DelaySeconds included", async () => {
    const { queueUrl } = env.server.createQueue('delay-queue', { attributes: { DelaySeconds: '2' } });
    const publisher = publisherFor(queueUrl);
    // The queue's 2 s delay applies to a message given none: a 1.5 s window would expire before it is visible.
    await expect(publisher.dispatch({ taskKey: 'qd:1', body: task('q1'), ttlMs: 1_500 })).rejects.toThrow(
      /ttlMs.*queue's DelaySeconds/,
    );
    // Above the delay but within the margin a worker needs to receive and adopt it.
    await expect(
      publisher.dispatch({ taskKey: 'qd:1', body: task('q1'), ttlMs: 2_000 + DELAY_MARGIN_MS - 1 }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(
      publisher.dispatch({ taskKey: 'qd:1', body: task('q1'), delaySeconds: 3, ttlMs: 4_000 }),
    ).rejects.toThrow(/ttlMs.*delaySeconds/);
    // A message's own delaySeconds: 0 replaces the queue's: sent, and visible at once.
    sent(await publisher.dispatch({ taskKey: 'qd:1', body: task('q1'), delaySeconds: 0, ttlMs: 1_000 }));
    const { Messages } = await env.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0, MaxNumberOfMessages: 1 }),
    );
    expect(Messages?.map((m) => m.Body)).toEqual([task('q1')]);
  });
});
