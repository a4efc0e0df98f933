import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type MessageAttributeValue,
  type MessageSystemAttributeName,
  type QueueAttributeName,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { serializeError } from '../observability/serialize.ts';

/**
 * The system attributes the pipeline reads: the receive count (failure backoff) and the group (FIFO
 * order). Asked for through both `MessageSystemAttributeNames` and the older `AttributeNames`: some
 * emulators read only the latter, and then both attributes would be missing.
 */
export const RECEIVE_SYSTEM_ATTRIBUTES: readonly MessageSystemAttributeName[] = [
  'ApproximateReceiveCount',
  'MessageGroupId',
];
/** The same names for `AttributeNames`, which the SDK types as queue attributes (SQS takes both kinds). */
export const RECEIVE_LEGACY_ATTRIBUTES =
  RECEIVE_SYSTEM_ATTRIBUTES as readonly string[] as QueueAttributeName[];

/** Checks received messages; see {@link fifoGroupCheck}. */
export type FifoGroupCheck = (queueUrl: string, messages: readonly Message[], logger: Logger) => void;

/**
 * Warns once (per returned function: one per Worker or Lambda handler) when a message of a FIFO queue
 * arrives without its MessageGroupId: the endpoint did not return it, so the pipeline cannot keep the
 * order of its group.
 */
export function fifoGroupCheck(): FifoGroupCheck {
  let warned = false;
  return (queueUrl, messages, logger) => {
    if (warned || !queueUrl.endsWith('.fifo')) return;
    const missing = messages.find((m) => !m.Attributes?.MessageGroupId);
    if (!missing) return;
    warned = true;
    logger.warn(
      'a message of a FIFO queue has no MessageGroupId (the SQS endpoint did not return it): FIFO order ' +
        'cannot be kept for it; such messages run as one group, in batch order. Warned once.',
      { messageId: missing.MessageId },
    );
  };
}

/** SQS allows 10 entries per batch call. */
const SQS_BATCH_LIMIT = 10;
/** SQS allows 10 message attributes per message. */
const SQS_ATTRIBUTE_LIMIT = 10;

/** Attribute names the worker adds to a dead-lettered poison message. */
export const POISON_ATTRIBUTES = {
  reason: 'poison-reason',
  error: 'poison-error',
  sourceMessageId: 'source-message-id',
} as const;

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += SQS_BATCH_LIMIT) out.push(items.slice(i, i + SQS_BATCH_LIMIT));
  return out;
}

/** The result of a batched call: which messages failed, and the error of a call that failed whole. */
export interface BatchResult {
  readonly failed: ReadonlySet<Message>;
  readonly errors: readonly unknown[];
}

/**
 * The deadline of one SQS call: `timeoutMs` (every call but ReceiveMessage has one, or a hung socket
 * would hold it for the client's 900 s default), and `signal` if given.
 */
export interface SqsDeadline {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

function abortSignalOf({ timeoutMs, signal }: SqsDeadline): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([timeout, signal]) : timeout;
}

/** Deletes messages in batches of 10. Never throws: failures (a timeout too) are returned. */
export async function deleteMessages(
  sqs: SQSClient,
  queueUrl: string,
  messages: readonly Message[],
  deadline: SqsDeadline,
): Promise<BatchResult> {
  return batched(messages, async (chunk) => {
    const out = await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: chunk.map((m, i) => ({ Id: `m${i}`, ReceiptHandle: m.ReceiptHandle })),
      }),
      { abortSignal: abortSignalOf(deadline) },
    );
    return (out.Failed ?? []).map((f) => Number(f.Id?.slice(1)));
  });
}

