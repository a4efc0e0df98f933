import type { Message } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import type { HandlerContext } from '../../src/index.ts';
import { type Job, LedgerHandler } from '../helpers/handlers.ts';
import { eventually } from '../helpers/lock.ts';
import { sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

interface OrderJob extends Job {
  /** The producer's request id: duplicate sends of one request carry the same one. */
  requestId: string;
}

/** Locks by order (`key`), deduplicates by request, and records how many runs of one order overlapped. */
class OrderHandler extends LedgerHandler {
  readonly running = new Map<string, number>();
  maxPerOrder = 0;

  override idempotencyKey(job: Job, _message: Message): string {
    return (job as OrderJob).requestId;
  }

  override async handle(job: Job, ctx: HandlerContext): Promise<void> {
    const order = ctx.lockKey;
    const now = (this.running.get(order) ?? 0) + 1;
    this.running.set(order, now);
    this.maxPerOrder = Math.max(this.maxPerOrder, now);
    try {
      await super.handle(job, ctx);
    } finally {
      this.running.set(order, (this.running.get(order) ?? 1) - 1);
    }
  }
}

describe('Worker: lockKey serialises, idempotencyKey deduplicates', () => {
  const { env, workers, newLedger } = useWorkerFixture();

  afterEach(() => workers.stopAll());

  it('runs three different operations on one order, one at a time, and a duplicate send of one of them once', async () => {
    const { queueUrl, queueName } = env.createQueue('keys');
    const ledger = newLedger('keys');
    const handler = new OrderHandler(ledger, { keyBy: 'key' });
    const { events } = await workers.start(handler, queueUrl, { concurrency: 2 });
    const op = (id: string, requestId = id): { body: string } => ({
      body: JSON.stringify({ id, key: 'order-1', requestId, workMs: 100 }),
    });
    // charge, ship, email: one order, three operations; and the producer sent 'charge' twice.
    await sendMessages(env.sqs, queueUrl, [
      op('charge'),
      op('ship'),
      op('email'),
      op('charge-again', 'charge'),
    ]);

    await eventually(async () => env.counts(queueName).total === 0, 20_000);
    await eventually(async () => events.message_processed.length + events.duplicate_skipped.length === 4);
    const report = await ledger.report(['charge', 'ship', 'email']);
    // Today's main: the first to finish marked 'order-1' done, and the other two were deleted unrun.
    expect(report).toMatchObject({ applied: 3, lost: 0, appliedTwice: 0 });
    expect((await ledger.report(['charge-again'])).applied).toBe(0);
    expect(events.duplicate_skipped).toEqual([
      expect.objectContaining({ lockKey: 'order-1', idempotencyKey: 'charge' }),
    ]);
    expect(handler.maxPerOrder).toBe(1);
  });

  it('a message whose idempotencyKey hook throws is poison, with the hook named', async () => {
    const { queueUrl, queueName } = env.createQueue('keys-throw', { maxReceiveCount: 3 });
    const handler = new (class extends OrderHandler {
      override idempotencyKey(_job: Job, message: Message): string {
        throw new Error(`no request id in ${message.MessageId}`);
      }
    })(newLedger('keys-throw'));
    const { events } = await workers.start(handler, queueUrl);
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'x', requestId: 'r' }) }]);
    await eventually(async () => events.poison_message.length === 1, 10_000);
    expect(events.poison_message[0]?.reason).toMatch(/^idempotencyKey threw: no request id/);
    await eventually(async () => env.counts(queueName).total === 0, 5_000);
    expect(handler.order).toEqual([]);
  });
});
