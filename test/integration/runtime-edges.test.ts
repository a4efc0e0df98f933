import type { Message } from '@aws-sdk/client-sqs';
import type { SQSEvent, SQSRecordAttributes } from 'aws-lambda';
import { afterEach, describe, expect, it } from 'vitest';
import winston from 'winston';
import { lambdaContext } from '../../examples/lambda/invoke.ts';
import { BaseHandler, type HandlerContext } from '../../src/index.ts';
import { createLambdaHandler } from '../../src/runtime/lambda.ts';
import { type Job, jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** Fails every run at once, and records when each run started. */
class FailingHandler extends BaseHandler<Job> {
  readonly startedAt: number[] = [];
  /** Resolves the handler's throw: lets the test decide when it fails. */
  gate: Promise<void> = Promise.resolve();

  hydrate(message: Message): Job {
    return JSON.parse(message.Body ?? '') as Job;
  }

  async handle(_job: Job, _ctx: HandlerContext): Promise<void> {
    this.startedAt.push(performance.now());
    await this.gate;
    throw new Error('fails on purpose');
  }
}

describe('Runtime edge cases (an adversarial review of issue 9)', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();

  afterEach(async () => {
    for (const node of redis.nodes) if (!node.isRunning) await node.restart();
    await workers.stopAll();
  });

  it('stop(): a message released at shutdown does not bounce through this worker’s own idle long polls (receive count, DLQ)', async () => {
    // concurrency 3: one poller takes the message, two stay in their long poll while it runs.
    const { queueUrl, queueName, dlqUrl } = env.createQueue('review-bounce', { maxReceiveCount: 2 });
    const handlerA = new LedgerHandler(newLedger('review-bounce-a'));
    // Counts the messages A's own idle polls took while it stopped (each one a receive burnt).
    const putBack: unknown[] = [];
    const logger = winston.createLogger({
      format: winston.format((info) => {
        if (/^received while stopping/.test(String(info.message))) putBack.push(info.messageIds);
        return info;
      })(),
      transports: [new winston.transports.Console({ silent: true })],
    });
    const a = await workers.start(handlerA, queueUrl, { concurrency: 3, waitTimeSeconds: 20, logger });
    await sleep(300); // every poller is in its long poll
    const [job] = jobs(1, 'bounce', { workMs: 10_000 }) as [{ id: string; body: string }];
    await sendMessages(env.sqs, queueUrl, [job]);
    await eventually(async () => handlerA.order.length === 1, 10_000);

    await a.worker.stop({ timeoutMs: 300 }); // the handler honours its signal: released, visible at once
    expect(a.events.message_released.map((e) => e.reason)).toEqual(['shutdown']);
    // Received once (by A): the next worker's receive is its 2nd, within maxReceiveCount 2.
    const handlerB = new LedgerHandler(newLedger('review-bounce-b'));
    const b = await workers.start(handlerB, queueUrl);
    await eventually(async () => handlerB.order.length >= 1 || env.counts(queueName).total === 0, 5_000);
    const dead = await drainQueue(env.sqs, dlqUrl as string);
    expect({ ranOnB: handlerB.order, deadLettered: dead.length, putBackByA: putBack.length }).toEqual({
      ranOnB: ['bounce-0'],
      deadLettered: 0,
      putBackByA: 0,
    });
    await b.worker.stop({ timeoutMs: 0 });
  });

  it('a heartbeat visibility call that lands after settle’s does not replace the failure backoff with the full timeout', async () => {
    const { queueUrl } = env.createQueue('review-hb-race', { visibilityTimeoutSec: 6 });
    // A real client whose heartbeat calls (VisibilityTimeout = the full 6 s) reach fauxqs 400 ms late,
    // as a retried or queued request does; the bound (min(sqsTimeoutMs, interval) = 2 s) lets it through.
    const sqs = env.newClient();
    let beatsInFlight = 0;
    let beatSent: () => void = () => {};
    const firstBeat = new Promise<void>((resolve) => {
      beatSent = resolve;
    });
    sqs.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Entries?: { VisibilityTimeout?: number }[] };
        if (
          context.commandName === 'ChangeMessageVisibilityBatchCommand' &&
          input.Entries?.every((e) => e.VisibilityTimeout === 6)
        ) {
          beatsInFlight++;
          beatSent();
          await sleep(400);
          beatsInFlight--;
        }
        return next(args);
      },
      { step: 'initialize', name: 'reviewLateBeat' },
    );
    const handler = new FailingHandler();
    let failNow: () => void = () => {};
    handler.gate = new Promise<void>((resolve) => {
      failNow = resolve;
    });
    await workers.start(handler, queueUrl, {
      sqs,
      visibilityTimeoutSec: 6,
      heartbeatIntervalMs: 2_000,
      retryBaseSec: 1,
      retryMaxSec: 1,
    });
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'hb-race' }) }]);
    await eventually(async () => handler.startedAt.length === 1, 10_000);
    await firstBeat; // a beat is on its way: the handler fails now, and settles with a 1 s backoff
    expect(beatsInFlight).toBe(1);
    const failedAt = performance.now();
    handler.gate = Promise.resolve();
    failNow();
    // Retried after its 1 s backoff (the worker polls again), not after the heartbeat's 6 s.
    await eventually(async () => handler.startedAt.length >= 2, 8_000);
    const retriedAfterMs = (handler.startedAt[1] ?? 0) - failedAt;
    sqs.destroy();
    expect(retriedAfterMs).toBeLessThan(3_000);
  });

  it('FIFO at shutdown: the message after an abandoned one in its group runs only after it, on another worker, and is not lost', async () => {
    const { queueUrl, queueName } = env.createQueue('review-fifo-stop', {
      fifo: true,
      visibilityTimeoutSec: 6,
    });
    const timeline: string[] = [];
    class Recording extends BaseHandler<Job> {
      readonly name: string;
      constructor(name: string) {
        super();
        this.name = name;
      }
      hydrate(message: Message): Job {
        return JSON.parse(message.Body ?? '') as Job;
      }
      async handle(job: Job): Promise<void> {
        timeline.push(`${this.name}:start:${job.id}`);
        await sleep(job.workMs ?? 0); // ignores its signal
        timeline.push(`${this.name}:end:${job.id}`);
      }
    }
    const a = await workers.start(new Recording('A'), queueUrl, { batchSize: 10, visibilityTimeoutSec: 6 });
    await sendMessages(env.sqs, queueUrl, [
      { body: JSON.stringify({ id: 'first', workMs: 2_000 }), groupId: 'g' },
      { body: JSON.stringify({ id: 'second', workMs: 10 }), groupId: 'g' },
    ]);
    await eventually(async () => timeline.includes('A:start:first'), 10_000);
    await a.worker.stop({ timeoutMs: 200 });
    await workers.start(new Recording('B'), queueUrl, { visibilityTimeoutSec: 6 });
    await eventually(async () => env.counts(queueName).total === 0, 9_000);
    const second = timeline.findIndex((e) => e.endsWith(':start:second'));
    expect(second).toBeGreaterThan(timeline.indexOf('A:end:first'));
    expect(timeline.filter((e) => e.includes(':start:'))).toHaveLength(2);
  });

  it('Lambda: settling after the safety margin stays within the function timeout when SQS hangs (sqsTimeoutMs default 5 s > safetyMarginMs 2 s)', async () => {
    const { queueUrl, queueName } = env.createQueue('review-lambda-timeout');
    const { redlock } = redlockOver(redis, { ttlMs: 3_000 });
    // Visibility calls hang: the black hole of a stuck connection, ended only by the call's deadline.
    const { startBlackHole, faultySqsClient } = await import('../helpers/sqs-faults.ts');
    const hole = await startBlackHole();
    const sqs = faultySqsClient(env, hole.port, {
      hang: (command) => command === 'ChangeMessageVisibilityBatchCommand',
    });
    try {
      const handler = new FailingHandler();
      const invoke = createLambdaHandler(handler, {
        redlock,
        sqs,
        queueUrl,
        logger: silentLogger,
        deadLetterQueueUrl: false,
      });
      const [messageId] = (await sendMessages(env.sqs, queueUrl, [
        { body: JSON.stringify({ id: 'lambda-timeout' }) },
      ])) as [string];
      const event = eventOf(messageId, queueName);
      const functionTimeoutMs = 3_000;
      // The handler fails 0.5 s in, well within its budget (the margin starts at 1 s): its backoff call hangs.
      handler.gate = sleep(500);
      const t0 = performance.now();
      const response = await invoke(event, lambdaContext(functionTimeoutMs));
      const tookMs = performance.now() - t0;
      expect(response.batchItemFailures).toEqual([{ itemIdentifier: messageId }]);
      expect(tookMs).toBeLessThan(functionTimeoutMs);
    } finally {
      sqs.destroy();
      await hole.close();
      await redlock.quit();
    }
  });
});

function eventOf(messageId: string, queueName: string): SQSEvent {
  return {
    Records: [
      {
        messageId,
        receiptHandle: `fake-${messageId}`,
        body: JSON.stringify({ id: 'lambda-timeout' }),
        attributes: { ApproximateReceiveCount: '1' } as unknown as SQSRecordAttributes,
        messageAttributes: {},
        md5OfBody: '',
        eventSource: 'aws:sqs',
        eventSourceARN: `arn:aws:sqs:us-east-1:000000000000:${queueName}`,
        awsRegion: 'us-east-1',
      },
    ],
  };
}