/** Sets the visibility timeout of messages in batches of 10. Never throws: failures (a timeout too) are returned. */
export async function changeVisibility(
  sqs: SQSClient,
  queueUrl: string,
  entries: readonly { readonly message: Message; readonly seconds: number }[],
  deadline: SqsDeadline,
): Promise<BatchResult> {
  const byMessage = new Map(entries.map((e) => [e.message, e.seconds]));
  return batched(
    entries.map((e) => e.message),
    async (chunk) => {
      const out = await sqs.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: queueUrl,
          Entries: chunk.map((m, i) => ({
            Id: `m${i}`,
            ReceiptHandle: m.ReceiptHandle,
            VisibilityTimeout: byMessage.get(m) ?? 0,
          })),
        }),
        { abortSignal: abortSignalOf(deadline) },
      );
      return (out.Failed ?? []).map((f) => Number(f.Id?.slice(1)));
    },
  );
}

async function batched(
  messages: readonly Message[],
  call: (chunk: Message[]) => Promise<number[]>,
): Promise<BatchResult> {
  const failed = new Set<Message>();
  const errors: unknown[] = [];
  await Promise.all(
    chunks(messages).map(async (chunk) => {
      try {
        for (const index of await call(chunk)) {
          const message = chunk[index];
          if (message) failed.add(message);
        }
      } catch (error) {
        errors.push(error);
        for (const message of chunk) failed.add(message);
      }
    }),
  );
  return { failed, errors };
}

/**
 * Sends a poison message's original body and attributes to the dead-letter queue, with the reason
 * and the serialized error as attributes. Throws if the send fails (the caller then keeps the original).
 */
export async function sendToDeadLetter(
  sqs: SQSClient,
  deadLetterQueueUrl: string,
  message: Message,
  reason: string,
  error: unknown,
  deadline: SqsDeadline,
): Promise<void> {
  const ours: Record<string, MessageAttributeValue> = {
    [POISON_ATTRIBUTES.reason]: { DataType: 'String', StringValue: truncate(reason, 1_000) },
    [POISON_ATTRIBUTES.sourceMessageId]: { DataType: 'String', StringValue: message.MessageId ?? 'unknown' },
  };
  if (error !== undefined) {
    ours[POISON_ATTRIBUTES.error] = {
      DataType: 'String',
      StringValue: truncate(JSON.stringify(serializeError(error)), 16_000),
    };
  }
  const original = message.MessageAttributes ?? {};
  const attributes =
    Object.keys(original).length + Object.keys(ours).length <= SQS_ATTRIBUTE_LIMIT
      ? { ...original, ...ours }
      : // Too many to keep side by side: keep the originals, whole, in one attribute.
        { ...ours, 'original-attributes': { DataType: 'String', StringValue: JSON.stringify(original) } };
  const fifo = deadLetterQueueUrl.endsWith('.fifo');
  await sqs.send(
    new SendMessageCommand({
      QueueUrl: deadLetterQueueUrl,
      MessageBody: message.Body ?? '',
      MessageAttributes: attributes,
      ...(fifo
        ? {
            MessageGroupId: message.Attributes?.MessageGroupId ?? 'poison',
            MessageDeduplicationId: message.MessageId,
          }
        : {}),
    }),
    { abortSignal: abortSignalOf(deadline) },
  );
}

/** The dead-letter queue named by the queue's RedrivePolicy, or undefined when it has none. */
export async function discoverDeadLetterQueueUrl(
  sqs: SQSClient,
  queueUrl: string,
  deadline: SqsDeadline,
): Promise<string | undefined> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['RedrivePolicy'] }),
    { abortSignal: abortSignalOf(deadline) },
  );
  if (!Attributes?.RedrivePolicy) return undefined;
  const policy = JSON.parse(Attributes.RedrivePolicy) as { deadLetterTargetArn?: string };
  // arn:aws:sqs:{region}:{account}:{name}
  const [, , , , account, name] = policy.deadLetterTargetArn?.split(':') ?? [];
  if (!name) return undefined;
  const { QueueUrl } = await sqs.send(
    new GetQueueUrlCommand({ QueueName: name, QueueOwnerAWSAccountId: account }),
    { abortSignal: abortSignalOf(deadline) },
  );
  return QueueUrl;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
