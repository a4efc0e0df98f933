/**
 * Runs the examples' own code against fauxqs and the harness's Redis nodes: the Lambda function of
 * examples/lambda (over SQS events built from received messages, as the event source mapping builds
 * them) and the Publisher handoff of examples/scheduler (its dispatch function, and its handler in an
 * in-process Worker).
 */
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { OrdersStore } from '../../examples/orders/store.ts';
import { NightlyReportHandler, reportTaskKey } from '../../examples/scheduler/handler.ts';
import { describeDispatch, dispatchNightlyReports } from '../../examples/scheduler/scheduler.ts';
import { ReportStore } from '../../examples/scheduler/store.ts';
import { type LambdaEvents, Publisher, type Redlock } from '../../src/index.ts';
import { eventually, redlockOver, silentLogger } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { drainQueue, sendMessages, useSqs } from '../helpers/sqs.ts';
import { workerFactory } from '../helpers/worker.ts';

// The examples import the library by its package name, which Node resolves to dist/ (after a build):
// here it is the source, the same module instances as the test's.
vi.mock('sqs-redlock-worker', () => import('../../src/index.ts'));

const redis = useRedisNodes(3);
const storeNode = useRedisNodes(1);
const env = useSqs();

describe('examples/lambda: the orders handler as a Lambda function', () => {
  type LambdaModule = typeof import('../../examples/lambda/index.ts');
  type InvokeModule = typeof import('../../examples/lambda/invoke.ts');
  let lambda: LambdaModule;
  let local: InvokeModule;
  let queue: ReturnType<typeof env.createQueue>;
  let orders: OrdersStore;
  let storeClient: Redis;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    queue = env.createQueue('orders', { maxReceiveCount: 3 });
    storeClient = storeNode.clients()[0] as Redis;
    orders = new OrdersStore(storeClient);
    // What the function's configuration would set; the module reads it when it loads (a cold start).
    Object.assign(process.env, {
      REDIS_URLS: redis.nodes.map((n) => n.url).join(','),
      STORE_URL: storeNode.nodes[0]?.url,
      SQS_QUEUE_URL: queue.queueUrl,
      AWS_ENDPOINT_URL_SQS: env.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      LOG_LEVEL: 'error',
    });
    lambda = await import('../../examples/lambda/index.ts');
    local = await import('../../examples/lambda/invoke.ts');
  });
  afterAll(async () => {
    await lambda?.close();
    process.env = savedEnv;
  });

  /** Sends the charges and receives them back as one SQS event. */
  async function eventOf(bodies: readonly string[]) {
    const ids = await sendMessages(
      env.sqs,
      queue.queueUrl,
      bodies.map((body) => ({ body })),
    );
    const { event } = await local.receiveEvent(env.sqs, queue.queueUrl, { waitTimeSeconds: 0 });
    expect(event.Records.map((r) => r.messageId).sort()).toEqual([...ids].sort());
    return { event, ids };
  }

  function recordEvents() {
    const seen = {
      processed: [] as LambdaEvents['message_processed'][0][],
      duplicates: [] as LambdaEvents['duplicate_skipped'][0][],
      contended: [] as LambdaEvents['lock_contended'][0][],
      poison: [] as LambdaEvents['poison_message'][0][],
    };
    const on = {
      message_processed: (e: LambdaEvents['message_processed'][0]) => seen.processed.push(e),
      duplicate_skipped: (e: LambdaEvents['duplicate_skipped'][0]) => seen.duplicates.push(e),
      lock_contended: (e: LambdaEvents['lock_contended'][0]) => seen.contended.push(e),
      poison_message: (e: LambdaEvents['poison_message'][0]) => seen.poison.push(e),
    };
    lambda.handler.events.on('message_processed', on.message_processed);
    lambda.handler.events.on('duplicate_skipped', on.duplicate_skipped);
    lambda.handler.events.on('lock_contended', on.lock_contended);
    lambda.handler.events.on('poison_message', on.poison_message);
    const off = (): void => {
      lambda.handler.events.off('message_processed', on.message_processed);
      lambda.handler.events.off('duplicate_skipped', on.duplicate_skipped);
      lambda.handler.events.off('lock_contended', on.lock_contended);
      lambda.handler.events.off('poison_message', on.poison_message);
    };
    return { seen, off };
  }

  it('charges each order once, dead-letters poison, acks a redelivered batch as duplicates; the store rejects a stale token', async () => {
    const { seen, off } = recordEvents();
    try {
      const poison = '{"orderId": "broken';
      const { event } = await eventOf([
        JSON.stringify({ orderId: 'A', cents: 1999 }),
        JSON.stringify({ orderId: 'B', cents: 500 }),
        poison,
      ]);

      const response = await lambda.handler(event, local.lambdaContext(30_000));
      expect(response).toEqual({ batchItemFailures: [] });
      expect(await local.deleteSucceeded(env.sqs, queue.queueUrl, event, response)).toBe(3);
      expect(env.counts(queue.queueName).total).toBe(0);
      expect(await orders.charges('A')).toBe(1);
      expect(await orders.charges('B')).toBe(1);
      expect(seen.processed.map((e) => e.lockKey).sort()).toEqual(['order:A', 'order:B']);
      // The poison message went to the dead-letter queue found in the queue's RedrivePolicy.
      expect(seen.poison).toMatchObject([{ deadLettered: true }]);
      const dead = await drainQueue(env.sqs, queue.dlqUrl as string);
      expect(dead.map((m) => m.Body)).toEqual([poison]);

      // The same records again (a delete lost after the function returned): not charged again.
      const redelivered = { Records: event.Records.filter((r) => r.body !== poison) };
      expect(await lambda.handler(redelivered, local.lambdaContext(30_000))).toEqual({
        batchItemFailures: [],
      });
      expect(seen.duplicates.map((e) => e.lockKey).sort()).toEqual(['order:A', 'order:B']);
      expect(await orders.charges('A')).toBe(1);
      expect(await orders.charges('B')).toBe(1);

      // A writer holding an older token than the charge's (a stale lock holder) is rejected.
      const token = seen.processed.find((e) => e.lockKey === 'order:A')?.fencingToken as number;
      expect(token).toBeGreaterThan(0);
      expect(Number(await storeClient.hget('order:A', 'token'))).toBe(token);
      expect(await orders.charge('A', 1999, token - 1)).toBe(false);
      expect(await orders.charges('A')).toBe(1);
    } finally {
      off();
    }
  });

  it('two messages about one order in a batch: one charges it, the other is a batch item failure, then a duplicate', async () => {
    const { seen, off } = recordEvents();
    try {
      const { event, ids } = await eventOf([
        JSON.stringify({ orderId: 'C', cents: 100 }),
        JSON.stringify({ orderId: 'C', cents: 100 }),
      ]);
      const response = await lambda.handler(event, local.lambdaContext(30_000));
      // Locked by order id: the second message met the first's lock and is reported for a retry.
      expect(response.batchItemFailures).toHaveLength(1);
      const failedId = response.batchItemFailures[0]?.itemIdentifier;
      expect(ids).toContain(failedId);
      expect(seen.contended.map((e) => e.messageId)).toEqual([failedId]);
      expect(seen.processed.map((e) => e.lockKey)).toEqual(['order:C']);
      expect(await local.deleteSucceeded(env.sqs, queue.queueUrl, event, response)).toBe(1);
      expect(env.counts(queue.queueName).total).toBe(1);
      expect(await orders.charges('C')).toBe(1);

      // SQS redelivers it (here at once, rather than after its backoff): the order is done, not charged twice.
      const again = { Records: event.Records.filter((r) => r.messageId === failedId) };
      const retried = await lambda.handler(again, local.lambdaContext(30_000));
      expect(retried).toEqual({ batchItemFailures: [] });
      expect(seen.duplicates).toMatchObject([
        { messageId: failedId, lockKey: 'order:C', idempotencyKey: 'charge:C' },
      ]);
      expect(await local.deleteSucceeded(env.sqs, queue.queueUrl, again, retried)).toBe(1);
      expect(env.counts(queue.queueName).total).toBe(0);
      expect(await orders.charges('C')).toBe(1);
    } finally {
      off();
    }
  });
});

