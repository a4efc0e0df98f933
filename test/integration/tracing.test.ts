/**
 * OpenTelemetry traces and messaging metrics with the real SDK (in-memory exporter, async hooks context
 * manager): real Workers on fauxqs and real redis-server nodes, a Publisher across the queue, the
 * Lambda adapter, and an SQS emulator that carries X-Ray's AWSTraceHeader (local-aws-sqs).
 */
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import {
  context,
  isSpanContextValid,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { lambdaContext, toRecord } from '../../examples/lambda/invoke.ts';
import type { HandlerContext, Redlock } from '../../src/index.ts';
import { createLambdaHandler } from '../../src/runtime/lambda.ts';
import { Publisher } from '../../src/runtime/publisher.ts';
import { type Job, LedgerHandler } from '../helpers/handlers.ts';
import { useLocalSqs } from '../helpers/local-sqs.ts';
import { eventually, redlockOver, silentLogger } from '../helpers/lock.ts';
import { capturingLogger } from '../helpers/logs.ts';
import { isChildOf, linksTo, useOtel } from '../helpers/otel.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

const HANDOFF_SECRET = 'tracing-test-handoff-secret-0123456789abc';

const tracer = (): Tracer => trace.getTracer('tracing-test');

/**
 * Keys by the job's `key` (lock and idempotency) when it has one, and works inside a span of its own,
 * which must nest under the message's process span.
 */
class TracedHandler extends LedgerHandler {
  readonly messages: Message[] = [];

  override idempotencyKey(job: Job, message: Message): string {
    return job.key ?? message.MessageId ?? job.id;
  }

  override async handle(job: Job, ctx: HandlerContext): Promise<void> {
    this.messages.push(ctx.message);
    await tracer().startActiveSpan(`handle ${job.id}`, async (span) => {
      try {
        await super.handle(job, ctx);
      } finally {
        span.end();
      }
    });
  }
}

/** A finished producer span, and its context as a W3C traceparent (written here, not by the library). */
function producerSpan(name: string): { traceparent: string; traceId: string; spanId: string } {
  const span = tracer().startSpan(name, { kind: SpanKind.PRODUCER, root: true });
  span.end();
  const { traceId, spanId } = span.spanContext();
  return { traceparent: `00-${traceId}-${spanId}-01`, traceId, spanId };
}

const string = (value: string) => ({ DataType: 'String', StringValue: value });

describe('OpenTelemetry tracing', () => {
  const otel = useOtel();
  const { env, workers, newLedger, redis } = useWorkerFixture();
  const local = useLocalSqs();

  afterEach(async () => {
    otel.faulty(false);
    await workers.stopAll();
  });

  const spansNamed = (name: string): ReadableSpan[] => otel.spans().filter((s) => s.name === name);
  const processSpan = (queueName: string, messageId: string | undefined): ReadableSpan | undefined =>
    spansNamed(`process ${queueName}`).find((s) => s.attributes['messaging.message.id'] === messageId);
  /** The span that is `span`'s parent, among those ended. */
  const parentOf = (span: ReadableSpan): ReadableSpan | undefined =>
    otel.spans().find((s) => s.spanContext().spanId === span.parentSpanContext?.spanId);

  describe('Worker', () => {
    it('a processed message: receive > (acquire, process > handler, delete), linked to its producer, with the lock attributes', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-processed');
      const handler = new TracedHandler(newLedger('otel-processed'));
      const { events } = await workers.start(handler, queueUrl);
      const producer = producerSpan('order placed');
      const [messageId] = await sendMessages(env.sqs, queueUrl, [
        {
          body: JSON.stringify({ id: 'p1' }),
          attributes: { traceparent: string(producer.traceparent), tracestate: string('vendor=value') },
        },
      ]);

      await eventually(async () => events.message_processed.length === 1);
      const process = await eventually(async () => processSpan(queueName, messageId));
      const [processed] = events.message_processed;
      expect(process.kind).toBe(SpanKind.CONSUMER);
      expect(process.attributes).toMatchObject({
        'messaging.system': 'aws_sqs',
        'messaging.destination.name': queueName,
        'messaging.operation.name': 'process',
        'messaging.operation.type': 'process',
        'messaging.message.id': messageId,
        'aws.sqs.queue.url': queueUrl,
        'sqs_redlock.outcome': 'processed',
        'sqs_redlock.lock.key': messageId,
        'sqs_redlock.lock.fencing_token': processed?.fencingToken,
        'sqs_redlock.lock.marked': true,
        'sqs_redlock.message.receive_count': 1,
      });
      expect(process.status.code).toBe(SpanStatusCode.UNSET);
      // The creation context, with its tracestate, as a link carrying the message's id.
      expect(process.links).toEqual([
        expect.objectContaining({ attributes: { 'messaging.message.id': messageId } }),
      ]);
      const [link] = process.links;
      expect(link?.context).toMatchObject({ traceId: producer.traceId, spanId: producer.spanId });
      expect(link?.context.traceState?.get('vendor')).toBe('value');

      const receive = parentOf(process);
      expect(receive?.name).toBe(`receive ${queueName}`);
      if (!receive) throw new Error('no receive span');
      expect(receive.kind).toBe(SpanKind.CLIENT);
      expect(receive.parentSpanContext).toBeUndefined(); // a trace of its own per ReceiveMessage
      expect(receive.attributes).toMatchObject({
        'messaging.operation.type': 'receive',
        'messaging.batch.message_count': 1,
        'messaging.destination.name': queueName,
      });
      expect(linksTo(receive, producer)).toBe(true);
      expect(process.spanContext().traceId).not.toBe(producer.traceId);

      const handlerSpan = spansNamed('handle p1')[0];
      expect(handlerSpan && isChildOf(handlerSpan, process)).toBe(true);
      const acquire = await eventually(async () =>
        spansNamed('sqs_redlock.acquire').find((s) => isChildOf(s, receive)),
      );
      expect(acquire.attributes).toMatchObject({
        'sqs_redlock.lock.keys': 1,
        'sqs_redlock.lock.granted': 1,
        'sqs_redlock.redis.nodes': 3,
        'sqs_redlock.redis.quorum': 2,
        'sqs_redlock.redis.failed_nodes': [],
      });
      const deleted = await eventually(async () =>
        spansNamed(`delete ${queueName}`).find((s) => isChildOf(s, receive)),
      );
      expect(deleted.kind).toBe(SpanKind.CLIENT);
      expect(deleted.attributes).toMatchObject({
        'messaging.operation.type': 'settle',
        'messaging.operation.name': 'delete',
        'messaging.batch.message_count': 1,
      });
      expect(deleted.status.code).toBe(SpanStatusCode.UNSET);
    });

    it('a duplicate: process span with outcome duplicate and the idempotency key, no handler span', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-duplicate');
      const handler = new TracedHandler(newLedger('otel-duplicate'), { keyBy: 'key' });
      const { events, redlock } = await workers.start(handler, queueUrl);
      const done = await redlock.acquire('order-7');
      expect(await done.complete()).toBe(true);
      const [messageId] = await sendMessages(env.sqs, queueUrl, [
        { body: JSON.stringify({ id: 'd1', key: 'order-7' }) },
      ]);

      await eventually(async () => events.duplicate_skipped.length === 1);
      const process = await eventually(async () => processSpan(queueName, messageId));
      expect(process.attributes).toMatchObject({
        'sqs_redlock.outcome': 'duplicate',
        'sqs_redlock.lock.key': 'order-7',
        'sqs_redlock.lock.idempotency_key': 'order-7',
      });
      expect(process.attributes['sqs_redlock.lock.fencing_token']).toBeUndefined();
      expect(process.status.code).toBe(SpanStatusCode.UNSET);
      expect(spansNamed('handle d1')).toEqual([]);
      const receive = parentOf(process);
      if (!receive) throw new Error('no receive span');
      const acquire = spansNamed('sqs_redlock.acquire').find((s) => isChildOf(s, receive));
      expect(acquire?.attributes).toMatchObject({
        'sqs_redlock.lock.duplicates': 1,
        'sqs_redlock.lock.granted': 0,
      });
      await eventually(async () => spansNamed(`delete ${queueName}`).find((s) => isChildOf(s, receive)));
    });

    it('a contended message: outcome contended, its backoff, and a change_visibility settle span', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-contended');
      const handler = new TracedHandler(newLedger('otel-contended'), { keyBy: 'key' });
      const { events, redlock } = await workers.start(handler, queueUrl);
      const holder = await redlock.acquire('busy-1');
      try {
        const [messageId] = await sendMessages(env.sqs, queueUrl, [
          { body: JSON.stringify({ id: 'c1', key: 'busy-1' }) },
        ]);
        await eventually(async () => events.lock_contended.length === 1);
        const process = await eventually(async () =>
          spansNamed(`process ${queueName}`).find(
            (s) =>
              s.attributes['messaging.message.id'] === messageId &&
              s.attributes['sqs_redlock.outcome'] === 'contended',
          ),
        );
        expect(process.attributes).toMatchObject({
          'sqs_redlock.lock.key': 'busy-1',
          'sqs_redlock.message.retry_in_sec': events.lock_contended[0]?.retryInSec,
        });
        expect(process.status.code).toBe(SpanStatusCode.UNSET);
        const receive = parentOf(process);
        if (!receive) throw new Error('no receive span');
        const acquire = spansNamed('sqs_redlock.acquire').find((s) => isChildOf(s, receive));
        expect(acquire?.attributes).toMatchObject({ 'sqs_redlock.lock.contended': 1 });
        const backoff = await eventually(async () =>
          spansNamed(`change_visibility ${queueName}`).find((s) => isChildOf(s, receive)),
        );
        expect(backoff.attributes).toMatchObject({
          'messaging.operation.type': 'settle',
          'messaging.batch.message_count': 1,
        });
      } finally {
        await holder.release();
      }
    });

    it('a poison message: status error, error.type and the exception recorded, dead-lettered', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-poison', { maxReceiveCount: 3 });
      const handler = new TracedHandler(newLedger('otel-poison'));
      const { events } = await workers.start(handler, queueUrl);
      const [messageId] = await sendMessages(env.sqs, queueUrl, [{ body: 'not json' }]);

      await eventually(async () => events.poison_message.length === 1);
      expect(events.poison_message[0]?.deadLettered).toBe(true);
      const process = await eventually(async () => processSpan(queueName, messageId));
      expect(process.attributes).toMatchObject({
        'sqs_redlock.outcome': 'poison',
        'sqs_redlock.poison.dead_lettered': true,
        'error.type': 'SyntaxError',
      });
      expect(String(process.attributes['sqs_redlock.poison.reason'])).toMatch(/^hydrate threw: /);
      expect(process.status).toMatchObject({ code: SpanStatusCode.ERROR });
      expect(process.events.map((e) => [e.name, e.attributes?.['exception.type']])).toEqual([
        ['exception', 'SyntaxError'],
      ]);
      // hydrate refused it: no lock was asked for.
      const receive = parentOf(process);
      if (!receive) throw new Error('no receive span');
      expect(spansNamed('sqs_redlock.acquire').filter((s) => isChildOf(s, receive))).toEqual([]);
    });

    it('a failed handler: status error with the exception, its fencing token and backoff; the metrics say so too', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-failed', { maxReceiveCount: 5 });
      const handler = new TracedHandler(newLedger('otel-failed'));
      const { events } = await workers.start(handler, queueUrl);
      const failedBefore = await sumOf('messaging.process.duration', {
        'messaging.destination.name': queueName,
        'sqs_redlock.outcome': 'failed',
        'error.type': 'Error',
      });
      const [messageId] = await sendMessages(env.sqs, queueUrl, [
        { body: JSON.stringify({ id: 'f1', fail: true }) },
      ]);

      await eventually(async () => events.handler_error.length === 1);
      const [failed] = events.handler_error;
      const process = await eventually(async () => processSpan(queueName, messageId));
      expect(process.attributes).toMatchObject({
        'sqs_redlock.outcome': 'failed',
        'sqs_redlock.lock.fencing_token': failed?.fencingToken,
        'sqs_redlock.message.retry_in_sec': failed?.retryInSec,
        'error.type': 'Error',
      });
      expect(process.status).toEqual({ code: SpanStatusCode.ERROR, message: 'job f1 failed on receive 1' });
      expect(process.events[0]?.attributes).toMatchObject({
        'exception.type': 'Error',
        'exception.message': 'job f1 failed on receive 1',
      });
      // The handler's own span failed inside the process span.
      const handlerSpan = spansNamed('handle f1')[0];
      expect(handlerSpan && isChildOf(handlerSpan, process)).toBe(true);
      const receive = parentOf(process);
      if (!receive) throw new Error('no receive span');
      await eventually(async () =>
        spansNamed(`change_visibility ${queueName}`).find((s) => isChildOf(s, receive)),
      );

      expect(
        await sumOf('messaging.process.duration', {
          'messaging.destination.name': queueName,
          'sqs_redlock.outcome': 'failed',
          'error.type': 'Error',
        }),
      ).toBe(failedBefore + 1);
      expect(
        await sumOf('messaging.client.consumed.messages', {
          'messaging.destination.name': queueName,
          'messaging.operation.name': 'receive',
        }),
      ).toBeGreaterThanOrEqual(1);
      for (const operation of ['receive', 'change_visibility']) {
        expect(
          await sumOf('messaging.client.operation.duration', {
            'messaging.destination.name': queueName,
            'messaging.operation.name': operation,
          }),
        ).toBeGreaterThanOrEqual(1);
      }
    });

    it("a Publisher's send span is the creation context: the worker's process span links to it, across the queue", async () => {
      const { queueUrl, queueName } = env.createQueue('otel-publisher');
      const handler = new TracedHandler(newLedger('otel-publisher'));
      const { events, redlock } = await workers.start(handler, queueUrl, { handoffSecret: HANDOFF_SECRET });
      const publisher = new Publisher({
        sqs: env.sqs,
        queueUrl,
        redlock,
        handoffSecret: HANDOFF_SECRET,
        logger: silentLogger,
      });
      const { tick, out } = await tracer().startActiveSpan('scheduler tick', async (tick) => {
        const out = await publisher.dispatch({ taskKey: 'report-9', body: JSON.stringify({ id: 'r9' }) });
        tick.end();
        return { tick, out };
      });
      if (!out.dispatched) throw new Error(`not dispatched: ${JSON.stringify(out)}`);

      const send = spansNamed(`send ${queueName}`)[0];
      if (!send) throw new Error('no send span');
      expect(send.kind).toBe(SpanKind.PRODUCER);
      expect(send.parentSpanContext?.spanId).toBe(tick.spanContext().spanId);
      expect(send.attributes).toMatchObject({
        'messaging.operation.type': 'send',
        'messaging.message.id': out.messageId,
        'sqs_redlock.lock.key': 'report-9',
        'sqs_redlock.lock.fencing_token': out.fencingToken,
        'sqs_redlock.dispatch.result': 'dispatched',
      });

      await eventually(async () => events.message_processed.length === 1);
      const process = await eventually(async () => processSpan(queueName, out.messageId));
      expect(linksTo(process, send)).toBe(true);
      // The handoff still verified (its HMAC does not cover traceparent): adopted with the same token.
      expect(process.attributes).toMatchObject({
        'sqs_redlock.lock.key': 'report-9',
        'sqs_redlock.lock.fencing_token': out.fencingToken,
      });
      const { traceId, spanId } = send.spanContext();
      expect(handler.messages[0]?.MessageAttributes?.traceparent?.StringValue).toBe(
        `00-${traceId}-${spanId}-01`,
      );
    });

    it('Publisher: traceparent only when the message has room under the 10 attributes (handoff included)', async () => {
      const { queueUrl } = env.createQueue('otel-room');
      const { logger, entries } = capturingLogger();
      const { redlock } = await workers.start(
        new TracedHandler(newLedger('otel-room')),
        env.createQueue('otel-room-idle').queueUrl,
      );
      const publisher = new Publisher({
        sqs: env.sqs,
        queueUrl,
        redlock,
        handoffSecret: HANDOFF_SECRET,
        logger,
      });
      const own = (count: number) =>
        Object.fromEntries(Array.from({ length: count }, (_, i) => [`a${i}`, string(`v${i}`)]));
      await tracer().startActiveSpan('tick', async (tick) => {
        for (const [taskKey, count] of [
          ['full', 6],
          ['room', 5],
        ] as const) {
          const out = await publisher.dispatch({
            taskKey,
            body: '{"id":"x"}',
            messageAttributes: own(count),
          });
          expect(out.dispatched).toBe(true);
        }
        tick.end();
      });
      const byTask = new Map(
        (await drainQueue(env.sqs, queueUrl)).map((m) => [
          m.MessageAttributes?.['srw-lock-key']?.StringValue,
          m.MessageAttributes ?? {},
        ]),
      );
      expect(Object.keys(byTask.get('full') ?? {})).toHaveLength(10);
      expect(byTask.get('full')?.traceparent).toBeUndefined();
      expect(Object.keys(byTask.get('room') ?? {})).toHaveLength(10);
      expect(byTask.get('room')?.traceparent?.StringValue).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(entries.filter((l) => l.message.startsWith('traceparent not added'))).toEqual([
        expect.objectContaining({ level: 'debug', lockKey: 'full', attributes: 10 }),
      ]);
    });

    it('links a message sent with an X-Ray AWSTraceHeader (requested on receive) to that context', async () => {
      // fauxqs drops AWSTraceHeader; local-aws-sqs keeps it, and returns it only when asked for.
      const { sqs } = local;
      const { QueueUrl: queueUrl = '' } = await sqs.send(new CreateQueueCommand({ QueueName: 'otel-xray' }));
      const handler = new TracedHandler(newLedger('otel-xray'));
      const { events } = await workers.start(handler, queueUrl, { sqs, deadLetterQueueUrl: false });
      const { MessageId: messageId } = await sqs.send(
        new SendMessageCommand({
          QueueUrl: queueUrl,
          MessageBody: JSON.stringify({ id: 'x1' }),
          MessageSystemAttributes: {
            AWSTraceHeader: string(
              'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1',
            ),
          },
        }),
      );
      await eventually(async () => events.message_processed.length === 1, 10_000);
      const process = await eventually(async () => processSpan('otel-xray', messageId));
      expect(process.links.map((l) => l.context)).toEqual([
        expect.objectContaining({
          traceId: '5759e988bd862e3fe1be46a994272793',
          spanId: '53995c3f42cd8ad8',
          traceFlags: 1,
          isRemote: true,
        }),
      ]);
    });

    it('a span processor that throws changes no outcome: the message is processed and deleted', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-faulty');
      const ledger = newLedger('otel-faulty');
      const { events } = await workers.start(new LedgerHandler(ledger), queueUrl);
      otel.faulty(true);
      await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'q1' }) }]);
      await eventually(
        async () => events.message_processed.length === 1 && env.counts(queueName).total === 0,
      );
      expect(await ledger.report(['q1'])).toMatchObject({ applied: 1, appliedTwice: 0 });
      expect(events.handler_error).toEqual([]);
    });

    it('a context manager that throws changes no outcome: the batch runs outside the context', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-faulty-context');
      const ledger = newLedger('otel-faulty-context');
      const { events } = await workers.start(new LedgerHandler(ledger), queueUrl);
      const withSpy = vi.spyOn(context, 'with').mockImplementation(() => {
        throw new Error('faulty context manager: with');
      });
      try {
        await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'c1' }) }]);
        await eventually(
          async () => events.message_processed.length === 1 && env.counts(queueName).total === 0,
        );
        expect(withSpy).toHaveBeenCalled();
      } finally {
        withSpy.mockRestore();
      }
      expect(await ledger.report(['c1'])).toMatchObject({ applied: 1, appliedTwice: 0 });
    });

    it('without an SDK registered: no spans, no metrics, the handler in no recording span', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-none');
      otel.unregister();
      try {
        let active: { recording: boolean; valid: boolean } | undefined;
        const handler = new (class extends LedgerHandler {
          override async handle(job: Job, ctx: HandlerContext): Promise<void> {
            const span = trace.getActiveSpan();
            const spanContext = span?.spanContext();
            active = {
              recording: span?.isRecording() ?? false,
              valid: spanContext !== undefined && isSpanContextValid(spanContext),
            };
            await super.handle(job, ctx);
          }
        })(newLedger('otel-none'));
        const { events } = await workers.start(handler, queueUrl);
        const spansBefore = otel.spans().length;
        await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'n1' }) }]);
        await eventually(
          async () => events.message_processed.length === 1 && env.counts(queueName).total === 0,
        );
        await workers.stopAll();
        expect(active).toEqual({ recording: false, valid: false });
        expect(otel.spans().slice(spansBefore)).toEqual([]);
      } finally {
        otel.register();
      }
      expect(await sumOf('messaging.process.duration', { 'messaging.destination.name': queueName })).toBe(0);
      expect(
        await sumOf('messaging.client.consumed.messages', { 'messaging.destination.name': queueName }),
      ).toBe(0);
    });
  });

  describe('Lambda', () => {
    let lambdaRedlock: Redlock;
    beforeAll(async () => {
      const { redlock, clients } = redlockOver(redis, { ttlMs: 3_000 });
      lambdaRedlock = redlock;
      await eventually(async () => clients.every((c) => c.status === 'ready'));
    });
    afterAll(() => lambdaRedlock.quit());

    it('a process span per record under the batch span, in the invocation context, linked by AWSTraceHeader or traceparent', async () => {
      const { queueUrl, queueName } = env.createQueue('otel-lambda');
      const handler = new TracedHandler(newLedger('otel-lambda'));
      const lambda = createLambdaHandler(handler, {
        redlock: lambdaRedlock,
        sqs: env.sqs,
        queueUrl,
        deadLetterQueueUrl: false,
        logger: silentLogger,
      });
      const producer = producerSpan('sent over w3c');
      const ids = await sendMessages(env.sqs, queueUrl, [
        { body: JSON.stringify({ id: 'l1' }) },
        { body: JSON.stringify({ id: 'l2' }), attributes: { traceparent: string(producer.traceparent) } },
      ]);
      const { Attributes } = await env.sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }),
      );
      const received: Message[] = [];
      await eventually(async () => {
        const { Messages = [] } = await env.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: queueUrl,
            MaxNumberOfMessages: 10,
            MessageAttributeNames: ['All'],
            MessageSystemAttributeNames: ['All'],
          }),
        );
        received.push(...Messages);
        return received.length === 2;
      });
      const records = received.map((m) => toRecord(m, Attributes?.QueueArn ?? ''));
      const xrayRecord = records.find((r) => r.messageId === ids[0]);
      if (!xrayRecord) throw new Error('no record l1');
      // As the event source mapping passes it for a message sent with X-Ray tracing on.
      Object.assign(xrayRecord.attributes, {
        AWSTraceHeader: 'Root=1-6759e988-cd862e3fe1be46a994272794;Parent=63995c3f42cd8ad9;Sampled=0',
      });

      const invocation = tracer().startSpan('orders-function', { kind: SpanKind.SERVER, root: true });
      const response = await context.with(trace.setSpan(context.active(), invocation), () =>
        lambda({ Records: records }, lambdaContext(30_000)),
      );
      invocation.end();
      expect(response).toEqual({ batchItemFailures: [] });

      const batch = spansNamed(`process ${queueName}`).find((s) =>
        isChildOf(s, invocation as unknown as ReadableSpan),
      );
      if (!batch) throw new Error('no batch span under the invocation');
      expect(batch.kind).toBe(SpanKind.CONSUMER);
      expect(batch.attributes).toMatchObject({
        'messaging.batch.message_count': 2,
        'messaging.operation.type': 'process',
      });
      const [xray, w3c] = ids.map((id) => processSpan(queueName, id));
      if (!xray || !w3c) throw new Error('a record has no process span');
      for (const span of [xray, w3c]) {
        expect(isChildOf(span, batch)).toBe(true);
        expect(span.attributes['sqs_redlock.outcome']).toBe('processed');
      }
      expect(xray.links.map((l) => l.context)).toEqual([
        expect.objectContaining({
          traceId: '6759e988cd862e3fe1be46a994272794',
          spanId: '63995c3f42cd8ad9',
          traceFlags: 0,
        }),
      ]);
      expect(linksTo(w3c, producer)).toBe(true);
      const handlerSpan = spansNamed('handle l2')[0];
      expect(handlerSpan && isChildOf(handlerSpan, w3c)).toBe(true);
    });
  });

  /** The sum (counters) or count (histograms) of a metric's data points matching `attributes`. */
  async function sumOf(name: string, attributes: Record<string, string>): Promise<number> {
    const points = await otel.points(name);
    let total = 0;
    for (const point of points) {
      if (!Object.entries(attributes).every(([k, v]) => point.attributes[k] === v)) continue;
      const value = point.value as number | { count: number };
      total += typeof value === 'number' ? value : value.count;
    }
    return total;
  }
});
