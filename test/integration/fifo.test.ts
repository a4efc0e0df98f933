import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { MessageOutcome } from '../../src/handler/outcome.ts';
import { type PipelineDeps, runBatch } from '../../src/handler/pipeline.ts';
import {
  type HandlerContext,
  isLock,
  type Lock,
  type Message,
  type Redlock,
  Worker,
  type WorkerEvents,
} from '../../src/index.ts';
import { type Job, LedgerHandler } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually, redlockOver, silentLogger, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';

/** A LedgerHandler that also records, in order, the runs whose effect was applied (the handler succeeded). */
class OrderedHandler extends LedgerHandler {
  readonly applied: string[] = [];

  override async handle(job: Job, ctx: HandlerContext): Promise<void> {
    await super.handle(job, ctx);
    this.applied.push(job.id);
  }
}

/** `g2-5` -> `g2` */
function groupOf(id: string): string {
  return id.slice(0, id.lastIndexOf('-'));
}

/** `g2-5` -> 5 */
function indexOf(id: string): number {
  return Number(id.slice(id.lastIndexOf('-') + 1));
}

describe('FIFO order per group, including after a failure in the group', () => {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  let ledgerClient: Redis;

  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0] as Redis;
  });

  describe('worker over a fauxqs FIFO queue', () => {
    const env = useSqs();
    const running: { worker: Worker<unknown>; redlock: Redlock }[] = [];

    afterEach(async () => {
      await Promise.all(running.map(({ worker }) => worker.stop({ timeoutMs: 5_000 })));
      await Promise.all(running.map(({ redlock }) => redlock.quit()));
      running.length = 0;
    });

    it('runs each group in send order; a failed message holds its group back until its retry succeeds', async () => {
      const { queueUrl, queueName } = env.createQueue('ordered', { fifo: true, maxReceiveCount: 5 });
      expect(queueName).toBe('ordered.fifo');
      const ledger = new Ledger(ledgerClient, 'fifo-worker');
      const handler = new OrderedHandler(ledger);
      const { redlock } = redlockOver(redis, { ttlMs: 3_000 });
      const worker = new Worker({
        queueUrl,
        sqs: env.sqs,
        redlock,
        handler: handler as never,
        logger: silentLogger,
        waitTimeSeconds: 1,
        // Two pollers: the queue, not luck, must keep a group's messages from running side by side.
        concurrency: 2,
        retryBaseSec: 0.5,
      });
      running.push({ worker, redlock });
      const errors: WorkerEvents['handler_error'][0][] = [];
      const released: WorkerEvents['message_released'][0][] = [];
      const contended: WorkerEvents['lock_contended'][0][] = [];
      let processed = 0;
      worker.on('handler_error', (e) => errors.push(e));
      worker.on('message_released', (e) => released.push(e));
      worker.on('lock_contended', (e) => contended.push(e));
      worker.on('message_processed', () => processed++);
      await worker.start();

      const groups = ['g1', 'g2', 'g3'];
      const perGroup = 8;
      const failing = 'g2-2';
      // Interleaved: g1-0, g2-0, g3-0, g1-1, g2-1, ...
      const sent = Array.from({ length: perGroup }, (_, i) =>
        groups.map((g) => {
          const id = `${g}-${i}`;
          const job: Job = id === failing ? { id, fail: [1] } : { id };
          return { id, groupId: g, body: JSON.stringify(job) };
        }),
      ).flat();
      const ids = sent.map((m) => m.id);
      await sendMessages(env.sqs, queueUrl, sent);

      await eventually(async () => (await ledger.report(ids)).applied === ids.length, 20_000);
      await eventually(async () => env.counts(queueName).total === 0, 10_000);
      // Events follow the delete's answer, which may come a moment after the queue looks empty.
      await eventually(async () => processed >= 24, 5_000).catch(() => undefined);

      // Every message applied exactly once, never two runs of one message at once.
      const report = await ledger.report(ids);
      expect(report).toMatchObject({
        sent: 24,
        applied: 24,
        lost: 0,
        appliedTwice: 0,
        concurrentRuns: 0,
        runsStarted: 25, // the failed run and its retry
        staleRejected: 0,
      });
      expect(processed).toBe(24);

      // The first successful application of each id, per group, is in send (index) order.
      for (const g of groups) {
        const firsts = handler.applied.filter((id, i, all) => groupOf(id) === g && all.indexOf(id) === i);
        expect(firsts.map(indexOf), `applied order of ${g}`).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      }

      // Runs (successful or not) per group: the failed message is the next to run in its group, nothing
      // of that group ran between its failure and its retry; the other groups never repeat anything.
      const runsOf = (g: string): number[] => handler.order.filter((id) => groupOf(id) === g).map(indexOf);
      expect(runsOf('g1')).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect(runsOf('g2')).toEqual([0, 1, 2, 2, 3, 4, 5, 6, 7]);
      expect(runsOf('g3')).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);

      // It failed once, on its first receive, and the retry was its second receive.
      expect(errors.map((e) => e.receiveCount)).toEqual([1]);
      expect(errors[0]?.retryInSec).toBeGreaterThanOrEqual(1);
      const failingRuns = handler.seen.filter((s) => s.id === failing).map((s) => s.receiveCount);
      expect(failingRuns).toEqual([1, 2]);

      // The failure held back only its own group: other groups ran while it waited for its retry.
      const failedAt = handler.order.indexOf(failing);
      const retriedAt = handler.order.lastIndexOf(failing);
      const between = handler.order.slice(failedAt + 1, retriedAt);
      expect(between.every((id) => groupOf(id) !== 'g2')).toBe(true);
      expect(between.length).toBeGreaterThan(0);

      // fauxqs hands out one message per group per receive: nothing was skipped or contended.
      expect(released).toEqual([]);
      expect(contended).toEqual([]);
    });
  });

  describe('runBatch with several messages of a group in one batch', () => {
    let redlock: Redlock;
    let other: Redlock;

    beforeAll(() => {
      redlock = redlockOver(redis).redlock;
      other = redlockOver(redis).redlock; // another owner, contending for the same keys
    });
    afterAll(async () => {
      await Promise.all([redlock?.quit(), other?.quit()]);
    });

    function deps(handler: LedgerHandler): PipelineDeps<Job> {
      return {
        handler,
        redlock,
        logger: silentLogger,
        fifo: true,
        autoExtendLocks: true,
        completionTtlMs: undefined,
        shutdown: new AbortController().signal,
        logBodies: false,
      };
    }

    /** One received message: `group` its MessageGroupId; the same `messageId` again is a redelivery. */
    function message(job: Job, group: string, receiveCount = 1, messageId: string = randomUUID()): Message {
      return {
        MessageId: messageId,
        ReceiptHandle: randomUUID(),
        Body: JSON.stringify(job),
        Attributes: { MessageGroupId: group, ApproximateReceiveCount: String(receiveCount) },
      };
    }

    function outcomeOf(outcomes: readonly MessageOutcome[], m: Message): MessageOutcome['outcome'] {
      const found = outcomes.find((o) => o.message === m);
      if (!found) throw new Error(`no outcome for ${m.MessageId}`);
      return found.outcome;
    }

    /** Acquires every key with `by` in one attempt: the lock (released again) or the refusal's reason. */
    async function probe(by: Redlock, keys: readonly string[]): Promise<string[]> {
      const results = await by.acquireMany(keys, { retryCount: 0, autoExtend: false });
      const locks = results.filter(isLock);
      await by.releaseMany(locks);
      return results.map((r) => (isLock(r) ? 'acquired' : r.reason));
    }

    describe('a handler that succeeds after its lock expired', () => {
      /** Works 600 ms on a 300 ms lock that is not extended, ignoring its signal; `meanwhile` runs at 400 ms. */
      class Overrunning extends LedgerHandler {
        meanwhile: () => Promise<void> = async () => undefined;
        override async handle(job: Job, ctx: HandlerContext): Promise<void> {
          this.order.push(job.id);
          await sleep(400);
          await this.meanwhile();
          await sleep(200);
          await this.ledger.apply(job.id, ctx.fencingToken);
        }
      }

      it('is completed when no one claimed the key since (the fencing counter still holds its token)', async () => {
        const handler = new Overrunning(new Ledger(ledgerClient, 'late-ok'));
        const short = redlockOver(redis, { ttlMs: 300, commandTimeoutMs: 50 }).redlock;
        const m = message({ id: 'late-0' }, 'L');
        const outcomes = await runBatch({ ...deps(handler), redlock: short, autoExtendLocks: false }, [m]);
        expect(outcomeOf(outcomes, m)).toMatchObject({ kind: 'processed', marked: true });
        expect(await probe(other, [m.MessageId as string])).toEqual(['done']);
        await short.quit();
      });

      it('is not completed when someone else was granted the key meanwhile', async () => {
        const handler = new Overrunning(new Ledger(ledgerClient, 'late-taken'));
        const short = redlockOver(redis, { ttlMs: 300, commandTimeoutMs: 50 }).redlock;
        const m = message({ id: 'late-1' }, 'L');
        let taken: Lock | undefined;
        handler.meanwhile = async () => {
          taken = await other.acquire(m.MessageId as string, { retryCount: 0, autoExtend: false });
        };
        const outcomes = await runBatch({ ...deps(handler), redlock: short, autoExtendLocks: false }, [m]);
        expect(outcomeOf(outcomes, m)).toMatchObject({ kind: 'lock_lost' });
        expect(taken?.isHeld).toBe(true); // the other owner's lock was not touched
        await taken?.release();
        await short.quit();
      });
    });

    it('never starts a handler on a lock whose validity ran out before its turn (an event-loop stall)', async () => {
      const ledger = new Ledger(ledgerClient, 'stall');
      const handler = new LedgerHandler(ledger);
      const short = redlockOver(redis, { ttlMs: 300, commandTimeoutMs: 50 }).redlock;
      const batch = [message({ id: 's-0' }, 'S'), message({ id: 't-0' }, 'T')];
      const stall = (): void => {
        // A GC pause or a frozen process right after the batch was locked: no timer runs meanwhile.
        const until = performance.now() + 400;
        while (performance.now() < until) {}
      };
      const outcomes = await runBatch({ ...deps(handler), redlock: short, onLocked: stall }, batch);
      expect(outcomes.map((o) => o.outcome.kind)).toEqual(['lock_lost', 'lock_lost']);
      expect(handler.order).toEqual([]); // neither handler was started on its expired lock
      await short.quit();
    });

    it('a failure stops the rest of its group (skipped, fifo_order, locks released); other groups run on', async () => {
      const ledger = new Ledger(ledgerClient, 'fifo-batch');
      const handler = new LedgerHandler(ledger);
      const a0 = message({ id: 'a-0' }, 'A');
      const a1 = message({ id: 'a-1', fail: [1] }, 'A');
      const a2 = message({ id: 'a-2' }, 'A');
      const a3 = message({ id: 'a-3' }, 'A');
      const b0 = message({ id: 'b-0' }, 'B');
      const b1 = message({ id: 'b-1' }, 'B');
      const batch = [a0, b0, a1, a2, b1, a3];

      const outcomes = await runBatch(deps(handler), batch);

      expect(outcomes.map((o) => o.message)).toEqual(batch);
      expect(outcomeOf(outcomes, a0)).toMatchObject({ kind: 'processed', lockKey: a0.MessageId });
      expect(outcomeOf(outcomes, a1)).toMatchObject({ kind: 'failed', lockKey: a1.MessageId });
      for (const m of [a2, a3]) {
        expect(outcomeOf(outcomes, m)).toEqual({
          kind: 'skipped',
          lockKey: m.MessageId,
          reason: 'fifo_order',
        });
      }
      expect(outcomeOf(outcomes, b0)).toMatchObject({ kind: 'processed', lockKey: b0.MessageId });
      expect(outcomeOf(outcomes, b1)).toMatchObject({ kind: 'processed', lockKey: b1.MessageId });

      // The skipped never ran; each group ran in batch order.
      expect(handler.order).not.toContain('a-2');
      expect(handler.order).not.toContain('a-3');
      expect(handler.order.filter((id) => id.startsWith('a-'))).toEqual(['a-0', 'a-1']);
      expect(handler.order.filter((id) => id.startsWith('b-'))).toEqual(['b-0', 'b-1']);
      const report = await ledger.report(['a-0', 'a-1', 'a-2', 'a-3', 'b-0', 'b-1']);
      expect(report).toMatchObject({ applied: 3, appliedTwice: 0, concurrentRuns: 0, runsStarted: 4 });

      // Failed and skipped locks were released (another owner gets them); processed ones are marked done.
      const keys = [a0, a1, a2, a3, b0, b1].map((m) => m.MessageId as string);
      expect(await probe(other, keys)).toEqual(['done', 'acquired', 'acquired', 'acquired', 'done', 'done']);

      // The redelivery (a-0 too, as if its delete had been lost) finishes the group in order:
      // the finished a-0 is a duplicate and does not hold the group back.
      const again = [a0, a1, a2, a3].map((m) =>
        message(JSON.parse(m.Body as string) as Job, 'A', 2, m.MessageId),
      );
      const second = await runBatch(deps(handler), again);
      expect(second.map((o) => o.outcome.kind)).toEqual(['duplicate', 'processed', 'processed', 'processed']);
      expect(handler.order.filter((id) => id.startsWith('a-'))).toEqual(['a-0', 'a-1', 'a-1', 'a-2', 'a-3']);
      expect(await ledger.report(['a-0', 'a-1', 'a-2', 'a-3'])).toMatchObject({
        applied: 4,
        appliedTwice: 0,
        concurrentRuns: 0,
      });
      expect(await probe(other, keys.slice(0, 4))).toEqual(['done', 'done', 'done', 'done']);
    });

    it('a contended message stops the rest of its group; the skipped locks are released', async () => {
      const ledger = new Ledger(ledgerClient, 'fifo-contended');
      const handler = new LedgerHandler(ledger);
      const a0 = message({ id: 'a-0' }, 'A');
      const a1 = message({ id: 'a-1' }, 'A');
      const a2 = message({ id: 'a-2' }, 'A');
      const b0 = message({ id: 'b-0' }, 'B');
      const b1 = message({ id: 'b-1' }, 'B');
      const b2 = message({ id: 'b-2' }, 'B');
      const c0 = message({ id: 'c-0' }, 'C');
      const batch = [a0, b0, c0, a1, b1, a2, b2];

      // Someone else holds a-0 (the head of A) and b-1 (the middle of B).
      const held: Lock[] = await Promise.all(
        [a0, b1].map((m) => other.acquire(m.MessageId as string, { retryCount: 0, autoExtend: true })),
      );
      let outcomes: MessageOutcome[];
      try {
        outcomes = await runBatch(deps(handler), batch);
        // The keys are still theirs while they hold them.
        expect(
          await probe(
            redlock,
            [a0, b1].map((m) => m.MessageId as string),
          ),
        ).toEqual(['held', 'held']);
      } finally {
        await other.releaseMany(held);
      }

      const contended = outcomeOf(outcomes, a0);
      expect(contended).toMatchObject({ kind: 'contended', lockKey: a0.MessageId });
      expect(contended.kind === 'contended' && contended.retryAfterMs).toBeGreaterThan(0);
      for (const m of [a1, a2, b2]) {
        expect(outcomeOf(outcomes, m)).toEqual({
          kind: 'skipped',
          lockKey: m.MessageId,
          reason: 'fifo_order',
        });
      }
      expect(outcomeOf(outcomes, b0)).toMatchObject({ kind: 'processed' });
      expect(outcomeOf(outcomes, b1)).toMatchObject({ kind: 'contended', lockKey: b1.MessageId });
      expect(outcomeOf(outcomes, c0)).toMatchObject({ kind: 'processed' });

      // Nothing of A ran; B stopped at its contended message.
      expect(handler.order.filter((id) => id.startsWith('a-'))).toEqual([]);
      expect(handler.order.filter((id) => id.startsWith('b-'))).toEqual(['b-0']);
      expect(handler.order).toContain('c-0');

      // Skipped keys were released; contended ones are free now their holder let go; processed are done.
      const keys = [a0, a1, a2, b0, b1, b2, c0].map((m) => m.MessageId as string);
      expect(await probe(other, keys)).toEqual([
        'acquired',
        'acquired',
        'acquired',
        'done',
        'acquired',
        'acquired',
        'done',
      ]);
    });
  });
});