describe('examples/scheduler: the Publisher handoff', () => {
  const workers = workerFactory(redis, env);
  /** Shared by the scheduler and the workers (HANDOFF_SECRET). */
  const handoffSecret = 'examples-test-handoff-secret-0123456789';
  /** The scheduler's Redlock (its own connections, as in its own process). */
  let redlock: Redlock;
  let reports: ReportStore;

  beforeAll(() => {
    redlock = redlockOver(redis).redlock;
    reports = new ReportStore(storeNode.clients()[0] as Redis);
  });
  afterEach(() => workers.stopAll());
  afterAll(() => redlock?.quit());

  it('dispatching twice sends one message per task; the worker adopts its lock, writes the report, and the task is done', async () => {
    const { queueUrl, queueName } = env.createQueue('reports', { maxReceiveCount: 3 });
    const publisher = new Publisher({ sqs: env.sqs, queueUrl, redlock, handoffSecret, logger: silentLogger });
    const customers = ['acme', 'globex'];
    const date = '2026-01-31';

    const first = await dispatchNightlyReports(publisher, customers, date);
    expect(first.map((s) => s.taskKey)).toEqual([
      'nightly-report:acme:2026-01-31',
      'nightly-report:globex:2026-01-31',
    ]);
    expect(first.map(describeDispatch)).toEqual([
      expect.stringMatching(/^nightly-report:acme:2026-01-31: dispatched \(message .+, fencing token \d+\)$/),
      expect.stringMatching(/^nightly-report:globex:2026-01-31: dispatched/),
    ]);
    const second = await dispatchNightlyReports(publisher, customers, date);
    expect(second.map((s) => s.result)).toMatchObject([
      { dispatched: false, reason: 'pending' },
      { dispatched: false, reason: 'pending' },
    ]);
    expect(second.map(describeDispatch)[0]).toMatch(
      /: pending \(already queued or running; free again in \d+ s/,
    );
    expect(env.counts(queueName).total).toBe(2);

    const handler = new NightlyReportHandler(reports, 50);
    const { events } = await workers.start(handler, queueUrl, { handoffSecret });
    await eventually(async () => events.message_processed.length === 2 && env.counts(queueName).total === 0);
    for (const { taskKey, result } of first) {
      if (!result.dispatched) throw new Error('dispatched above');
      // Run under the handed-over lock: the task's key and the token the dispatch took.
      expect(events.message_processed).toContainEqual(
        expect.objectContaining({
          messageId: result.messageId,
          lockKey: taskKey,
          fencingToken: result.fencingToken,
        }),
      );
      const saved = await reports.get(taskKey);
      expect(saved).toMatchObject({ fencingToken: result.fencingToken, writes: 1 });
      expect(JSON.parse(saved?.report ?? '{}')).toMatchObject({ customerId: taskKey.split(':')[1], date });
      // An older token than the run's is rejected by the store.
      expect(await reports.save(taskKey, 'stale', result.fencingToken - 1)).toBe(false);
    }
    expect(events.lock_contended).toHaveLength(0);

    // Ran: dispatching again sends nothing; the next day is a new task.
    const third = await dispatchNightlyReports(publisher, customers, date);
    expect(third.map(describeDispatch)).toEqual([
      'nightly-report:acme:2026-01-31: done (already ran)',
      'nightly-report:globex:2026-01-31: done (already ran)',
    ]);
    expect(env.counts(queueName).total).toBe(0);
    // A message sent without the Publisher (no handoff) is locked by the handler's lockKey, the same
    // task key: it finds the task done.
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ customerId: 'acme', date }) }]);
    await eventually(async () => events.duplicate_skipped.length === 1 && env.counts(queueName).total === 0);
    expect(events.duplicate_skipped[0]?.lockKey).toBe('nightly-report:acme:2026-01-31');
    expect((await reports.get('nightly-report:acme:2026-01-31'))?.writes).toBe(1);

    const next = await dispatchNightlyReports(publisher, ['acme'], '2026-02-01');
    expect(next[0]?.result.dispatched).toBe(true);
    expect(next[0]?.taskKey).toBe(reportTaskKey({ customerId: 'acme', date: '2026-02-01' }));
    await eventually(async () => events.message_processed.length === 3 && env.counts(queueName).total === 0);
    expect((await reports.get(next[0]?.taskKey as string))?.writes).toBe(1);
  });
});
