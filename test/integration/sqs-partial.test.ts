import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import { BaseHandler, type SqsEntryError } from '../../src/index.ts';
import { createMetrics } from '../../src/observability/metrics.ts';
import { jobs, LedgerHandler } from '../helpers/handlers.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { capturingLogger } from '../helpers/logs.ts';
import { type SqsEnv, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

type Refusal = { code: string; senderFault: boolean };

/**
 * A real client on fauxqs whose chosen batch calls have every entry refused, as SQS answers a partial
 * failure: the refused entries are not sent (so nothing happens to their messages) and come back in
 * `Failed` with the code given; the rest reach fauxqs unchanged. Counts calls by command name.
 */
function refusingClient(
  env: SqsEnv,
  refuse: (command: string, nth: number) => Refusal | undefined,
): { sqs: SQSClient; calls: Map<string, number> } {
  const sqs = env.newClient();
  const calls = new Map<string, number>();
  sqs.middlewareStack.add(
    (next, context) => async (args) => {
      const command = context.commandName ?? '';
      const nth = (calls.get(command) ?? 0) + 1;
      calls.set(command, nth);
      const refusal = refuse(command, nth);
      const input = args.input as { Entries?: { Id: string }[] };
      if (!refusal || !input.Entries) return next(args);
      // Every entry refused: SQS answers 200 with all of them in Failed.
      const failed = input.Entries.map((e) => ({
        Id: e.Id,
        ...refusal,
        Code: refusal.code,
        SenderFault: refusal.senderFault,
        Message: 'injected',
      }));
      return {
        output: { $metadata: { httpStatusCode: 200 }, Successful: [], Failed: failed },
        response: {},
      } as never;
    },
    { step: 'initialize', name: 'testRefuseEntries' },
  );
  return { sqs, calls };
}

/** Works `workMs` ignoring its signal, then succeeds: a late success if its lock ran out meanwhile. */
class StubbornHandler extends BaseHandler<{ id: string }> {
  readonly started: string[] = [];
  readonly workMs: number;
  constructor(workMs: number) {
    super();
    this.workMs = workMs;
  }
  hydrate(message: Message): { id: string } {
    return JSON.parse(message.Body ?? '{}') as { id: string };
  }
  async handle(job: { id: string }): Promise<void> {
    this.started.push(job.id);
    await sleep(this.workMs);
  }
}

describe('partial failures of SQS batch calls are visible', () => {
  const { redis, env, workers, newLedger } = useWorkerFixture();
  afterEach(async () => {
    for (const node of redis.nodes) if (node.isPaused) node.resume();
    await workers.stopAll();
  });

  it('retries a delete entry refused with InternalError once: the message is deleted, the refusal counted', async () => {
    const { queueUrl, queueName } = env.createQueue('delete-internal');
    const { sqs, calls } = refusingClient(env, (command, nth) =>
      command === 'DeleteMessageBatchCommand' && nth === 1
        ? { code: 'InternalError', senderFault: false }
        : undefined,
    );
    const { logger, entries } = capturingLogger();
    const ledger = newLedger('delete-internal');
    const { worker, events } = await workers.start(new LedgerHandler(ledger), queueUrl, { sqs, logger });
    const metrics = createMetrics();
    metrics.attach(worker);
    await sendMessages(env.sqs, queueUrl, jobs(1, 'di'));

    await eventually(async () => events.message_processed.length === 1);
    // Deleted by the retry, long before its 30 s visibility timeout could bring it back.
    await eventually(async () => env.counts(queueName).total === 0);
    expect(calls.get('DeleteMessageBatchCommand')).toBe(2);
    expect((await metrics.sqsErrors.get()).values).toMatchObject([
      { labels: { operation: 'delete' }, value: 1 },
    ]);
    const logged = entries.find((e) => /refused, then passed on their retry/.test(e.message));
    expect(logged?.refused).toMatchObject([{ code: 'InternalError', senderFault: false }]);
    sqs.destroy();
  });

  it('does not retry a delete refused with ReceiptHandleIsInvalid; counts it with its code, and the redelivery is acked as a duplicate', async () => {
    const { queueUrl, queueName } = env.createQueue('delete-stale', { visibilityTimeoutSec: 1 });
    const { sqs, calls } = refusingClient(env, (command, nth) =>
      command === 'DeleteMessageBatchCommand' && nth === 1
        ? { code: 'ReceiptHandleIsInvalid', senderFault: true }
        : undefined,
    );
    const { logger, entries } = capturingLogger();
    const ledger = newLedger('delete-stale');
    const { worker, events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
      sqs,
      logger,
      visibilityTimeoutSec: 1, // the refused delete's message comes back soon
    });
    const errors: { operation: string; error: unknown }[] = [];
    worker.on('sqs_error', (e) => errors.push(e));
    const sent = jobs(1, 'ds');
    await sendMessages(env.sqs, queueUrl, sent);

    await eventually(
      async () => events.duplicate_skipped.length === 1 && env.counts(queueName).total === 0,
      8_000,
    );
    expect(calls.get('DeleteMessageBatchCommand')).toBe(2); // the first batch's, then the duplicate's
    expect(errors).toHaveLength(1);
    expect(errors[0]?.operation).toBe('delete');
    expect((errors[0]?.error as SqsEntryError | undefined)?.code).toBe('ReceiptHandleIsInvalid');
    const logged = entries.find((e) => /entries refused; not deleted/.test(e.message));
    expect(logged?.refused).toMatchObject([{ code: 'ReceiptHandleIsInvalid', senderFault: true }]);
    expect(await ledger.report(sent.map((j) => j.id))).toMatchObject({ applied: 1, appliedTwice: 0 });
    sqs.destroy();
  });

  it('retries a backoff refused with ThrottlingException once, and counts the refusal', async () => {
    const { queueUrl } = env.createQueue('visibility-throttled');
    const { sqs, calls } = refusingClient(env, (command, nth) =>
      command === 'ChangeMessageVisibilityBatchCommand' && nth === 1
        ? { code: 'ThrottlingException', senderFault: true }
        : undefined,
    );
    const ledger = newLedger('visibility-throttled');
    const { worker, events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
      sqs,
      extendVisibility: false, // only the backoff changes visibility
    });
    const errors: string[] = [];
    worker.on('sqs_error', ({ operation }) => errors.push(operation));
    await sendMessages(env.sqs, queueUrl, jobs(1, 'vt', { fail: true }));

    await eventually(async () => events.handler_error.length === 1);
    await eventually(async () => calls.get('ChangeMessageVisibilityBatchCommand') === 2);
    await eventually(async () => errors.length === 1);
    expect(errors).toEqual(['change_visibility']);
    sqs.destroy();
  });

  it("logs the heartbeat's refused entries with their codes and counts them; the handler goes on", async () => {
    const { queueUrl, queueName } = env.createQueue('heartbeat-refused', { visibilityTimeoutSec: 10 });
    const { sqs } = refusingClient(env, (command) =>
      command === 'ChangeMessageVisibilityBatchCommand'
        ? { code: 'MessageNotInflight', senderFault: true }
        : undefined,
    );
    const { logger, entries } = capturingLogger();
    const ledger = newLedger('heartbeat-refused');
    const { worker, events } = await workers.start(new LedgerHandler(ledger), queueUrl, {
      sqs,
      logger,
      visibilityTimeoutSec: 10,
      heartbeatIntervalMs: 300,
    });
    const errors: { operation: string; error: unknown }[] = [];
    worker.on('sqs_error', (e) => errors.push(e));
    await sendMessages(env.sqs, queueUrl, jobs(1, 'hb', { workMs: 1_200 }));

    await eventually(async () => events.message_processed.length === 1 && env.counts(queueName).total === 0);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((e) => e.operation === 'heartbeat_visibility')).toBe(true);
    expect((errors[0]?.error as SqsEntryError | undefined)?.code).toBe('MessageNotInflight');
    const logged = entries.find((e) => /visibility not extended/.test(e.message));
    expect(logged?.refused).toMatchObject([{ code: 'MessageNotInflight', senderFault: true }]);
    sqs.destroy();
  });

  it('locks_lost_total does not count a lock that expired under a late success which was taken back and completed', async () => {
    const { queueUrl, queueName } = env.createQueue('late-success');
    const handler = new StubbornHandler(2_500);
    const { worker, redlock, events } = await workers.start(handler, queueUrl, { lock: { ttlMs: 1_000 } });
    const metrics = createMetrics();
    metrics.attach(worker, redlock);
    const lost: string[] = [];
    redlock.on('lock_lost', ({ error }) => lost.push(error.reason));
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'late' }) }]);

    await eventually(async () => handler.started.length === 1);
    // The majority frozen past the TTL: extensions fail, validity runs out, no one can be granted the key.
    redis.nodes[0]?.pause();
    redis.nodes[1]?.pause();
    await eventually(async () => lost.length > 0, 3_000);
    redis.nodes[0]?.resume();
    redis.nodes[1]?.resume();

    await eventually(
      async () => events.message_processed.length === 1 && env.counts(queueName).total === 0,
      8_000,
    );
    expect(lost).toEqual(['expired']); // the Redlock did report the loss...
    expect(events.lock_lost).toHaveLength(0);
    // ...but the success was completed under it: no loss to count.
    expect((await metrics.locksLost.get()).values.reduce((sum, v) => sum + v.value, 0)).toBe(0);
    expect((await metrics.messages.get()).values.find((v) => v.labels.outcome === 'processed')?.value).toBe(
      1,
    );
  });
});
