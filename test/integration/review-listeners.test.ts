/**
 * Found in review: a `batch_locked` listener that threw escaped runBatch after the batch's locks were
 * granted and before the try/finally that ends them. The Redlock's extender then renewed those locks
 * for the life of the process: every redelivery met its own leaked lock ('held'), never ran, and with
 * a RedrivePolicy went to the DLQ without being poison. Listeners now observe and never steer: one that
 * throws is logged and ignored, and the pipeline calls its hook inside the try.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type PipelineDeps, runBatch } from '../../src/handler/pipeline.ts';
import { BaseHandler, type Lock, type Message, type Redlock } from '../../src/index.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, loadScripts, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

describe('Worker listeners that throw', () => {
  const { env, workers, newLedger } = useWorkerFixture();
  afterEach(() => workers.stopAll());

  it('a batch_locked listener that throws leaves the batch to run and settle', async () => {
    const { queueUrl, dlqName } = env.createQueue('listener-throws', {
      visibilityTimeoutSec: 2,
      maxReceiveCount: 3,
    });
    const handler = new LedgerHandler(newLedger('listener-throws'));
    const { worker, events } = await workers.start(handler, queueUrl, {
      visibilityTimeoutSec: 2,
      retryMaxSec: 2,
    });
    let calls = 0;
    worker.on('batch_locked', () => {
      calls++;
      throw new Error('a metrics listener bug');
    });
    await sendMessages(env.sqs, queueUrl, jobs(1, 'thrown'));
    // Before: 0 processed and a lock_contended per redelivery, then the DLQ after 3 receives.
    await eventually(async () => events.message_processed.length === 1, 8_000);
    expect(handler.seen.map((s) => s.id)).toEqual(['thrown-0']);
    expect(calls).toBe(1);
    expect(events.lock_contended).toEqual([]);
    await eventually(async () => env.counts('listener-throws').total === 0);
    expect(env.counts(dlqName as string).total).toBe(0);
  });

  it('stopped and message_processed listeners that throw break neither stop() nor a batch', async () => {
    const { queueUrl } = env.createQueue('listener-lifecycle');
    const handler = new LedgerHandler(newLedger('listener-lifecycle'));
    const { worker, events } = await workers.start(handler, queueUrl);
    for (const name of ['stopped', 'message_processed'] as const) {
      worker.on(name, () => {
        throw new Error(`${name} listener bug`);
      });
    }
    await sendMessages(env.sqs, queueUrl, jobs(2, 'life'));
    await eventually(async () => events.message_processed.length === 2);
    await expect(worker.stop({ timeoutMs: 2_000 })).resolves.toBeUndefined();
    expect(worker.state).toBe('stopped');
  });
});

/** Answers its body. */
class EchoHandler extends BaseHandler<string> {
  hydrate(message: Message): string {
    return message.Body ?? '';
  }
  async handle(): Promise<void> {}
}

describe('runBatch with an onLocked hook that throws', () => {
  const redis = useRedisNodes(3);
  let redlock: Redlock;
  beforeAll(async () => {
    const over = redlockOver(redis, { ttlMs: 2_000 });
    redlock = over.redlock;
    await loadScripts(over.clients);
  });
  afterAll(() => redlock.quit());

  it('ends the locks it was granted, so a redelivery runs', async () => {
    const deps: PipelineDeps<string> = {
      handler: new EchoHandler(),
      redlock,
      logger: silentLogger,
      fifo: false,
      autoExtendLocks: true,
      completionTtlMs: undefined,
      completionWindowMs: 0,
      shutdown: new AbortController().signal,
      logBodies: false,
    };
    const message: Message = { MessageId: randomUUID(), ReceiptHandle: randomUUID(), Body: 'x' };
    const throwing = {
      ...deps,
      onLocked: () => {
        throw new Error('hook bug');
      },
    };
    await expect(runBatch(throwing, [message])).rejects.toThrow('hook bug');
    // A leaked lock would still be held (renewed by the extender): 'contended'.
    const again = await runBatch(deps, [message]);
    expect(again.map((o) => o.outcome.kind)).toEqual(['processed']);
  });
});

describe('a Redlock lock_lost listener that throws', () => {
  const redis = useRedisNodes(3);

  it('stops neither the extension of the other locks nor quit()', async () => {
    const { redlock, clients } = redlockOver(redis, { ttlMs: 600 });
    redlock.on('lock_lost', () => {
      throw new Error('a lock_lost listener bug');
    });
    const [lost, kept] = (await redlock.acquireMany(['lost-k', 'kept-k'])) as [Lock, Lock];
    // Taken from under us on every node: the next extension says "not ours" and marks it lost.
    await Promise.all(clients.map((c) => c.del('srw:{lost-k}:lock')));
    await eventually(async () => lost.state === 'lost');
    // Before: the throw escaped the extender's timer (an uncaught exception) and its tick never
    // re-armed, so the other lock lapsed at its first deadline.
    await sleep(1_500);
    expect(kept.state).toBe('held');
    expect(kept.isHeld).toBe(true);
    await expect(redlock.quit()).resolves.toBeUndefined();
    expect(kept.state).toBe('lost');
  });
});
