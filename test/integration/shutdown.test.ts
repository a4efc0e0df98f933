import { type Message, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { SQSEvent } from 'aws-lambda';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import winston from 'winston';
import { lambdaContext, toRecord } from '../../examples/lambda/invoke.ts';
import { BaseHandler, type HandlerContext, isLock, type Redlock } from '../../src/index.ts';
import { createLambdaHandler } from '../../src/runtime/lambda.ts';
import { type Job, jobs, LedgerHandler } from '../helpers/handlers.ts';
import type { Ledger } from '../helpers/ledger.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** A handler that ignores its signal: it works `workMs` whatever happens, then applies its effect. */
class StubbornHandler extends BaseHandler<Job> {
  readonly ledger: Ledger;
  started = 0;
  finished = 0;

  constructor(ledger: Ledger) {
    super();
    this.ledger = ledger;
  }

  hydrate(message: Message): Job {
    return JSON.parse(message.Body ?? '') as Job;
  }

  async handle(job: Job, ctx: HandlerContext): Promise<void> {
    this.started++;
    await this.ledger.begin(job.id);
    try {
      await sleep(job.workMs ?? 0);
      await this.ledger.apply(job.id, ctx.fencingToken);
    } finally {
      await this.ledger.end(job.id);
      this.finished++;
    }
  }
}

describe('Shutdown', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();

  afterEach(async () => {
    for (const node of redis.nodes) if (!node.isRunning) await node.restart();
    await workers.stopAll();
  });

  describe('Worker.stop past its deadline', () => {
    it('a handler that ignores its signal keeps its lock: stop() resolves, no other worker runs the message meanwhile, its late success is deleted once', async () => {
      const { queueUrl, queueName } = env.createQueue('stop-stubborn');
      const ledger = newLedger('stop-stubborn');
      const handlerA = new StubbornHandler(ledger);
      const a = await workers.start(handlerA, queueUrl);
      const [job] = jobs(1, 'stubborn', { workMs: 2_500 }) as [{ id: string; body: string }];
      await sendMessages(env.sqs, queueUrl, [job]);
      await eventually(async () => handlerA.started === 1, 10_000);
      const handlerB = new StubbornHandler(ledger);
      const b = await workers.start(handlerB, queueUrl);

      const t0 = performance.now();
      await a.worker.stop({ timeoutMs: 300 });
      expect(performance.now() - t0).toBeLessThan(1_500);
      expect(handlerA.finished).toBe(0); // stop() did not wait for it
      expect(a.worker.state).toBe('stopped');

      await eventually(async () => handlerA.finished === 1, 5_000);
      await eventually(async () => env.counts(queueName).total === 0, 5_000);
      expect(await ledger.report([job.id])).toMatchObject({
        applied: 1,
        appliedTwice: 0,
        concurrentRuns: 0,
        runsStarted: 1,
      });
      expect(handlerB.started).toBe(0);
      await eventually(async () => a.events.message_processed.length === 1, 2_000);
      expect(b.events.message_processed).toHaveLength(0);
      expect(a.worker.batchesInFlight).toBe(0); // the abandoned batch settled in the background
    });

    it('a handler that honours its signal settles at once: its message is receivable by another worker at once', async () => {
      const { queueUrl } = env.createQueue('stop-honours', { visibilityTimeoutSec: 60 });
      const handlerA = new LedgerHandler(newLedger('stop-honours-a'));
      const a = await workers.start(handlerA, queueUrl, { visibilityTimeoutSec: 60 });
      const [job] = jobs(1, 'honours', { workMs: 10_000 }) as [{ id: string; body: string }];
      await sendMessages(env.sqs, queueUrl, [job]);
      await eventually(async () => handlerA.order.length === 1, 10_000);

      await a.worker.stop({ timeoutMs: 300 });
      expect(a.events.message_released.map((e) => e.reason)).toEqual(['shutdown']);
      const handlerB = new LedgerHandler(newLedger('stop-honours-b'));
      const t0 = performance.now();
      const b = await workers.start(handlerB, queueUrl);
      await eventually(async () => handlerB.order.length === 1, 1_500);
      expect(performance.now() - t0).toBeLessThan(1_500); // not after the 60 s visibility timeout
      await b.worker.stop({ timeoutMs: 0 });
    });

    it('concurrency 2 with an open long poll: nothing is aborted or bounced, and what stop() let go is receivable by another worker at once after it', async () => {
      const { queueUrl, queueName } = env.createQueue('stop-long-poll');
      const handlerA = new LedgerHandler(newLedger('stop-long-poll-a'));
      const waitTimeSeconds = 3;
      const a = await workers.start(handlerA, queueUrl, { concurrency: 2, waitTimeSeconds });
      // Both pollers are in their long poll before the message arrives: one takes it, one stays idle.
      await sleep(300);
      const [job] = jobs(1, 'long-poll', { workMs: 10_000 }) as [{ id: string; body: string }];
      await sendMessages(env.sqs, queueUrl, [job]);
      await eventually(async () => handlerA.order.length === 1, 10_000);

      const t0 = performance.now();
      await a.worker.stop({ timeoutMs: 300 });
      // It waited for the idle poll (held the message back meanwhile), at most its wait time and a margin.
      expect(performance.now() - t0).toBeLessThan(waitTimeSeconds * 1000 + 3_500);
      expect(env.counts(queueName)).toMatchObject({ ready: 1, inflight: 0 });
      const handlerB = new LedgerHandler(newLedger('stop-long-poll-b'));
      const b = await workers.start(handlerB, queueUrl);
      await eventually(async () => handlerB.order.length === 1, 2_000);
      expect(handlerA.order).toEqual(['long-poll-0']); // A let it go, it did not run it again
      await b.worker.stop({ timeoutMs: 0 });
      // Received twice in all: by A, then by B; A's open poll did not take it back in between.
      expect(handlerB.seen[0]?.receiveCount).toBe(2);
    });

    it('an early settlement that rejects while handlers still run is contained: no unhandled rejection', async () => {
      const { queueUrl, queueName } = env.createQueue('settle-rejects');
      const ledger = newLedger('settle-rejects');
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown): void => {
        unhandled.push(reason);
      };
      process.on('unhandledRejection', onUnhandled);
      try {
        // A log sink that fails on the poison warning makes settling the poison message reject.
        const logger = winston.createLogger({
          format: winston.format((info) => {
            if (/^poison message/.test(String(info.message))) throw new Error('log sink failed');
            return info;
          })(),
          transports: [new winston.transports.Console({ silent: true })],
        });
        // One batch: the poison message is settled at once, while the other's handler still runs.
        const [job] = jobs(1, 'beside-poison', { workMs: 600 }) as [{ id: string; body: string }];
        await sendMessages(env.sqs, queueUrl, [{ body: '{}' }, job]);
        const { events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
          logger,
          deadLetterQueueUrl: false,
          batchSize: 10,
        });
        await eventually(async () => events.message_processed.length === 1, 10_000);
        await sleep(200);
        expect(unhandled).toEqual([]);
        expect(await ledger.report([job.id])).toMatchObject({ applied: 1 });
        expect(env.counts(queueName).total).toBe(1); // the poison message stays for the redrive
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
    });
  });

  describe('Worker pause for quorum loss', () => {
    it('aborts no receive: what it puts back is not swallowed by an aborted long poll, and runs once the quorum is back', async () => {
      const { queueUrl } = env.createQueue('pause-long-poll');
      const ledger = newLedger('pause-long-poll');
      const { events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
        concurrency: 2,
        waitTimeSeconds: 20,
        quorumBackoffSec: 1,
        quorumProbeIntervalMs: 100,
      });
      await sleep(300); // both pollers are in their long poll
      await Promise.all([redis.nodes[0]?.kill(), redis.nodes[1]?.kill()]);
      const [job] = jobs(1, 'paused', { workMs: 10 }) as [{ id: string; body: string }];
      await sendMessages(env.sqs, queueUrl, [job]);
      await eventually(async () => events.polling_paused.length === 1, 5_000);
      // Past the quorum backoff: the message is visible again while the idle poller's receive is open.
      await sleep(2_000);
      await Promise.all([redis.nodes[0]?.restart(), redis.nodes[1]?.restart()]);
      await eventually(async () => events.polling_resumed.length === 1, 5_000);
      // Not after the 30 s visibility of a receive that swallowed it.
      await eventually(async () => (await ledger.report([job.id])).applied === 1, 5_000);
      expect(events.quorum_unavailable.length).toBeGreaterThan(0);
    });
  });

  describe('Lambda safety margin', () => {
    let redlock: Redlock;
    let other: Redlock;
    beforeAll(() => {
      redlock = redlockOver(redis, { ttlMs: 3_000 }).redlock;
      other = redlockOver(redis, { ttlMs: 3_000 }).redlock;
    });
    afterAll(async () => {
      await Promise.all([redlock?.quit(), other?.quit()]);
    });

    it('a handler still running is reported in batchItemFailures and keeps its lock; its late success is completed', async () => {
      const { queueUrl, queueName } = env.createQueue('lambda-stubborn');
      const ledger = newLedger('lambda-stubborn');
      const handler = new StubbornHandler(ledger);
      const invoke = createLambdaHandler(handler, {
        redlock,
        sqs: env.sqs,
        queueUrl,
        logger: silentLogger,
        safetyMarginMs: 500,
        deadLetterQueueUrl: false,
      });
      const processed: string[] = [];
      const duplicates: string[] = [];
      invoke.events.on('message_processed', (e) => processed.push(e.messageId));
      invoke.events.on('duplicate_skipped', (e) => duplicates.push(e.messageId));
      const [job] = jobs(1, 'lambda-stubborn', { workMs: 3_000 }) as [{ id: string; body: string }];
      const [messageId] = (await sendMessages(env.sqs, queueUrl, [job])) as [string];
      const event = await eventOf(queueUrl, queueName, messageId);

      const t0 = performance.now();
      const response = await invoke(event, lambdaContext(1_500));
      expect(performance.now() - t0).toBeLessThan(1_500); // returned before the function's timeout
      expect(response.batchItemFailures).toEqual([{ itemIdentifier: messageId }]);
      expect(handler.finished).toBe(0);

      // The lock is still held while the handler runs: another owner is refused.
      const [second] = await other.acquireMany([messageId], { retryCount: 0 });
      if (second && isLock(second)) await second.release();
      expect(second && !isLock(second) && second.reason).toBe('held');
      // A redelivery in the meantime does not run it.
      const again = await invoke(event, lambdaContext(10_000));
      expect(again.batchItemFailures).toEqual([{ itemIdentifier: messageId }]);
      expect(handler.started).toBe(1);

      // It settles as usual once its handler is done: completed, so the next redelivery is a duplicate.
      await eventually(async () => processed.length === 1, 5_000);
      const last = await invoke(event, lambdaContext(10_000));
      expect(last.batchItemFailures).toEqual([]);
      expect(duplicates).toEqual([messageId]);
      expect(await ledger.report([job.id])).toMatchObject({ applied: 1, concurrentRuns: 0, runsStarted: 1 });
    });
  });

  /** Receives `messageId` and builds the SQS event Lambda would hand the function. */
  async function eventOf(queueUrl: string, queueName: string, messageId: string): Promise<SQSEvent> {
    const message = await eventually(async () => {
      const out = await env.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          WaitTimeSeconds: 0,
          VisibilityTimeout: 60,
          MessageSystemAttributeNames: ['All'],
        }),
      );
      return out.Messages?.find((m) => m.MessageId === messageId);
    });
    return { Records: [toRecord(message, `arn:aws:sqs:us-east-1:000000000000:${queueName}`)] };
  }
});
