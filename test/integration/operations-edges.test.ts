/**
 * Review of issue 13 ("Operations under real faults"): what still breaks, with real parts.
 */
import type { Redis } from 'ioredis';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { lambdaContext, receiveEvent } from '../../examples/lambda/invoke.ts';
import { isLock, Redlock } from '../../src/index.ts';
import { createLambdaHandler } from '../../src/runtime/lambda.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually, silentLogger } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { type OutgoingMessage, sendMessages, useSqs } from '../helpers/sqs.ts';
import { faultySqsClient, startBlackHole } from '../helpers/sqs-faults.ts';

describe('Operations under faults: edge cases from an adversarial review (issue 13)', () => {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  const env = useSqs();
  let ledgerClient: Redis;
  const cleanups: (() => Promise<void> | void)[] = [];

  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0] as Redis;
  });
  afterEach(async () => {
    for (const node of redis.nodes) if (node.isPaused) node.resume();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  function fastRedlock(clients: Redis[]): Redlock {
    const redlock = new Redlock(clients, {
      ttlMs: 3_000,
      commandTimeoutMs: 100,
      retryDelayMs: 20,
      retryJitterMs: 20,
      logger: silentLogger,
    });
    cleanups.push(() => redlock.quit());
    return redlock;
  }

  async function eventFor(queueUrl: string, messages: readonly OutgoingMessage[]) {
    const ids = await sendMessages(env.sqs, queueUrl, messages);
    const { event } = await receiveEvent(env.sqs, queueUrl, { max: 10, waitTimeSeconds: 1 });
    expect(event.Records.map((r) => r.messageId).sort()).toEqual([...ids].sort());
    return { event, ids };
  }

  it('Lambda outage: one poison record in the batch must not give the quorum-failed records the short backoff', async () => {
    const clients = redis.clients();
    const redlock = fastRedlock(clients);
    await eventually(async () => clients.every((c) => c.status === 'ready'));
    const queue = env.createQueue('r13-outage-mixed', { maxReceiveCount: 5 });
    const handler = new LedgerHandler(new Ledger(ledgerClient, 'r13-outage-mixed'));
    const invoke = createLambdaHandler(handler, {
      sqs: env.sqs,
      queueUrl: queue.queueUrl,
      logger: silentLogger,
      redlock,
      deadLetterQueueUrl: queue.dlqUrl,
      retryMaxSec: 600,
    });
    const retryInSec: number[] = [];
    invoke.events.on('quorum_unavailable', (e) => retryInSec.push(e.retryInSec));
    // A steady trickle of bad messages means most batches carry one.
    const { event } = await eventFor(queue.queueUrl, [{ body: 'not json' }, ...jobs(3, 'mixed')]);
    redis.nodes[0]?.pause();
    redis.nodes[1]?.pause();
    await invoke(event, lambdaContext(10_000)).catch(() => undefined);
    // The same outage as an all-quorum batch: the records should wait as long (600 s), not 5-7.5 s,
    // or maxReceiveCount (5) is burnt within ~40 s and the outage drains the queue into the DLQ.
    expect(retryInSec).toHaveLength(3);
    expect({ retryInSec }).toEqual({ retryInSec: [600, 600, 600] });
  });

  it('write probe: an ACL limited to the keys the lock uses (lock, fence, done) works for locks, so the probe must not count the node down', async () => {
    // The least privilege an operator would grant: the key shapes the README documents, nothing else.
    for (const node of redis.nodes) {
      const admin = node.client();
      await admin.call(
        'ACL',
        'SETUSER',
        'locker',
        'reset',
        'on',
        '>secret',
        '~srw:*:lock',
        '~srw:*:fence',
        '~srw:*:done',
        '+@all',
      );
      admin.disconnect();
    }
    cleanups.push(async () => {
      for (const node of redis.nodes) {
        const admin = node.client();
        await admin.call('ACL', 'DELUSER', 'locker');
        admin.disconnect();
      }
    });
    const clients = redis.clients({ username: 'locker', password: 'secret' });
    const redlock = fastRedlock(clients);
    await eventually(async () => clients.every((c) => c.status === 'ready'));
    // Every lock operation works for this user...
    const [lock] = await redlock.acquireMany(['acl-job'], { retryCount: 0 });
    expect(lock && isLock(lock)).toBe(true);
    if (lock && isLock(lock)) expect(await lock.complete()).toBe(true);
    // ...but the probe writes srw:{probe}:<uuid>, outside those keys: NOPERM on every node, so the
    // Worker, once paused, never resumes, and /readyz answers 503 for ever.
    const status = await redlock.quorumStatus();
    expect({ available: status.available, errors: status.errors }).toEqual({ available: true, errors: {} });
  });
  it('Lambda: with SQS hanging, settling a poison record still ends before the function times out (the new MaximumMessageSize read is a third sequential call in a two-call budget)', async () => {
    const clients = redis.clients();
    const redlock = fastRedlock(clients);
    await eventually(async () => clients.every((c) => c.status === 'ready'));
    const queue = env.createQueue('r13-budget', { maxReceiveCount: 5 });
    const blackHole = await startBlackHole();
    cleanups.push(() => blackHole.close());
    const hung: string[] = [];
    // SQS in trouble: every settle call hangs until its deadline.
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (command) =>
        ['GetQueueAttributesCommand', 'SendMessageCommand', 'ChangeMessageVisibilityBatchCommand'].includes(
          command,
        ),
      onHang: (command) => hung.push(command),
    });
    cleanups.push(() => sqs.destroy());
    const handler = new LedgerHandler(new Ledger(ledgerClient, 'r13-budget'));
    const invoke = createLambdaHandler(handler, {
      sqs,
      queueUrl: queue.queueUrl,
      logger: silentLogger,
      redlock,
      deadLetterQueueUrl: queue.dlqUrl,
    });
    const { event } = await eventFor(queue.queueUrl, [{ body: 'not json' }]);
    const functionTimeoutMs = 3_000;
    const started = performance.now();
    await invoke(event, lambdaContext(functionTimeoutMs));
    const tookMs = performance.now() - started;
    // Past the function's timeout, Lambda kills it and redelivers the whole batch.
    expect({ hung, timedOut: tookMs >= functionTimeoutMs, tookMs: Math.round(tookMs) }).toEqual({
      hung: ['GetQueueAttributesCommand', 'SendMessageCommand', 'ChangeMessageVisibilityBatchCommand'],
      timedOut: false,
      tookMs: expect.any(Number),
    });
  });
});
