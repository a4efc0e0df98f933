import { randomUUID } from 'node:crypto';
import { type Message, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent, SQSMessageAttribute, SQSRecord, SQSRecordAttributes } from 'aws-lambda';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  type HandlerContext,
  isLock,
  LockLostError,
  POISON_ATTRIBUTES,
  type Redlock,
} from '../../src/index.ts';
import {
  createLambdaHandler,
  type LambdaEvents,
  type LambdaHandler,
  queueUrlFromArn,
  recordToMessage,
  siblingQueueUrl,
} from '../../src/runtime/lambda.ts';
import { MESSAGE_EVENTS } from '../helpers/events.ts';
import { type Job, jobs, LedgerHandler } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { redlockOver, silentLogger } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { drainQueue, type OutgoingMessage, sendMessages, useSqs } from '../helpers/sqs.ts';

const REGION = 'us-east-1';
const ACCOUNT = '000000000000';

/** A LedgerHandler that also keeps the raw messages it was given. */
class CapturingHandler extends LedgerHandler {
  readonly messages: Message[] = [];

  override async handle(job: Job, ctx: HandlerContext): Promise<void> {
    this.messages.push(ctx.message);
    await super.handle(job, ctx);
  }
}

/** A Lambda context whose function times out `timeoutMs` from now. */
function lambdaContext(timeoutMs = 30_000): Context {
  const deadline = Date.now() + timeoutMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'worker',
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:worker`,
    memoryLimitInMB: '512',
    awsRequestId: randomUUID(),
    logGroupName: '/aws/lambda/worker',
    logStreamName: '2026/01/01/[$LATEST]0123456789abcdef',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** The record Lambda's event source mapping builds from a received message (field for field). */
function toRecord(message: Message, queueName: string): SQSRecord {
  const messageAttributes: Record<string, SQSMessageAttribute> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    messageAttributes[name] = {
      ...(value.StringValue !== undefined ? { stringValue: value.StringValue } : {}),
      ...(value.BinaryValue ? { binaryValue: Buffer.from(value.BinaryValue).toString('base64') } : {}),
      stringListValues: [],
      binaryListValues: [],
      dataType: value.DataType ?? 'String',
    };
  }
  return {
    messageId: message.MessageId ?? '',
    receiptHandle: message.ReceiptHandle ?? '',
    body: message.Body ?? '',
    attributes: message.Attributes as unknown as SQSRecordAttributes,
    messageAttributes,
    md5OfBody: message.MD5OfBody ?? '',
    ...(message.MD5OfMessageAttributes ? { md5OfMessageAttributes: message.MD5OfMessageAttributes } : {}),
    eventSource: 'aws:sqs',
    eventSourceARN: `arn:aws:sqs:${REGION}:${ACCOUNT}:${queueName}`,
    awsRegion: REGION,
  };
}

/** Every event a handler emitted, by name, in order. */
type Recorded = { [K in keyof LambdaEvents]: LambdaEvents[K][0][] };

function record(handler: LambdaHandler): Recorded {
  const events = Object.fromEntries(MESSAGE_EVENTS.map((n) => [n, []])) as unknown as Recorded;
  for (const name of MESSAGE_EVENTS)
    handler.events.on(name, (e: unknown) => (events[name] as unknown[]).push(e));
  return events;
}

/** `batchItemFailures` as a sorted list of MessageIds. */
function failedIds(response: { batchItemFailures: { itemIdentifier: string }[] }): string[] {
  return response.batchItemFailures.map((f) => f.itemIdentifier).sort();
}

describe('Lambda handler', () => {
  const redis = useRedisNodes(3);
  const ledgerNode = useRedisNodes(1);
  const env = useSqs();
  let ledgerClient: Redis;
  let redlock: Redlock;
  /** Another owner (its own connections) for holding keys and checking they were released. */
  let other: Redlock;

  beforeAll(() => {
    ledgerClient = ledgerNode.clients()[0] as Redis;
    redlock = redlockOver(redis, { ttlMs: 3_000 }).redlock;
    other = redlockOver(redis, { ttlMs: 3_000 }).redlock;
  });
  afterAll(async () => {
    await Promise.all([redlock?.quit(), other?.quit()]);
  });

  /**
   * Sends `messages`, receives them back with every attribute, and builds the SQS event Lambda would.
   * `groupAs` maps the MessageGroupId sent to the one the record carries (see the FIFO test).
   */
  async function eventOf(
    queue: { queueUrl: string; queueName: string },
    messages: readonly OutgoingMessage[],
    groupAs?: (sentGroupId: string) => string,
  ): Promise<{ event: SQSEvent; ids: string[] }> {
    const ids = await sendMessages(env.sqs, queue.queueUrl, messages);
    const received: Message[] = [];
    for (let attempt = 0; received.length < ids.length && attempt < 20; attempt++) {
      const out = await env.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queue.queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 0,
          VisibilityTimeout: 60,
          MessageSystemAttributeNames: ['All'],
          MessageAttributeNames: ['All'],
        }),
      );
      // Only what was just sent: earlier messages made visible again are left alone.
      received.push(...(out.Messages ?? []).filter((m) => ids.includes(m.MessageId ?? '')));
    }
    expect(received).toHaveLength(ids.length);
    received.sort((a, b) => ids.indexOf(a.MessageId ?? '') - ids.indexOf(b.MessageId ?? ''));
    for (const message of received) {
      const group = message.Attributes?.MessageGroupId;
      if (groupAs && group && message.Attributes) message.Attributes.MessageGroupId = groupAs(group);
    }
    // Lambda hands the function plain JSON.
    const event = JSON.parse(
      JSON.stringify({ Records: received.map((m) => toRecord(m, queue.queueName)) }),
    ) as SQSEvent;
    return { event, ids };
  }

  function lambda(
    handler: LedgerHandler,
    queueUrl: string,
    options: Partial<Parameters<typeof createLambdaHandler>[1]> = {},
  ): { invoke: LambdaHandler; events: Recorded } {
    const invoke = createLambdaHandler(handler, {
      redlock,
      sqs: env.sqs,
      queueUrl,
      logger: silentLogger,
      ...options,
    });
    return { invoke, events: record(invoke) };
  }

  it('processes a batch: no failures, messages converted from the records; a redelivery is acked as a duplicate', async () => {
    const queue = env.createQueue('lambda-happy');
    const ledger = new Ledger(ledgerClient, 'lambda-happy');
    const handler = new CapturingHandler(ledger);
    const { invoke, events } = lambda(handler, queue.queueUrl, { deadLetterQueueUrl: false });
    const sent = jobs(5, 'h');
    const attributes = {
      tenant: { DataType: 'String', StringValue: 'acme' },
      blob: { DataType: 'Binary', BinaryValue: Buffer.from([0, 1, 2, 250]) },
      weight: { DataType: 'Number.kg', StringValue: '12.5' },
    };
    const { event, ids } = await eventOf(queue, [
      { ...sent[0], attributes } as OutgoingMessage,
      ...sent.slice(1),
    ]);

    expect(await invoke(event, lambdaContext())).toEqual({ batchItemFailures: [] });
    expect(await ledger.report(sent.map((j) => j.id))).toMatchObject({ applied: 5, appliedTwice: 0 });
    expect(events.message_processed.map((e) => e.messageId).sort()).toEqual([...ids].sort());
    expect(handler.seen.every((s) => s.receiveCount === 1 && s.fencingToken > 0 && !s.aborted)).toBe(true);
    const first = handler.messages.find((m) => m.MessageId === ids[0]);
    expect(first).toMatchObject({
      ReceiptHandle: event.Records[0]?.receiptHandle,
      Body: sent[0]?.body,
      Attributes: { ApproximateReceiveCount: '1', SenderId: ACCOUNT },
      MessageAttributes: {
        tenant: { DataType: 'String', StringValue: 'acme' },
        weight: { DataType: 'Number.kg', StringValue: '12.5' },
      },
    });
    expect([...(first?.MessageAttributes?.blob?.BinaryValue ?? [])]).toEqual([0, 1, 2, 250]);

    // The same records again (as after a lost delete): acked without running the handler.
    expect(await invoke(event, lambdaContext())).toEqual({ batchItemFailures: [] });
    expect(events.duplicate_skipped).toHaveLength(5);
    expect(await ledger.report(sent.map((j) => j.id))).toMatchObject({ runsStarted: 5, appliedTwice: 0 });
  });

  it('reports contended, failed and lock-lost messages in batchItemFailures, and only those', async () => {
    const queue = env.createQueue('lambda-mixed');
    const ledger = new Ledger(ledgerClient, 'lambda-mixed');
    const handler = new LedgerHandler(ledger);
    const { invoke, events } = lambda(handler, queue.queueUrl, { deadLetterQueueUrl: false });
    const [ok1, bad, held, ok2] = [
      ...jobs(1, 'ok1'),
      ...jobs(1, 'bad', { fail: true }),
      ...jobs(1, 'held'),
      ...jobs(1, 'ok2'),
    ] as { id: string; body: string }[];
    const { event, ids } = await eventOf(queue, [ok1, bad, held, ok2] as OutgoingMessage[]);
    const holder = await other.acquire(ids[2] as string, { retryCount: 0 });

    try {
      const response = await invoke(event, lambdaContext());
      expect(failedIds(response)).toEqual([ids[1], ids[2]].sort());
    } finally {
      await holder.release();
    }
    expect(events.message_processed.map((e) => e.messageId).sort()).toEqual([ids[0], ids[3]].sort());
    expect(events.handler_error).toHaveLength(1);
    expect(events.handler_error[0]?.retryInSec).toBeGreaterThanOrEqual(2);
    expect(events.lock_contended).toHaveLength(1);
    expect(events.lock_contended[0]?.messageId).toBe(ids[2]);
    expect(handler.order).not.toContain('held-0');
    expect(await ledger.report(['ok1-0', 'ok2-0', 'bad-0'])).toMatchObject({ applied: 2, appliedTwice: 0 });
  });

  it('a lock lost mid-handle: the signal aborts, the message is reported failed and not marked', async () => {
    const queue = env.createQueue('lambda-lost');
    const ledger = new Ledger(ledgerClient, 'lambda-lost');
    const handler = new LedgerHandler(ledger);
    const { redlock: shortLived } = redlockOver(redis, { ttlMs: 900, commandTimeoutMs: 100 });
    try {
      const { invoke, events } = lambda(handler, queue.queueUrl, {
        redlock: shortLived,
        deadLetterQueueUrl: false,
      });
      const { event, ids } = await eventOf(queue, jobs(1, 'long', { workMs: 3_000 }));
      const invoked = invoke(event, lambdaContext());
      await until(() => handler.order.length === 1);
      // A majority forgets the lock: the next extension finds it is no longer the owner.
      await Promise.all([redis.nodes[0]?.flushAll(), redis.nodes[1]?.flushAll()]);
      const started = performance.now();
      expect(failedIds(await invoked)).toEqual(ids);
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(events.lock_lost).toHaveLength(1);
      expect(events.lock_lost[0]?.error).toBeInstanceOf(LockLostError);
      expect(handler.seen[0]?.aborted).toBe(true);
      expect(await ledger.report(['long-0'])).toMatchObject({ applied: 0 });
      // Not marked complete: the redelivery runs.
      const [again] = await other.acquireMany(ids, { retryCount: 0 });
      expect(again && isLock(again)).toBe(true);
      await other.releaseMany(other.heldLocks);
    } finally {
      await shortLived.quit();
    }
  });

  it('dead-letters poison (the DLQ found once from the RedrivePolicy); with deadLetterQueueUrl false, reports it', async () => {
    const queue = env.createQueue('lambda-poison', { maxReceiveCount: 5 });
    const ledger = new Ledger(ledgerClient, 'lambda-poison');
    const handler = new LedgerHandler(ledger);
    const sqs = env.newClient();
    let redrivePolicyReads = 0;
    sqs.middlewareStack.add(
      (next, context) => (args) => {
        const names = (args.input as { AttributeNames?: string[] }).AttributeNames ?? [];
        if (context.commandName === 'GetQueueAttributesCommand' && names.includes('RedrivePolicy'))
          redrivePolicyReads++;
        return next(args);
      },
      { step: 'initialize' },
    );
    try {
      const { invoke, events } = lambda(handler, queue.queueUrl, { sqs });
      const good = jobs(2, 'fine');
      const first = await eventOf(queue, [good[0] as OutgoingMessage, { body: '{"id": "broken' }]);
      expect(await invoke(first.event, lambdaContext())).toEqual({ batchItemFailures: [] });
      const second = await eventOf(queue, [
        { body: JSON.stringify({ nope: true }) },
        good[1] as OutgoingMessage,
      ]);
      expect(await invoke(second.event, lambdaContext())).toEqual({ batchItemFailures: [] });
      expect(redrivePolicyReads).toBe(1);

      const dead = await drainQueue(env.sqs, queue.dlqUrl as string);
      expect(dead.map((m) => m.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).sort()).toEqual([
        'hydrate returned null',
        expect.stringMatching(/^hydrate threw: .*JSON/),
      ]);
      expect(
        dead.map((m) => m.MessageAttributes?.[POISON_ATTRIBUTES.sourceMessageId]?.StringValue).sort(),
      ).toEqual([first.ids[1], second.ids[0]].sort());
      expect(events.poison_message.every((e) => e.deadLettered)).toBe(true);
      expect(handler.order).toEqual(['fine-0', 'fine-1']);

      // No dead-letter queue: the poison message must come back, so it is a failure.
      const noDlq = lambda(handler, queue.queueUrl, { sqs, deadLetterQueueUrl: false });
      const third = await eventOf(queue, [{ body: 'not json' }, ...jobs(1, 'fine3')]);
      expect(failedIds(await noDlq.invoke(third.event, lambdaContext()))).toEqual([third.ids[0]]);
      expect(noDlq.events.poison_message).toMatchObject([{ messageId: third.ids[0], deadLettered: false }]);
      expect(await drainQueue(env.sqs, queue.dlqUrl as string)).toHaveLength(0);
    } finally {
      sqs.destroy();
    }
  });

  it('aborts running handlers safetyMarginMs before the timeout, releases their locks, reports them', async () => {
    const queue = env.createQueue('lambda-deadline');
    const ledger = new Ledger(ledgerClient, 'lambda-deadline');
    const handler = new LedgerHandler(ledger);
    const { invoke, events } = lambda(handler, queue.queueUrl, {
      deadLetterQueueUrl: false,
      safetyMarginMs: 1_000,
    });
    const { event, ids } = await eventOf(queue, jobs(2, 'slow', { workMs: 3_000 }));

    const started = performance.now();
    const response = await invoke(event, lambdaContext(1_500));
    const tookMs = performance.now() - started;
    expect(tookMs).toBeGreaterThan(400);
    expect(tookMs).toBeLessThan(1_500); // returned before the function's timeout
    expect(failedIds(response)).toEqual([...ids].sort());
    expect(env.counts(queue.queueName)).toMatchObject({ ready: 2 }); // visible again at once
    expect(handler.seen).toHaveLength(2);
    expect(handler.seen.every((s) => s.aborted)).toBe(true);
    expect(events.message_released.map((e) => e.reason)).toEqual(['shutdown', 'shutdown']);
    expect(await ledger.report(['slow-0', 'slow-1'])).toMatchObject({ applied: 0 });
    // Released, not left to expire: another owner gets them at once.
    const results = await other.acquireMany(ids, { retryCount: 0 });
    expect(results.every(isLock)).toBe(true);
    await other.releaseMany(other.heldLocks);

    // Less time left than the margin: nothing starts, everything is reported.
    const late = await eventOf(queue, jobs(2, 'late'));
    const before = handler.order.length;
    expect(failedIds(await invoke(late.event, lambdaContext(500)))).toEqual([...late.ids].sort());
    expect(handler.order.length).toBe(before);
  });

  it('FIFO: after a failure in a group, the rest of that group is reported failed; other groups go on', async () => {
    const queue = env.createQueue('lambda-fifo', { fifo: true });
    const ledger = new Ledger(ledgerClient, 'lambda-fifo');
    const handler = new LedgerHandler(ledger);
    const { invoke, events } = lambda(handler, queue.queueUrl, { deadLetterQueueUrl: false });
    const body = (id: string, extra: Partial<Job> = {}): string => JSON.stringify({ id, ...extra });
    // SQS returns several messages of a group in one receive; fauxqs returns one per group. So each
    // message is sent in a group of its own (real receipt handles, real visibility changes), and its
    // record carries the group it stands for: `a#2` -> `a`.
    const { event, ids } = await eventOf(
      queue,
      [
        { body: body('a-0'), groupId: 'a#0' },
        { body: body('b-0'), groupId: 'b#0' },
        { body: body('a-1', { fail: true }), groupId: 'a#1' },
        { body: body('b-1'), groupId: 'b#1' },
        { body: body('a-2'), groupId: 'a#2' },
        { body: body('a-3'), groupId: 'a#3' },
      ],
      (group) => group.slice(0, group.indexOf('#')),
    );
    expect(event.Records.map((r) => r.attributes.MessageGroupId)).toEqual(['a', 'b', 'a', 'b', 'a', 'a']);

    const response = await invoke(event, lambdaContext());
    expect(failedIds(response)).toEqual([ids[2], ids[4], ids[5]].sort());
    expect(handler.order.filter((id) => id.startsWith('a'))).toEqual(['a-0', 'a-1']);
    expect(handler.order.filter((id) => id.startsWith('b'))).toEqual(['b-0', 'b-1']);
    expect(events.message_released).toMatchObject([
      { messageId: ids[4], reason: 'fifo_order' },
      { messageId: ids[5], reason: 'fifo_order' },
    ]);
    // The unrun rest of the group is visible again at once; the failure waits out its backoff.
    expect(env.counts(queue.queueName)).toMatchObject({ ready: 2 });
  });

  it('makes the Redlock once per container (factory) and reuses its connections across invocations', async () => {
    const queue = env.createQueue('lambda-reuse');
    const ledger = new Ledger(ledgerClient, 'lambda-reuse');
    const handler = new LedgerHandler(ledger);
    let made = 0;
    let connects = 0;
    let created: Redlock | undefined;
    const invoke = createLambdaHandler(handler, {
      redlock: () => {
        made++;
        const { redlock: fresh, clients } = redlockOver(redis, { ttlMs: 3_000 });
        for (const client of clients) client.on('connect', () => connects++);
        created = fresh;
        return fresh;
      },
      sqs: env.sqs,
      queueUrl: queue.queueUrl,
      deadLetterQueueUrl: false,
      logger: silentLogger,
    });
    const probes = redis.nodes.map((node) => node.client());
    try {
      expect(made).toBe(0); // nothing connects before the first invocation
      const first = await eventOf(queue, jobs(3, 'r1'));
      expect(await invoke(first.event, lambdaContext())).toEqual({ batchItemFailures: [] });
      const clientsAfterFirst = await connectedClients();
      const second = await eventOf(queue, jobs(3, 'r2'));
      expect(await invoke(second.event, lambdaContext())).toEqual({ batchItemFailures: [] });
      expect(made).toBe(1);
      expect(connects).toBe(3); // one connection per node, made once
      expect(await connectedClients()).toEqual(clientsAfterFirst);
      expect(await ledger.report([...jobs(3, 'r1'), ...jobs(3, 'r2')].map((j) => j.id))).toMatchObject({
        applied: 6,
      });
    } finally {
      await created?.quit();
      for (const probe of probes) probe.disconnect();
    }

    /** Connections open on each node (the probes' own included, the same each time). */
    async function connectedClients(): Promise<number[]> {
      return Promise.all(
        probes.map(async (probe) => Number(/connected_clients:(\d+)/.exec(await probe.info('clients'))?.[1])),
      );
    }
  });

  it('never reports success when the batch fails unexpectedly: every message is a failure', async () => {
    const queue = env.createQueue('lambda-broken');
    const handler = new LedgerHandler(new Ledger(ledgerClient, 'lambda-broken'));
    let calls = 0;
    const { invoke } = lambda(handler, queue.queueUrl, {
      deadLetterQueueUrl: false,
      redlock: () => {
        calls++;
        throw new Error('no Redis configured');
      },
    });
    const { event, ids } = await eventOf(queue, jobs(3, 'x'));
    expect(failedIds(await invoke(event, lambdaContext()))).toEqual([...ids].sort());
    expect(failedIds(await invoke(event, lambdaContext()))).toEqual([...ids].sort());
    expect(calls).toBe(2); // a factory that threw is tried again on the next invocation

    const broken = Object.create(redlock) as Redlock;
    broken.acquireMany = async () => {
      throw new Error('boom');
    };
    const { invoke: invokeBroken } = lambda(handler, queue.queueUrl, {
      deadLetterQueueUrl: false,
      redlock: broken,
    });
    expect(failedIds(await invokeBroken(event, lambdaContext()))).toEqual([...ids].sort());
    expect(handler.order).toHaveLength(0);
  });

  it('runs an event shaped exactly like AWS sends it; queue URL from eventSourceARN; SQS errors never turn a failure into a success', async () => {
    const handler = new CapturingHandler(new Ledger(ledgerClient, 'lambda-fixture'));
    const invoke = createLambdaHandler(handler, {
      redlock,
      sqs: env.sqs,
      deadLetterQueueUrl: false,
      logger: silentLogger,
    });
    const events = record(invoke);
    const event = awsEvent();
    const response = await invoke(event, lambdaContext());
    // The failing record's backoff goes to a queue fauxqs does not have: reported, still a failure.
    expect(response).toEqual({
      batchItemFailures: [{ itemIdentifier: '2e1424d4-f796-459a-8184-9c92662be6da' }],
    });
    expect(events.sqs_error.map((e) => e.operation)).toEqual(['change_visibility']);
    expect(handler.messages.map((m) => m.MessageId)).toEqual([
      '059f36b4-87a3-44ab-83d2-661975830a7d',
      '2e1424d4-f796-459a-8184-9c92662be6da',
    ]);
    expect(handler.messages[0]).toEqual(recordToMessage(event.Records[0] as SQSRecord));
  });
});

