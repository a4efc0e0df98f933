import { randomBytes } from 'node:crypto';
import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import { BaseHandler, POISON_ATTRIBUTES } from '../../src/index.ts';
import { messageSize } from '../../src/runtime/sqs-actions.ts';
import { eventually, sleep } from '../helpers/lock.ts';
import { drainQueue, type SqsEnv, sendMessages } from '../helpers/sqs.ts';
import { useWorkerFixture } from '../helpers/worker.ts';

/** Every message is poison: hydrate throws with the error text its body asks for. */
class PoisonHandler extends BaseHandler<never> {
  hydrate(message: Message): never {
    const body = message.Body ?? '';
    throw new Error(body.startsWith('long-error') ? `bad input ${'x'.repeat(40_000)}` : 'bad input');
  }
  async handle(): Promise<void> {}
}

/** A client on fauxqs that counts the calls it sends, by command name. */
function countingClient(env: SqsEnv): { sqs: SQSClient; calls: Map<string, number> } {
  const sqs = env.newClient();
  const calls = new Map<string, number>();
  sqs.middlewareStack.add(
    (next, context) => (args) => {
      const name = context.commandName ?? '';
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return next(args);
    },
    { step: 'initialize', name: 'testCountCalls' },
  );
  return { sqs, calls };
}

