/**
 * Review of the OpenTelemetry tracing (issue 11), with the real SDK and real parts: spans that must
 * end on every path (a lock round trip that throws, shutdown past its deadline, a hung delete, no
 * quorum), hostile producer trace attributes, and a Publisher whose trace context must never make
 * SQS refuse a message it would otherwise accept.
 */
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { SpanStatusCode, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterEach, describe, expect, it } from 'vitest';
import { BaseHandler, type HandlerContext } from '../../src/index.ts';
import { Publisher } from '../../src/runtime/publisher.ts';
import { messageSize } from '../../src/runtime/sqs-actions.ts';
import { LedgerHandler } from '../helpers/handlers.ts';
import { eventually, silentLogger, sleep } from '../helpers/lock.ts';
import { type Otel, useOtel } from '../helpers/otel.ts';
import { drainQueue, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

const HANDOFF_SECRET = 'review-otel-handoff-secret-0123456789abcdef';

/** Names of the spans of one queue (or its lock span) started and never ended. */
function openSpansOf(otel: Otel, queueName: string): string[] {
  const open = otel.openSpans();
  const receives = new Set(
    [...open, ...otel.spans()]
      .filter((s) => s.name === `receive ${queueName}`)
      .map((s) => s.spanContext().spanId),
  );
  return open
    .filter(
      (s) =>
        s.name.endsWith(` ${queueName}`) ||
        (s.name === 'sqs_redlock.acquire' && receives.has(s.parentSpanContext?.spanId ?? '')),
    )
    .map((s) => s.name);
}

const string = (value: string) => ({ DataType: 'String', StringValue: value });

/** Works for `ms`, deaf to its signal (a handler that outlives the shutdown deadline). */
class DeafHandler extends BaseHandler<{ id: string }> {
  readonly done: string[] = [];
  readonly ms: number;
  constructor(ms: number) {
    super();
    this.ms = ms;
  }
  hydrate(message: Message): { id: string } {
    return JSON.parse(message.Body ?? '{}') as { id: string };
  }
  async handle(job: { id: string }, _ctx: HandlerContext): Promise<void> {
    await sleep(this.ms);
    this.done.push(job.id);
  }
}

describe('review: OpenTelemetry spans end on every path, and never change an outcome', () => {
  const otel = useOtel();
  const { env, workers, newLedger, redis } = useWorkerFixture();
  const clients: SQSClient[] = [];

  afterEach(async () => {
    await workers.stopAll();
    for (const c of clients.splice(0)) c.destroy();
  });

  const processSpans = (queueName: string): ReadableSpan[] =>
    otel.spans().filter((s) => s.name === `process ${queueName}`);

  it('a lock round trip that throws (acquireOrAdopt) leaves no span open; the message comes back and is processed', async () => {
    const { queueUrl, queueName } = env.createQueue('rv-acquire-throws', { visibilityTimeoutSec: 1 });
    const handler = new LedgerHandler(newLedger('rv-acquire-throws'));
    const { events, redlock } = await workers.start(handler, queueUrl, { visibilityTimeoutSec: 2 });
    const acquireMany = redlock.acquireMany.bind(redlock);
    let calls = 0;
    redlock.acquireMany = ((...args: Parameters<typeof acquireMany>) => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('acquireMany exploded'));
      return acquireMany(...args);
    }) as typeof redlock.acquireMany;
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'a1' }) }]);

    await eventually(async () => events.message_processed.length === 1, 10_000);
    await workers.stopAll();
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(openSpansOf(otel, queueName)).toEqual([]);
    const failedAcquire = otel
      .spans()
      .find((s) => s.name === 'sqs_redlock.acquire' && s.status.code === SpanStatusCode.ERROR);
    expect(failedAcquire?.events.some((e) => e.name === 'exception')).toBe(true);
    const outcomes = processSpans(queueName).map((s) => [s.status.code, s.attributes['sqs_redlock.outcome']]);
    expect(outcomes).toEqual(
      expect.arrayContaining([
        [SpanStatusCode.ERROR, undefined],
        [SpanStatusCode.UNSET, 'processed'],
      ]),
    );
  });

  it('hostile traceparent / tracestate attributes: every message processed, links only to valid contexts, no span open', async () => {
    const { queueUrl, queueName } = env.createQueue('rv-hostile');
    const handler = new LedgerHandler(newLedger('rv-hostile'));
    const { events } = await workers.start(handler, queueUrl, { batchSize: 10 });
    const trace32 = '4bf92f3577b34da6a3ce929d0e0e4736';
    const span16 = '00f067aa0ba902b7';
    const valid = `00-${trace32}-${span16}-01`;
    const hostile: Record<string, { DataType: string; StringValue?: string; BinaryValue?: Uint8Array }>[] = [
      { traceparent: string(valid) },
      { traceparent: string(valid.toUpperCase()) },
      { traceparent: string(`00-${'0'.repeat(32)}-${span16}-01`) },
      { traceparent: string(`00-${trace32}-${'0'.repeat(16)}-01`) },
      { traceparent: string(`ff-${trace32}-${span16}-01`) },
      { traceparent: string(`00-${trace32}-${span16}-01-extra`) },
      { traceparent: string(`00-${trace32}-${span16.slice(2)}-01`) },
      { traceparent: string(`00-${trace32}-${span16}-01${'-x'.repeat(2_600)}`) },
      {
        traceparent: { DataType: 'Binary', BinaryValue: new TextEncoder().encode(valid) },
        tracestate: string('a=b'),
      },
      { traceparent: string(valid), tracestate: string(`${'k=v,'.repeat(1_000)}=,=,,,  ,@@@=\u00e9`) },
    ];
    const ids = await sendMessages(
      env.sqs,
      queueUrl,
      hostile.map((attributes, i) => ({ body: JSON.stringify({ id: `h${i}` }), attributes })),
    );

    await eventually(async () => events.message_processed.length === ids.length, 10_000);
    await workers.stopAll();
    expect(openSpansOf(otel, queueName)).toEqual([]);
    const linked = new Map(
      processSpans(queueName).map((s) => [s.attributes['messaging.message.id'], s.links.length]),
    );
    expect(ids.map((id) => linked.get(id))).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(otel.diagErrors).toEqual([]);
  });

  it('shutdown past its deadline: the running message’s process span stays open until it settles, then ends once, processed', async () => {
    const { queueUrl, queueName } = env.createQueue('rv-shutdown');
    const handler = new DeafHandler(1_200);
    const { worker, events } = await workers.start(handler, queueUrl);
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 's1' }) }]);
    await eventually(async () => worker.batchesInFlight === 1);
    await sleep(100);
    await worker.stop({ timeoutMs: 100 });
    expect(openSpansOf(otel, queueName)).toContain(`process ${queueName}`);

    await eventually(
      async () => events.message_processed.length === 1 && worker.batchesInFlight === 0,
      10_000,
    );
    await eventually(async () => openSpansOf(otel, queueName).length === 0);
    const [process] = processSpans(queueName);
    expect(process?.attributes['sqs_redlock.outcome']).toBe('processed');
    expect(env.counts(queueName).total).toBe(0);
    expect(otel.diagErrors).toEqual([]);
  });

  it('a hung DeleteMessageBatch: its settle span ends with the error, the process span ends, nothing stays open', async () => {
    const { queueUrl, queueName } = env.createQueue('rv-hung-delete');
    const sqs = env.newClient();
    clients.push(sqs);
    sqs.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (ctx.commandName === 'DeleteMessageBatchCommand') await sleep(700);
        return next(args);
      },
      { step: 'initialize', name: 'hangDeletes' },
    );
    const handler = new LedgerHandler(newLedger('rv-hung-delete'));
    const { events } = await workers.start(handler, queueUrl, { sqs, sqsTimeoutMs: 300 });
    await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'd1' }) }]);

    await eventually(async () => events.message_processed.length === 1, 10_000);
    const deleted = await eventually(async () => otel.spans().find((s) => s.name === `delete ${queueName}`));
    await workers.stopAll();
    expect(deleted.status.code).toBe(SpanStatusCode.ERROR);
    expect(deleted.attributes['error.type']).toBeTypeOf('string');
    expect(openSpansOf(otel, queueName)).toEqual([]);
    expect(processSpans(queueName)[0]?.attributes['sqs_redlock.outcome']).toBe('processed');
  });

  it('no Redis quorum: outcome quorum_unavailable with status ERROR, and no span open', async () => {
    const { queueUrl, queueName } = env.createQueue('rv-quorum');
    const handler = new LedgerHandler(newLedger('rv-quorum'));
    const { events } = await workers.start(handler, queueUrl, { lock: { commandTimeoutMs: 200 } });
    const [a, b] = redis.nodes;
    a?.pause();
    b?.pause();
    try {
      await sendMessages(env.sqs, queueUrl, [{ body: JSON.stringify({ id: 'q1' }) }]);
      await eventually(async () => events.quorum_unavailable.length === 1, 10_000);
      const process = await eventually(async () => processSpans(queueName)[0]);
      expect(process.attributes['sqs_redlock.outcome']).toBe('quorum_unavailable');
      expect(process.status.code).toBe(SpanStatusCode.ERROR);
      expect(process.attributes['error.type']).toBe('quorum_unavailable');
    } finally {
      a?.resume();
      b?.resume();
    }
    await workers.stopAll();
    expect(openSpansOf(otel, queueName)).toEqual([]);
  });

  it('Publisher: a message that fits the queue’s MaximumMessageSize is still sent when tracing is on (traceparent skipped)', async () => {
    const { queueUrl } = env.server.createQueue('rv-max-size', {
      attributes: { MaximumMessageSize: '1024' },
    });
    const { redlock } = await workers.start(
      new LedgerHandler(newLedger('rv-max-size')),
      env.createQueue('rv-max-size-idle').queueUrl,
    );
    // What SQS counts of each sent message, without the trace context.
    const sqs = env.newClient();
    clients.push(sqs);
    const sizes: number[] = [];
    sqs.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (ctx.commandName === 'SendMessageCommand') {
          const input = args.input as { MessageBody: string; MessageAttributes: Record<string, never> };
          const { traceparent: _p, tracestate: _s, ...rest } = input.MessageAttributes;
          sizes.push(messageSize(input.MessageBody, rest));
        }
        return next(args);
      },
      { step: 'initialize', name: 'measure' },
    );
    const publisher = new Publisher({
      sqs,
      queueUrl,
      redlock,
      handoffSecret: HANDOFF_SECRET,
      logger: silentLogger,
    });
    const tracer = trace.getTracer('review');
    await tracer.startActiveSpan('tick', async (tick) => {
      const probe = await publisher.dispatch({ taskKey: 'size-000', body: 'x' });
      expect(probe.dispatched).toBe(true);
      const base = (sizes[0] ?? 0) - 1;
      // 8 bytes short of the limit (a longer fencing token takes 1): a traceparent (72 bytes) does not fit.
      const body = 'y'.repeat(1024 - base - 8);
      const out = await publisher.dispatch({ taskKey: 'size-001', body });
      expect(sizes[1]).toBeLessThanOrEqual(1024);
      expect(out.dispatched).toBe(true);
      tick.end();
    });
    const messages = await drainQueue(env.sqs, queueUrl);
    const byTask = new Map(messages.map((m) => [m.MessageAttributes?.['srw-lock-key']?.StringValue, m]));
    expect(byTask.get('size-000')?.MessageAttributes?.traceparent).toBeDefined();
    expect(byTask.get('size-001')?.MessageAttributes?.traceparent).toBeUndefined();
  });
});