describe('Lambda adapter: records, ARNs and options', () => {
  it('converts an AWS record to the SDK Message shape', () => {
    const [standard] = awsEvent().Records as [SQSRecord];
    expect(recordToMessage(standard)).toEqual({
      MessageId: '059f36b4-87a3-44ab-83d2-661975830a7d',
      ReceiptHandle: 'AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...',
      Body: JSON.stringify({ id: 'aws-0' }),
      MD5OfBody: 'e4e68fb7bd0e697a0ae8f1bb342846b3',
      Attributes: {
        ApproximateReceiveCount: '1',
        SentTimestamp: '1545082649183',
        SenderId: 'AIDAIENQZJOLO23YVJ4VO',
        ApproximateFirstReceiveTimestamp: '1545082649185',
      },
      MessageAttributes: {
        myAttribute: { DataType: 'String', StringValue: 'myValue' },
        myBinary: { DataType: 'Binary', BinaryValue: Buffer.from('hello') },
      },
    });
    const fifo = recordToMessage(awsFifoRecord());
    expect(fifo.Attributes).toMatchObject({ MessageGroupId: '1', SequenceNumber: '18849496460467696128' });
    expect(fifo.MessageAttributes).toBeUndefined();
  });

  it('derives queue URLs from ARNs, and a DLQ URL from its source queue URL', () => {
    expect(queueUrlFromArn('arn:aws:sqs:us-east-2:123456789012:my-queue')).toBe(
      'https://sqs.us-east-2.amazonaws.com/123456789012/my-queue',
    );
    expect(queueUrlFromArn('arn:aws-cn:sqs:cn-north-1:123456789012:q.fifo')).toBe(
      'https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q.fifo',
    );
    expect(queueUrlFromArn('arn:aws:sns:us-east-2:123456789012:topic')).toBeUndefined();
    expect(queueUrlFromArn('not an arn')).toBeUndefined();
    expect(queueUrlFromArn(undefined)).toBeUndefined();
    expect(
      siblingQueueUrl(
        'http://sqs.us-east-1.localhost:4566/000000000000/orders',
        '000000000000',
        'orders-dlq',
      ),
    ).toBe('http://sqs.us-east-1.localhost:4566/000000000000/orders-dlq');
    expect(
      siblingQueueUrl('https://sqs.eu-west-1.amazonaws.com/111111111111/a.fifo', '111111111111', 'b.fifo'),
    ).toBe('https://sqs.eu-west-1.amazonaws.com/111111111111/b.fifo');
  });

  it('rejects bad options with a ConfigError naming the option', () => {
    const handler = new LedgerHandler(undefined as never);
    const redlock = { acquireMany: () => [] } as unknown as Redlock;
    const bad: [string, () => unknown][] = [
      ['redlock', () => createLambdaHandler(handler, {} as never)],
      ['handler', () => createLambdaHandler({} as never, { redlock })],
      ['safetyMarginMs', () => createLambdaHandler(handler, { redlock, safetyMarginMs: -1 })],
      ['queueUrl', () => createLambdaHandler(handler, { redlock, queueUrl: 'my-queue' })],
      ['deadLetterQueueUrl', () => createLambdaHandler(handler, { redlock, deadLetterQueueUrl: 'dlq' })],
      ['retryMaxSec', () => createLambdaHandler(handler, { redlock, retryBaseSec: 10, retryMaxSec: 5 })],
      ['completionTtlMs', () => createLambdaHandler(handler, { redlock, completionTtlMs: 0 })],
      ['logMessageBodies', () => createLambdaHandler(handler, { redlock, logMessageBodies: 'yes' as never })],
    ];
    for (const [option, make] of bad) {
      expect(make, option).toThrow(ConfigError);
      try {
        make();
      } catch (error) {
        expect((error as ConfigError).option).toBe(option);
      }
    }
    const made = createLambdaHandler(handler, { redlock: () => redlock, logger: silentLogger });
    expect(made.options).toMatchObject({
      safetyMarginMs: 2_000,
      retryBaseSec: 2,
      deadLetterQueueUrl: undefined,
    });
  });
});