describe('dead-letter sends that always fit', () => {
  const { env, workers } = useWorkerFixture();

  /** What reached the dead-letter queue, once something did. */
  const deadLettered = (dlqUrl: string) =>
    eventually(async () => {
      const got = await drainQueue(env.sqs, dlqUrl);
      return got.length > 0 && got;
    }, 8_000);
  afterEach(() => workers.stopAll());

  /** A source queue (no RedrivePolicy: DLQ_URL alone) and a DLQ of the given MaximumMessageSize. */
  const queues = (name: string, dlqMaxBytes: number, visibilityTimeoutSec = 30) => {
    const source = env.createQueue(name, { visibilityTimeoutSec });
    const dlq = env.server.createQueue(`${name}-dlq`, {
      attributes: { MaximumMessageSize: String(dlqMaxBytes) },
    });
    return { ...source, dlqUrl: dlq.queueUrl, dlqName: dlq.queueName };
  };

  it('dead-letters a poison message whose ten binary attributes would grow tenfold packed as JSON', async () => {
    const { queueUrl, queueName, dlqUrl } = queues('binary-attrs', 262_144);
    const attributes = Object.fromEntries(
      Array.from({ length: 10 }, (_, i) => [
        `blob${i}`,
        { DataType: 'Binary', BinaryValue: new Uint8Array(randomBytes(12_000)) },
      ]),
    );
    await sendMessages(env.sqs, queueUrl, [{ body: 'not json', attributes }]);
    const { events } = await workers.start(new PoisonHandler(), queueUrl, { deadLetterQueueUrl: dlqUrl });

    const [dead] = await deadLettered(dlqUrl);
    expect(dead?.Body).toBe('not json');
    // Ten of theirs and three of ours: theirs travel packed in one attribute, binary values in base64.
    const packed = JSON.parse(
      dead?.MessageAttributes?.['original-attributes']?.StringValue ?? '{}',
    ) as Record<string, { DataType: string; BinaryValue: string }>;
    for (const [name, value] of Object.entries(attributes)) {
      expect(packed[name]?.DataType).toBe('Binary');
      expect(
        Buffer.from(packed[name]?.BinaryValue ?? '', 'base64').equals(Buffer.from(value.BinaryValue)),
      ).toBe(true);
    }
    expect(dead?.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue).toBe('hydrate threw: bad input');
    await eventually(async () => env.counts(queueName).total === 0);
    expect(events.poison_message).toMatchObject([{ deadLettered: true }]);
  });

  it('shortens poison-error to fit the DLQ MaximumMessageSize; the body and the reason stay whole', async () => {
    const maxBytes = 24_576;
    const { queueUrl, queueName, dlqUrl } = queues('long-error', maxBytes);
    const body = `long-error ${'b'.repeat(16_000)}`;
    await sendMessages(env.sqs, queueUrl, [
      { body, attributes: { trace: { DataType: 'String', StringValue: 'abc' } } },
    ]);
    await workers.start(new PoisonHandler(), queueUrl, { deadLetterQueueUrl: dlqUrl });

    const [dead] = await deadLettered(dlqUrl);
    const attrs = dead?.MessageAttributes ?? {};
    expect(dead?.Body).toBe(body);
    expect(attrs.trace?.StringValue).toBe('abc');
    expect(attrs[POISON_ATTRIBUTES.sourceMessageId]?.StringValue).toBeTruthy();
    expect(attrs[POISON_ATTRIBUTES.reason]?.StringValue).toMatch(/^hydrate threw: bad input x+…$/);
    const error = attrs[POISON_ATTRIBUTES.error]?.StringValue ?? '';
    expect(error.length).toBeGreaterThan(1_000);
    expect(error.length).toBeLessThan(16_000);
    expect(error.endsWith('…')).toBe(true);
    expect(messageSize(dead?.Body ?? '', attrs)).toBeLessThanOrEqual(maxBytes);
    await eventually(async () => env.counts(queueName).total === 0);
  });

  it('sends the original with a minimal reason when nothing more of ours fits beside it', async () => {
    const maxBytes = 16_384;
    const { queueUrl, queueName, dlqUrl } = queues('minimal', maxBytes);
    const body = `long-error ${'b'.repeat(maxBytes - 200 - 11)}`;
    await sendMessages(env.sqs, queueUrl, [
      { body, attributes: { trace: { DataType: 'String', StringValue: 'abcdefghij' } } },
    ]);
    const { events } = await workers.start(new PoisonHandler(), queueUrl, { deadLetterQueueUrl: dlqUrl });

    const [dead] = await deadLettered(dlqUrl);
    const attrs = dead?.MessageAttributes ?? {};
    expect(dead?.Body).toBe(body);
    expect(attrs.trace?.StringValue).toBe('abcdefghij');
    expect(attrs[POISON_ATTRIBUTES.error]).toBeUndefined();
    const reason = attrs[POISON_ATTRIBUTES.reason]?.StringValue ?? '';
    expect(reason).toMatch(/^hydrate threw: bad input x+…$/);
    expect(Buffer.byteLength(reason)).toBeLessThanOrEqual(128);
    await eventually(async () => env.counts(queueName).total === 0);
    expect(events.poison_message).toMatchObject([{ deadLettered: true }]);
  });

  it('keeps a poison message larger than the DLQ allows in its queue, backed off, and sends nothing doomed', async () => {
    const { queueUrl, queueName, dlqUrl, dlqName } = queues('too-large', 1_024, 1);
    const { sqs, calls } = countingClient(env);
    await sendMessages(env.sqs, queueUrl, [{ body: 'p'.repeat(2_000) }]);
    const { worker, events } = await workers.start(new PoisonHandler(), queueUrl, {
      sqs,
      deadLetterQueueUrl: dlqUrl,
      retryBaseSec: 30,
    });
    const sqsErrors: string[] = [];
    worker.on('sqs_error', ({ operation }) => sqsErrors.push(operation));

    await eventually(async () => events.poison_message.length > 0);
    // Its visibility (1 s) would bring it back three times by now, each with a doomed send.
    await sleep(3_000);
    expect(events.poison_message).toMatchObject([{ deadLettered: false }]);
    expect(calls.get('SendMessageCommand') ?? 0).toBe(0);
    expect(env.counts(queueName).total).toBe(1); // never deleted: it waits for its redrive
    expect(env.counts(dlqName).total).toBe(0);
    expect(sqsErrors).toEqual(['dead_letter']);
    sqs.destroy();
  });

  it("reads the DLQ's MaximumMessageSize once, not per poison message nor per batch", async () => {
    const { queueUrl, queueName, dlqUrl, dlqName } = queues('read-once', 65_536);
    const { sqs, calls } = countingClient(env);
    await sendMessages(env.sqs, queueUrl, [{ body: 'one' }, { body: 'two' }, { body: 'three' }]);
    await workers.start(new PoisonHandler(), queueUrl, { sqs, deadLetterQueueUrl: dlqUrl });
    await eventually(async () => env.counts(dlqName).total === 3 && env.counts(queueName).total === 0, 8_000);
    await sendMessages(env.sqs, queueUrl, [{ body: 'four' }]);

    await eventually(async () => env.counts(dlqName).total === 4 && env.counts(queueName).total === 0, 8_000);
    expect(calls.get('GetQueueAttributesCommand')).toBe(1);
    sqs.destroy();
  });
});
