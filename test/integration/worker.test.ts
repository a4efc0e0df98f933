import { afterEach, describe, expect, it } from 'vitest';
import { POISON_ATTRIBUTES } from '../../src/index.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { type RecordedEvents, useWorkerFixture } from '../helpers/worker.ts';

describe('Worker', () => {
  const { env, workers, newLedger } = useWorkerFixture();

  afterEach(() => workers.stopAll());

  const startWorker = workers.start;

  it('processes every message once, deletes it, and gives the handler its context', async () => {
    const { queueUrl, queueName } = env.createQueue('happy');
    const ledger = newLedger('happy');
    const handler = new LedgerHandler(ledger);
    const { events } = await startWorker(handler, queueUrl);
    const sent = jobs(25, 'h');
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(async () => (await ledger.report(sent.map((j) => j.id))).applied === 25, 15_000);
    // Events follow the delete's answer, which may come a moment after the queue looks empty.
    await eventually(async () => events.message_processed.length === 25 && env.counts(queueName).total === 0);
    const report = await ledger.report(sent.map((j) => j.id));
    expect(report).toMatchObject({ lost: 0, appliedTwice: 0, concurrentRuns: 0, runsStarted: 25 });
    expect(handler.seen.every((s) => s.receiveCount === 1 && s.fencingToken > 0 && !s.aborted)).toBe(true);
  });

  it('suppresses forced duplicate deliveries: every effect exactly once (visibility 1 s, handler 2.5 s, heartbeat off)', async () => {
    const { queueUrl, queueName } = env.createQueue('dupes', { visibilityTimeoutSec: 1 });
    const ledger = newLedger('dupes');
    const handlers = [new LedgerHandler(ledger), new LedgerHandler(ledger)];
    const options = {
      visibilityTimeoutSec: 1,
      extendVisibility: false,
      concurrency: 2,
      batchSize: 5,
    } as const;
    const workers = await Promise.all(handlers.map((h) => startWorker(h, queueUrl, options)));
    // 10 messages, 4 pollers of 5: two pollers stay free to receive the redeliveries.
    const sent = jobs(10, 'd', { workMs: 2_500 });
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(async () => env.counts(queueName).total === 0, 40_000);
    const report = await ledger.report(sent.map((j) => j.id));
    expect(report).toMatchObject({ sent: 10, applied: 10, lost: 0, appliedTwice: 0, concurrentRuns: 0 });
    const count = (name: keyof RecordedEvents): number =>
      workers.reduce((n, w) => n + w.events[name].length, 0);
    // Events follow the delete's answer, which may come a moment after the queue looks empty.
    await eventually(async () => count('message_processed') >= 10, 5_000).catch(() => undefined);
    expect(count('message_processed')).toBe(10);
    expect(count('lock_contended')).toBeGreaterThan(0);
    expect(count('duplicate_skipped')).toBeGreaterThan(0);
    expect(count('lock_lost')).toBe(0);
  });

  it('dead-letters poison with its reason; the handler never runs on it; nothing else is affected', async () => {
    const { queueUrl, queueName, dlqUrl } = env.createQueue('poison', { maxReceiveCount: 5 });
    const ledger = newLedger('poison');
    const handler = new LedgerHandler(ledger);
    const { events } = await startWorker(handler, queueUrl);
    const good = jobs(6, 'ok');
    await sendMessages(env.sqs, queueUrl, [
      ...good.slice(0, 3),
      { body: '{"id": "broken' }, // malformed JSON: hydrate throws
      { body: JSON.stringify({ nope: true }) }, // valid JSON, invalid job: hydrate returns null
      ...good.slice(3),
    ]);

    await eventually(async () => env.counts(queueName).total === 0, 15_000);
    const dead = await drainQueue(env.sqs, dlqUrl as string);
    expect(dead).toHaveLength(2);
    const reasons = dead.map((m) => m.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).sort();
    expect(reasons[0]).toBe('hydrate returned null');
    expect(reasons[1]).toMatch(/^hydrate threw: .*JSON/);
    const broken = dead.find((m) => m.Body === '{"id": "broken');
    expect(JSON.parse(broken?.MessageAttributes?.[POISON_ATTRIBUTES.error]?.StringValue ?? '{}').name).toBe(
      'SyntaxError',
    );
    expect(broken?.MessageAttributes?.[POISON_ATTRIBUTES.sourceMessageId]?.StringValue).toBeTruthy();

    expect(handler.order).toHaveLength(6); // never ran on poison
    expect(await ledger.report(good.map((j) => j.id))).toMatchObject({ applied: 6, appliedTwice: 0 });
    expect(events.poison_message?.every((e) => e.deadLettered)).toBe(true);
  });

  it('settles poison at once, not after the slowest handler of its batch: it is dead-lettered once', async () => {
    const { queueUrl, queueName, dlqUrl } = env.createQueue('poison-slow', {
      maxReceiveCount: 5,
      visibilityTimeoutSec: 1,
    });
    const ledger = newLedger('poison-slow');
    // Two workers: if the poison waited for the 2.5 s job, its 1 s visibility would lapse and the
    // other worker would dead-letter a second copy.
    for (let i = 0; i < 2; i++)
      await startWorker(new LedgerHandler(ledger), queueUrl, { visibilityTimeoutSec: 1 });
    const [slow] = jobs(1, 'slow', { workMs: 2_500 });
    await sendMessages(env.sqs, queueUrl, [slow as { body: string }, { body: 'not json' }]);

    await eventually(async () => (await ledger.report(['slow-0'])).applied === 1, 15_000);
    await eventually(async () => env.counts(queueName).total === 0, 15_000);
    await sleep(1_500); // time for a redelivered copy to show up, if there were one
    const dead = await drainQueue(env.sqs, dlqUrl as string);
    expect(dead.map((m) => m.Body)).toEqual(['not json']);
  });

  it('completes and deletes each message as its handler finishes: a slow one holds none of its batch back', async () => {
    const { queueUrl, queueName } = env.createQueue('slow-neighbour');
    const ledger = newLedger('slow-neighbour');
    const quick = jobs(4, 'quick');
    const [slow] = jobs(1, 'slow', { workMs: 3_000 });
    // Sent before the worker starts, so one receive takes all five as one batch.
    await sendMessages(env.sqs, queueUrl, [...quick, slow as { body: string; id: string }]);
    const { events, redlock } = await startWorker(new LedgerHandler(ledger), queueUrl);

    await eventually(async () => events.message_processed.length === 4, 2_000);
    // The slow handler is still running: the quick ones are marked complete and gone from the queue.
    expect((await ledger.report(['slow-0'])).applied).toBe(0);
    expect(events.message_processed.every((e) => e.marked)).toBe(true);
    expect(env.counts(queueName).total).toBe(1);
    const [duplicate] = await redlock.acquireMany([events.message_processed[0]?.lockKey ?? '?'], {
      retryCount: 0,
    });
    expect(duplicate && 'reason' in duplicate && duplicate.reason).toBe('done');

    await eventually(async () => events.message_processed.length === 5, 10_000);
    const report = await ledger.report([...quick, slow].map((j) => j?.id ?? ''));
    expect(report).toMatchObject({ applied: 5, lost: 0, appliedTwice: 0 });
  });

  it('retries a failing handler with growing visibility, then the queue redrives it to the DLQ', async () => {
    const { queueUrl, queueName, dlqUrl } = env.createQueue('failing', { maxReceiveCount: 3 });
    const ledger = newLedger('failing');
    const handler = new LedgerHandler(ledger);
    const { events } = await startWorker(handler, queueUrl, { retryBaseSec: 0.5 });
    const [bad] = jobs(1, 'bad', { fail: true });
    const fine = jobs(3, 'fine');
    await sendMessages(env.sqs, queueUrl, [bad as { body: string }, ...fine]);

    await eventually(async () => env.counts(queueName).total === 0, 20_000);
    const errors = events.handler_error ?? [];
    expect(errors.map((e) => e.receiveCount)).toEqual([1, 2, 3]);
    const delays = errors.map((e) => e.retryInSec);
    expect(delays[2]).toBeGreaterThan(delays[0] ?? Number.POSITIVE_INFINITY);
    expect([...delays].sort((a, b) => a - b)).toEqual(delays);
    const dead = await drainQueue(env.sqs, dlqUrl as string);
    expect(dead.map((m) => JSON.parse(m.Body ?? '{}').id)).toEqual(['bad-0']);
    expect(await ledger.report(fine.map((j) => j.id))).toMatchObject({ applied: 3, appliedTwice: 0 });
  });
});