/** The sample event of the AWS Lambda docs ("Using Lambda with Amazon SQS"), with job bodies. */
function awsEvent(): SQSEvent {
  return JSON.parse(`{
    "Records": [
      {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": "{\\"id\\":\\"aws-0\\"}",
        "attributes": {
          "ApproximateReceiveCount": "1",
          "SentTimestamp": "1545082649183",
          "SenderId": "AIDAIENQZJOLO23YVJ4VO",
          "ApproximateFirstReceiveTimestamp": "1545082649185"
        },
        "messageAttributes": {
          "myAttribute": {
            "stringValue": "myValue",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String"
          },
          "myBinary": {
            "binaryValue": "aGVsbG8=",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary"
          }
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "awsRegion": "us-east-2"
      },
      {
        "messageId": "2e1424d4-f796-459a-8184-9c92662be6da",
        "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
        "body": "{\\"id\\":\\"aws-1\\",\\"fail\\":true}",
        "attributes": {
          "ApproximateReceiveCount": "1",
          "SentTimestamp": "1545082650636",
          "SenderId": "AIDAIENQZJOLO23YVJ4VO",
          "ApproximateFirstReceiveTimestamp": "1545082650649"
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "awsRegion": "us-east-2"
      }
    ]
  }`) as SQSEvent;
}

/** A FIFO record as in the AWS docs. */
function awsFifoRecord(): SQSRecord {
  return {
    messageId: '11d6ee51-4cc7-4302-9e22-7cd8afdaadf5',
    receiptHandle: 'AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...',
    body: 'Test message.',
    attributes: {
      ApproximateReceiveCount: '1',
      SentTimestamp: '1573251510774',
      SequenceNumber: '18849496460467696128',
      MessageGroupId: '1',
      SenderId: 'AIDAIO23YVJENQZJOL4VO',
      MessageDeduplicationId: '1',
      ApproximateFirstReceiveTimestamp: '1573251510774',
    },
    messageAttributes: {},
    md5OfBody: 'e4e68fb7bd0e697a0ae8f1bb342846b3',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:us-east-2:123456789012:fifo.fifo',
    awsRegion: 'us-east-2',
  };
}

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
