import type { Redis } from 'ioredis';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import winston from 'winston';
import { lambdaContext, receiveEvent } from '../../examples/lambda/invoke.ts';
import { isLock, QuorumUnavailableError, Redlock } from '../../src/index.ts';
import { createLambdaHandler, type LambdaHandler } from '../../src/runtime/lambda.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually, silentLogger } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { type OutgoingMessage, sendMessages, useSqs } from '../helpers/sqs.ts';

/** How long a client waits before each reconnect: the window in which a thawed invocation starts. */
const RECONNECT_DELAY_MS = 500;

/** A logger that prints nothing and keeps each line's message, to assert on warnings. */
function recordingLogger(): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format((info) => {
      lines.push(String(info.message));
      return info;
    })(),
    transports: [new winston.transports.Console({ silent: true })],
  });
  return { logger, lines };
}

describe('Lambda under real faults', () => {
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

  /** A Redlock over fresh clients that wait RECONNECT_DELAY_MS before each reconnect, as ioredis does. */
  function thawableRedlock(): { redlock: Redlock; clients: Redis[] } {
    const clients = redis.clients({ retryStrategy: () => RECONNECT_DELAY_MS });
    const redlock = new Redlock(clients, {
      ttlMs: 3_000,
      commandTimeoutMs: 100,
      retryDelayMs: 20,
      retryJitterMs: 20,
      logger: silentLogger,
    });
    cleanups.push(() => redlock.quit());
    return { redlock, clients };
  }

  /** Redis closes every normal connection (its idle `timeout`, while the container was frozen). */
  async function closeIdleConnections(clients: readonly Redis[]): Promise<void> {
    await Promise.all(
      redis.nodes.map(async (node) => {
        const admin = node.client();
        try {
          await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
        } finally {
          admin.disconnect();
        }
      }),
    );
    // The thaw: the container runs again and sees its connections closed; the invocation starts now.
    await eventually(async () => clients.every((c) => c.status === 'reconnecting'), 2_000);
  }

  async function eventFor(queueUrl: string, messages: readonly OutgoingMessage[]) {
    const ids = await sendMessages(env.sqs, queueUrl, messages);
    const { event } = await receiveEvent(env.sqs, queueUrl, { max: 10, waitTimeSeconds: 1 });
    expect(event.Records.map((r) => r.messageId).sort()).toEqual([...ids].sort());
    return { event, ids };
  }

  function lambda(
    handler: LedgerHandler,
    queueUrl: string,
    options: Partial<Parameters<typeof createLambdaHandler>[1]>,
  ): LambdaHandler {
    return createLambdaHandler(handler, {
      sqs: env.sqs,
      queueUrl,
      logger: silentLogger,
      deadLetterQueueUrl: false,
      ...options,
    } as Parameters<typeof createLambdaHandler>[1]);
  }

  describe('a container thawed after Redis closed its idle connections', () => {
    it('processes its batch, thaw after thaw (reconnecting clients are waited for, within reconnectWaitMs)', async () => {
      const { redlock, clients } = thawableRedlock();
      const queue = env.createQueue('thaw');
      const ledger = new Ledger(ledgerClient, 'thaw');
      const handler = new LedgerHandler(ledger);
      const invoke = lambda(handler, queue.queueUrl, { redlock, reconnectWaitMs: 3_000 });
      const quorumFailures: string[] = [];
      invoke.events.on('quorum_unavailable', (e) => quorumFailures.push(e.messageId));

      // A first invocation on a warm container: connected and used.
      const warm = await eventFor(queue.queueUrl, jobs(2, 'warm'));
      expect(await invoke(warm.event, lambdaContext(10_000))).toEqual({ batchItemFailures: [] });

      // Frozen, Redis closes the idle connections, thawed: twice, as a container lives through many.
      for (const round of [1, 2]) {
        await closeIdleConnections(clients);
        const thawed = await eventFor(queue.queueUrl, jobs(3, `thaw${round}`));
        const response = await invoke(thawed.event, lambdaContext(10_000));
        expect({ round, response, quorumFailures }).toEqual({
          round,
          response: { batchItemFailures: [] },
          quorumFailures: [],
        });
      }
      const ids = ['warm', 'thaw1', 'thaw2'].flatMap((p) => jobs(p === 'warm' ? 2 : 3, p).map((j) => j.id));
      expect(await ledger.report(ids)).toMatchObject({ applied: 8, appliedTwice: 0 });
    });

    it('Redlock: a client that was connected is refused at once while it reconnects (no accidental wait)', async () => {
      const { redlock, clients } = thawableRedlock();
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const first = await redlock.acquire('reconnect-once', { retryCount: 0 });
      await first.release();

      await closeIdleConnections(clients);
      const started = performance.now();
      const [refused] = await redlock.acquireMany(['reconnect-refused'], { retryCount: 0 });
      const tookMs = performance.now() - started;
      expect(refused && !isLock(refused) && refused.reason).toBe('quorum');
      // Not the reconnect's delay: a reconnecting client counts as a "no" at once, as documented.
      expect(tookMs).toBeLessThan(RECONNECT_DELAY_MS / 2);
      if (refused && isLock(refused)) await refused.release();
    });

    it('Redlock.whenConnected waits for reconnecting clients up to its bound, and answers at once when connected', async () => {
      const { redlock, clients } = thawableRedlock();
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const warm = performance.now();
      expect(await redlock.whenConnected(5_000)).toMatchObject({ available: true, down: [] });
      expect(performance.now() - warm).toBeLessThan(50);

      await closeIdleConnections(clients);
      // Bounded: shorter than the reconnect, so not connected yet.
      const short = await redlock.whenConnected(50);
      expect(short.available).toBe(false);
      const started = performance.now();
      const status = await redlock.whenConnected(5_000);
      expect(status.available).toBe(true);
      expect(performance.now() - started).toBeLessThan(RECONNECT_DELAY_MS + 1_000);
      const lock = await redlock.acquire('after-reconnect', { retryCount: 0 });
      await lock.release();
    });
  });

  describe('a Redis outage', () => {
    it('every record without a quorum: the invocation fails, and each record backs off as long as retryMaxSec allows', async () => {
      const { redlock, clients } = thawableRedlock();
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const queue = env.createQueue('outage', { maxReceiveCount: 5 });
      const handler = new LedgerHandler(new Ledger(ledgerClient, 'outage'));
      const invoke = lambda(handler, queue.queueUrl, { redlock, retryMaxSec: 600 });
      const retryInSec: number[] = [];
      invoke.events.on('quorum_unavailable', (e) => retryInSec.push(e.retryInSec));
      const { event } = await eventFor(queue.queueUrl, jobs(3, 'outage'));

      // A majority stops answering with its connections open: the clients look ready.
      redis.nodes[0]?.pause();
      redis.nodes[1]?.pause();
      const invoked = invoke(event, lambdaContext(10_000));
      await expect(invoked).rejects.toBeInstanceOf(QuorumUnavailableError);
      expect(retryInSec).toEqual([600, 600, 600]);
      // Invisible for the whole backoff: no receive is burnt toward maxReceiveCount meanwhile.
      const inflight = env.server.inspectQueue(queue.queueName)?.messages.inflight ?? [];
      expect(inflight).toHaveLength(3);
      for (const { visibilityDeadline } of inflight) {
        expect(visibilityDeadline - Date.now()).toBeGreaterThan(590_000);
      }
      expect(handler.order).toEqual([]);
    });

    it('a batch with one poison record and the rest without a quorum answers normally (poison dead-lettered once)', async () => {
      const { redlock, clients } = thawableRedlock();
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const queue = env.createQueue('outage-mixed', { maxReceiveCount: 5 });
      const handler = new LedgerHandler(new Ledger(ledgerClient, 'outage-mixed'));
      const invoke = lambda(handler, queue.queueUrl, { redlock, deadLetterQueueUrl: queue.dlqUrl });
      const { event, ids } = await eventFor(queue.queueUrl, [{ body: 'not json' }, ...jobs(2, 'mixed')]);
      redis.nodes[0]?.pause();
      redis.nodes[1]?.pause();
      const response = await invoke(event, lambdaContext(10_000));
      expect(response.batchItemFailures.map((f) => f.itemIdentifier).sort()).toEqual(ids.slice(1).sort());
      expect(env.counts(queue.dlqName as string).total).toBe(1);
    });
  });

  describe('the safety margin', () => {
    it('more than half of the time left: shrunk (warned once per container), and the batch runs', async () => {
      const { redlock, clients } = thawableRedlock();
      await eventually(async () => clients.every((c) => c.status === 'ready'));
      const queue = env.createQueue('margin-shrunk');
      const ledger = new Ledger(ledgerClient, 'margin-shrunk');
      const handler = new LedgerHandler(ledger);
      const { logger, lines } = recordingLogger();
      // The 2 s default in a function with 1.5 s left (a 3 s timeout after a slow init).
      const invoke = lambda(handler, queue.queueUrl, { redlock, logger });
      for (const round of [1, 2]) {
        const { event } = await eventFor(queue.queueUrl, jobs(2, `shrunk${round}`));
        expect(await invoke(event, lambdaContext(1_500))).toEqual({ batchItemFailures: [] });
      }
      expect(await ledger.report(['shrunk1-0', 'shrunk1-1', 'shrunk2-0', 'shrunk2-1'])).toMatchObject({
        applied: 4,
      });
      expect(lines.filter((l) => l.startsWith('safetyMarginMs is more than half'))).toHaveLength(1);
    });

    it('too little time to start anything: the records are reported untouched, not made visible at once', async () => {
      const { redlock } = thawableRedlock();
      const queue = env.createQueue('margin-none');
      const handler = new LedgerHandler(new Ledger(ledgerClient, 'margin-none'));
      const invoke = lambda(handler, queue.queueUrl, { redlock });
      const { event, ids } = await eventFor(queue.queueUrl, jobs(2, 'none'));
      const response = await invoke(event, lambdaContext(400));
      expect(response.batchItemFailures.map((f) => f.itemIdentifier).sort()).toEqual([...ids].sort());
      expect(handler.order).toEqual([]);
      // Back after their visibility timeout, not looping hot through receives toward the DLQ.
      expect(env.counts(queue.queueName)).toMatchObject({ ready: 0, inflight: 2 });
    });
  });
});
