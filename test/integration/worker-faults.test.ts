import type { Message } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import { BaseHandler, type HandlerContext, isLock, LockLostError } from '../../src/index.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, redlockOver, sleep, sleepUnlessAborted } from '../helpers/lock.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

describe('Worker under faults', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();

  afterEach(async () => {
    for (const node of redis.nodes) {
      if (node.isPaused) node.resume();
      if (!node.isRunning) await node.restart();
    }
    await workers.stopAll();
  });

  it('loses the quorum mid-run (2 of 3 nodes killed, then restarted): pauses, resumes, every message once', async () => {
    const { queueUrl, queueName } = env.createQueue('quorum-lost');
    const ledger = newLedger('quorum-lost');
    const { events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
      concurrency: 2,
      quorumBackoffSec: 1,
      quorumProbeIntervalMs: 100,
    });
    const sent = jobs(300, 'q', { workMs: 10 });
    const ids = sent.map((j) => j.id);
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(async () => (await ledger.report(ids)).applied >= 60, 20_000);
    await Promise.all([redis.nodes[0]?.kill(), redis.nodes[1]?.kill()]);
    await eventually(async () => events.polling_paused.length > 0, 10_000);
    const appliedWhileDown = (await ledger.report(ids)).applied;
    await sleep(1_500);
    // Nothing can be locked while the quorum is down, so nothing more is applied.
    expect((await ledger.report(ids)).applied).toBe(appliedWhileDown);

    await Promise.all([redis.nodes[0]?.restart(), redis.nodes[1]?.restart()]);
    await eventually(async () => events.polling_resumed.length > 0, 10_000);
    await eventually(async () => env.counts(queueName).total === 0, 40_000);
    // Events follow the delete's answer, which may come a moment after the queue looks empty.
    await eventually(async () => events.message_processed.length >= 300, 5_000).catch(() => undefined);

    const report = await ledger.report(ids);
    expect(report).toMatchObject({ sent: 300, applied: 300, lost: 0, appliedTwice: 0, concurrentRuns: 0 });
    expect(events.quorum_unavailable.length).toBeGreaterThan(0);
    expect(events.message_processed).toHaveLength(300);
  });

  it('loses the lock mid-handle (majority paused past the TTL): aborts, keeps the message, reruns it with a greater token', async () => {
    const { queueUrl, queueName } = env.createQueue('lock-lost');
    const ledger = newLedger('lock-lost');
    const handler = new LedgerHandler(ledger);
    const { events } = await workers.start(handler, queueUrl, {
      retryBaseSec: 0.5,
      lock: { ttlMs: 900, commandTimeoutMs: 100 },
    });
    const [job] = jobs(1, 'long', { workMs: 3_000 });
    await sendMessages(env.sqs, queueUrl, [job as { body: string }]);

    await eventually(async () => handler.order.length === 1, 10_000);
    redis.nodes[0]?.pause();
    redis.nodes[1]?.pause();
    await eventually(async () => events.lock_lost.length === 1, 5_000);
    redis.nodes[0]?.resume();
    redis.nodes[1]?.resume();

    const lost = events.lock_lost[0];
    expect(lost?.error).toBeInstanceOf(LockLostError);
    expect(handler.seen[0]?.aborted).toBe(true);
    await eventually(async () => env.counts(queueName).total === 0, 20_000);

    expect(handler.seen).toHaveLength(2);
    expect(handler.seen[1]?.fencingToken).toBeGreaterThan(lost?.fencingToken ?? Number.POSITIVE_INFINITY);
    expect(await ledger.report(['long-0'])).toMatchObject({ applied: 1, appliedTwice: 0, concurrentRuns: 0 });
  });

  describe('graceful stop', () => {
    it('lets in-flight handlers finish within the deadline', async () => {
      const { queueUrl, queueName } = env.createQueue('stop-drain');
      const ledger = newLedger('stop-drain');
      const handler = new LedgerHandler(ledger);
      const { worker } = await workers.start(handler, queueUrl);
      const sent = jobs(4, 's', { workMs: 600 });
      await sendMessages(env.sqs, queueUrl, sent);
      await eventually(async () => handler.order.length === 4, 10_000);

      const started = performance.now();
      const stopping = worker.stop({ timeoutMs: 10_000 });
      expect(worker.stop({ timeoutMs: 10_000 })).toBe(stopping); // idempotent
      await stopping;
      expect(performance.now() - started).toBeGreaterThan(300);
      expect(worker.state).toBe('stopped');
      expect(await ledger.report(sent.map((j) => j.id))).toMatchObject({ applied: 4, lost: 0 });
      expect(env.counts(queueName).total).toBe(0);
      await worker.stop(); // safe after it stopped
    });

    it('past the deadline aborts their signals: handlers that give up are released and visible at once', async () => {
      const { queueUrl, queueName } = env.createQueue('stop-abort', { visibilityTimeoutSec: 300 });
      const started: string[] = [];
      // A handler that gives up when its signal aborts. (One that ignores it keeps its lock until it
      // settles: see shutdown.test.ts.)
      class GivesUp extends BaseHandler<string> {
        hydrate(message: Message): string {
          return message.Body ?? '';
        }
        async handle(body: string, ctx: HandlerContext): Promise<void> {
          started.push(body);
          await sleepUnlessAborted(15_000, ctx.signal);
          throw ctx.signal.reason;
        }
      }
      const { worker, events } = await workers.start(new GivesUp(), queueUrl, { visibilityTimeoutSec: 300 });
      const ids = await sendMessages(env.sqs, queueUrl, [{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
      await eventually(async () => started.length === 3, 10_000);

      const t0 = performance.now();
      await worker.stop({ timeoutMs: 300 });
      expect(performance.now() - t0).toBeLessThan(2_000);
      expect(events.message_released.map((e) => e.reason)).toEqual(['shutdown', 'shutdown', 'shutdown']);
      // Visible at once, not after the 300 s visibility timeout.
      expect(env.counts(queueName)).toMatchObject({ ready: 3, inflight: 0 });
      // Locks released: another owner can take them right away.
      const { redlock } = redlockOver(redis);
      const locks = await redlock.acquireMany(ids, { retryCount: 0 });
      expect(locks.every(isLock)).toBe(true);
      await redlock.quit();
    });
  });
});
