import { type Message, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent } from 'aws-lambda';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BaseHandler, createLambdaHandler, type HandlerContext, POISON_ATTRIBUTES } from '../../src/index.ts';
import { Publisher } from '../../src/runtime/publisher.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { capturingLogger } from '../helpers/logs.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { faultySqsClient, startBlackHole } from '../helpers/sqs-faults.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** An error that serialize-error cannot read: one of its own enumerable properties throws. */
function unserializableError(message: string): Error {
  const error = new Error(message);
  Object.defineProperty(error, 'details', {
    enumerable: true,
    get() {
      throw new Error('the details getter threw');
    },
  });
  return error;
}

describe('Runtime against a faulty SQS (Worker and Lambda)', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();
  let blackHole: Awaited<ReturnType<typeof startBlackHole>>;
  const clients: SQSClient[] = [];

  beforeAll(async () => {
    blackHole = await startBlackHole();
  });
  afterEach(async () => {
    await workers.stopAll();
    for (const client of clients.splice(0)) client.destroy();
  });
  afterAll(() => blackHole.close());

  it('a hung ChangeMessageVisibilityBatch never stalls lock renewal: a 1 s lock outlives a 3 s handler', async () => {
    const { queueUrl, queueName } = env.createQueue('heartbeat-hung-visibility', {
      visibilityTimeoutSec: 10,
    });
    const ledger = newLedger('heartbeat-hung-visibility');
    const handler = new LedgerHandler(ledger);
    let hung = 0;
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (command) => command === 'ChangeMessageVisibilityBatchCommand',
      onHang: () => hung++,
    });
    clients.push(sqs);
    const { events, redlock } = await workers.start(handler, queueUrl, {
      sqs,
      visibilityTimeoutSec: 10,
      heartbeatIntervalMs: 300,
      lock: { ttlMs: 1_000, commandTimeoutMs: 100 },
    });
    // The lock engine's own account of losses: the worker's lock_lost event comes only once settled.
    const locksLost: string[] = [];
    redlock.on('lock_lost', (e) => locksLost.push(`${e.key}: ${e.error.message}`));
    await sendMessages(env.sqs, queueUrl, jobs(1, 'hung-vis', { workMs: 3_000 }));

    // The handler returns after its 3 s of work, or as soon as its signal aborts.
    await eventually(async () => handler.seen.length === 1, 10_000);
    expect(locksLost).toEqual([]);
    expect(handler.seen).toMatchObject([{ id: 'hung-vis-0', aborted: false }]);
    await eventually(async () => events.message_processed.length === 1, 5_000);
    expect(events.lock_lost).toEqual([]);
    // Every beat met the black hole; each call was cut at its bound and reported.
    expect(hung).toBeGreaterThanOrEqual(3);
    expect(events.sqs_error.map((e) => e.operation)).toContain('heartbeat_visibility');
    await eventually(async () => env.counts(queueName).total === 0, 5_000);
    expect(await ledger.report(['hung-vis-0'])).toMatchObject({
      applied: 1,
      appliedTwice: 0,
      concurrentRuns: 0,
    });
  });

  it('a hung DeleteMessageBatch is cut at sqsTimeoutMs; the message stays, and its redelivery is acked as a duplicate', async () => {
    const { queueUrl, queueName } = env.createQueue('hung-delete', { visibilityTimeoutSec: 2 });
    const ledger = newLedger('hung-delete');
    const handler = new LedgerHandler(ledger);
    let hungAt = Number.NaN;
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (command, nth) => command === 'DeleteMessageBatchCommand' && nth === 1,
      onHang: () => {
        hungAt = performance.now();
      },
    });
    clients.push(sqs);
    const { worker, events } = await workers.start(handler, queueUrl, {
      sqs,
      visibilityTimeoutSec: 2,
      sqsTimeoutMs: 500,
      deadLetterQueueUrl: false,
    });
    const failedAt: { operation: string; at: number }[] = [];
    worker.on('sqs_error', ({ operation }) => failedAt.push({ operation, at: performance.now() }));
    await sendMessages(env.sqs, queueUrl, jobs(1, 'hung-delete'));

    await eventually(async () => failedAt.some((f) => f.operation === 'delete'), 5_000);
    const deleteFailedAfterMs = (failedAt.find((f) => f.operation === 'delete')?.at ?? 0) - hungAt;
    expect(deleteFailedAfterMs).toBeGreaterThanOrEqual(400);
    expect(deleteFailedAfterMs).toBeLessThan(2_500);
    // Not deleted: SQS delivers it again, and the completion marker acks it without running it.
    await eventually(async () => events.duplicate_skipped.length === 1, 10_000);
    await eventually(async () => env.counts(queueName).total === 0, 5_000);
    expect(handler.seen).toHaveLength(1);
    expect(events.message_processed).toHaveLength(1);
    expect(await ledger.report(['hung-delete-0'])).toMatchObject({ applied: 1, appliedTwice: 0 });
  });

  it('an endpoint that reads only AttributeNames still gives ctx.receiveCount', async () => {
    const { queueUrl, queueName } = env.createQueue('legacy-attribute-names');
    const ledger = newLedger('legacy-attribute-names');
    const handler = new LedgerHandler(ledger);
    // As such an emulator does: MessageSystemAttributeNames is not read at all.
    const sqs = faultySqsClient(env, blackHole.port, {
      rewriteInput: (command, input) => {
        if (command === 'ReceiveMessageCommand') delete input.MessageSystemAttributeNames;
        return input;
      },
    });
    clients.push(sqs);
    const { events } = await workers.start(handler, queueUrl, { sqs, retryBaseSec: 0 });
    await sendMessages(env.sqs, queueUrl, jobs(1, 'legacy', { fail: [1] }));

    await eventually(async () => handler.seen.length >= 2, 10_000);
    expect(handler.seen.slice(0, 2).map((s) => s.receiveCount)).toEqual([1, 2]);
    await eventually(async () => env.counts(queueName).total === 0, 5_000);
    expect(events.handler_error).toMatchObject([{ receiveCount: 1 }]);
    expect(events.message_processed).toHaveLength(1);
  });

  it('warns once when messages of a FIFO queue come without MessageGroupId', async () => {
    const { queueUrl, queueName } = env.createQueue('no-group-id', { fifo: true });
    const ledger = newLedger('no-group-id');
    const handler = new LedgerHandler(ledger);
    const sqs = faultySqsClient(env, blackHole.port, {
      rewriteInput: (command, input) => {
        if (command === 'ReceiveMessageCommand') {
          delete input.MessageSystemAttributeNames;
          delete input.AttributeNames;
        }
        return input;
      },
    });
    clients.push(sqs);
    const { logger, entries } = capturingLogger();
    const sent = jobs(3, 'no-group');
    await sendMessages(
      env.sqs,
      queueUrl,
      sent.map((j, i) => ({ body: j.body, groupId: `g${i}` })),
    );
    const { events } = await workers.start(handler, queueUrl, { sqs, logger, batchSize: 1 });

    await eventually(async () => events.message_processed.length === 3, 10_000);
    expect(env.counts(queueName).total).toBe(0);
    const warnings = entries.filter((e) => e.level === 'warn' && /no MessageGroupId/.test(e.message));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toMatch(/FIFO order cannot be kept/);
  });

  it('an error whose getter throws, from a handler or from hydrate, does not break the worker', async () => {
    const { queueUrl, queueName, dlqUrl } = env.createQueue('unserializable', { maxReceiveCount: 5 });
    class Hostile extends BaseHandler<string> {
      readonly runs: number[] = [];
      hydrate(message: Message): string {
        if (message.Body === 'poison') throw unserializableError('cannot hydrate');
        return message.Body ?? '';
      }
      async handle(_body: string, ctx: HandlerContext): Promise<void> {
        this.runs.push(ctx.receiveCount);
        if (ctx.receiveCount === 1) throw unserializableError('first delivery fails');
      }
    }
    const handler = new Hostile();
    const { events } = await workers.start(handler, queueUrl, { retryBaseSec: 0 });
    const [, poisonId] = await sendMessages(env.sqs, queueUrl, [{ body: 'work' }, { body: 'poison' }]);

    // Retried with its backoff (0 s), not left for the 30 s visibility timeout of a failed batch.
    await eventually(async () => events.message_processed.length === 1, 8_000);
    expect(handler.runs).toEqual([1, 2]);
    expect(events.handler_error).toMatchObject([{ receiveCount: 1 }]);
    await eventually(async () => events.poison_message.length === 1, 5_000);
    expect(events.poison_message).toMatchObject([{ messageId: poisonId, deadLettered: true }]);
    const [dead] = await drainQueue(env.sqs, dlqUrl as string);
    expect(dead?.MessageAttributes?.[POISON_ATTRIBUTES.error]?.StringValue).toContain('cannot hydrate');
    await eventually(async () => env.counts(queueName).total === 0, 5_000);
  });

  it('Lambda: a hung visibility backoff and a hung RedrivePolicy lookup are cut at sqsTimeoutMs', async () => {
    const { queueUrl, queueName } = env.createQueue('lambda-hung-sqs', { maxReceiveCount: 5 });
    const ledger = newLedger('lambda-hung-sqs');
    const hung: string[] = [];
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (command) =>
        command === 'ChangeMessageVisibilityBatchCommand' || command === 'GetQueueAttributesCommand',
      onHang: (command) => hung.push(command),
    });
    clients.push(sqs);
    const { redlock } = redlockOver(redis, { ttlMs: 3_000 });
    try {
      const handler = createLambdaHandler(new LedgerHandler(ledger), {
        redlock,
        sqs,
        queueUrl,
        sqsTimeoutMs: 500,
        logger: silentLogger,
      });
      const failures: string[] = [];
      handler.events.on('sqs_error', ({ operation }) => failures.push(operation));
      const [id] = await sendMessages(env.sqs, queueUrl, jobs(1, 'lambda-hung', { fail: true }));
      const out = await env.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MessageSystemAttributeNames: ['All'],
          WaitTimeSeconds: 1,
        }),
      );
      const [message] = out.Messages ?? [];
      const event = {
        Records: [
          {
            messageId: message?.MessageId,
            receiptHandle: message?.ReceiptHandle,
            body: message?.Body,
            attributes: message?.Attributes ?? {},
            messageAttributes: {},
            md5OfBody: message?.MD5OfBody,
            eventSource: 'aws:sqs',
            eventSourceARN: `arn:aws:sqs:us-east-1:000000000000:${queueName}`,
            awsRegion: 'us-east-1',
          },
        ],
      } as unknown as SQSEvent;
      const deadline = Date.now() + 30_000;
      const context = {
        awsRequestId: 'r1',
        getRemainingTimeInMillis: () => deadline - Date.now(),
      } as Context;

      // Two calls of 500 ms at most, one after the other; without deadlines it would hang for 900 s.
      const response = await Promise.race([handler(event, context), sleep(5_000).then(() => 'hung')]);

      expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: id }] });
      expect(hung).toEqual(
        expect.arrayContaining(['GetQueueAttributesCommand', 'ChangeMessageVisibilityBatchCommand']),
      );
      expect(failures).toContain('change_visibility');
    } finally {
      await redlock.quit();
    }
  });

  it('Publisher: a hung SendMessage is cut at sqsTimeoutMs, and the task lock is released', async () => {
    const { queueUrl } = env.createQueue('hung-send');
    const sqs = faultySqsClient(env, blackHole.port, { hang: (command) => command === 'SendMessageCommand' });
    clients.push(sqs);
    const { redlock } = redlockOver(redis);
    const handoffSecret = 'sqs-faults-test-handoff-secret-0123456789';
    const publisher = new Publisher({
      sqs,
      queueUrl,
      redlock,
      handoffSecret,
      sqsTimeoutMs: 300,
      logger: silentLogger,
    });
    try {
      const started = performance.now();
      await expect(publisher.dispatch({ taskKey: 'hung-send:1', body: '{}' })).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(2_000);
      // Released: a dispatch through a working client is not answered 'pending'.
      const working = new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
      expect(await working.dispatch({ taskKey: 'hung-send:1', body: '{}' })).toMatchObject({
        dispatched: true,
      });
    } finally {
      await redlock.quit();
    }
  });
});
