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
import { SqsEntryError } from '../errors.ts';
import { serializeError } from '../observability/serialize.ts';
import { sqsAttributeText } from '../sqs-text.ts';

/**
 * The system attributes the pipeline reads: the receive count (failure backoff), the group (FIFO
 * order) and the X-Ray trace header (a creation context to link the message's process span to). Asked
 * for through both `MessageSystemAttributeNames` and the older `AttributeNames`: some emulators read only
 * the latter, and then these attributes would be missing.
 */
export const RECEIVE_SYSTEM_ATTRIBUTES: readonly MessageSystemAttributeName[] = [
  'ApproximateReceiveCount',
  'MessageGroupId',
  'AWSTraceHeader',
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
export const SQS_ATTRIBUTE_LIMIT = 10;

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

/** One entry of a batch call that SQS refused, the call itself having succeeded. */
export interface EntryFailure {
  readonly message: Message;
  /** SQS's code: ReceiptHandleIsInvalid, MessageNotInflight, InternalError, ... */
  readonly code: string;
  /** SQS blames the request: the same entry would be refused again. */
  readonly senderFault: boolean;
  readonly detail: string | undefined;
}

/** The result of a batched call: which messages failed, why each refused entry was, and the error of a call that failed whole. */
export interface BatchResult {
  readonly failed: ReadonlySet<Message>;
  /** Entries SQS refused (after the one retry of those worth it, see {@link isRetryableEntry}). */
  readonly refused: readonly EntryFailure[];
  /** First refusals that were sent once more (those refused again are in `refused` too). */
  readonly retried: readonly EntryFailure[];
  readonly errors: readonly unknown[];
}

/**
 * Every error of a batched call, for `sqs_error`: the calls that failed whole, then an
 * {@link SqsEntryError} (with its code) per entry refused for good.
 */
export function errorsOf(operation: string, result: BatchResult): unknown[] {
  return [
    ...result.errors,
    ...result.refused.map((r) => new SqsEntryError(operation, { messageId: r.message.MessageId, ...r })),
  ];
}

/**
 * An entry refused for the service's own trouble (internal error, throttling) may pass on a second
 * try; one refused for its receipt handle (stale, not in flight) never will.
 */
export function isRetryableEntry(entry: Pick<EntryFailure, 'code' | 'senderFault'>): boolean {
  return !entry.senderFault || /internal|throttl|unavailable/i.test(entry.code);
}

/** Options of a batched call: by default, refused entries worth it get one more try. */
export interface BatchOptions {
  readonly retryRefused?: boolean;
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

/** What one batch call answered for its entries, by index in the chunk. */
type ChunkRefusals = { index: number; code: string; senderFault: boolean; detail: string | undefined }[];

function refusalsOf(
  failed: readonly { Id?: string; Code?: string; SenderFault?: boolean; Message?: string }[] | undefined,
): ChunkRefusals {
  return (failed ?? []).map((f) => ({
    index: Number(f.Id?.slice(1)),
    code: f.Code ?? 'unknown',
    senderFault: f.SenderFault === true,
    detail: f.Message,
  }));
}

/**
 * Deletes messages in batches of 10; an entry refused for an internal error or throttling is sent
 * once more. Never throws: failures (a timeout too) are returned.
 */
export async function deleteMessages(
  sqs: SQSClient,
  queueUrl: string,
  messages: readonly Message[],
  deadline: SqsDeadline,
  options: BatchOptions = {},
): Promise<BatchResult> {
  return batched(
    messages,
    async (chunk) => {
      const out = await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: chunk.map((m, i) => ({ Id: `m${i}`, ReceiptHandle: m.ReceiptHandle })),
        }),
        { abortSignal: abortSignalOf(deadline) },
      );
      return refusalsOf(out.Failed);
    },
    options,
  );
}

/**
 * Sets the visibility timeout of messages in batches of 10; an entry refused for an internal error or
 * throttling is sent once more (unless `retryRefused` is false: the heartbeat's next beat is its retry).
 * Never throws: failures (a timeout too) are returned.
 */
export async function changeVisibility(
  sqs: SQSClient,
  queueUrl: string,
  entries: readonly { readonly message: Message; readonly seconds: number }[],
  deadline: SqsDeadline,
  options: BatchOptions = {},
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
      return refusalsOf(out.Failed);
    },
    options,
  );
}

async function batched(
  messages: readonly Message[],
  call: (chunk: Message[]) => Promise<ChunkRefusals>,
  options: BatchOptions,
): Promise<BatchResult> {
  const failed = new Set<Message>();
  const refused: EntryFailure[] = [];
  const retried: EntryFailure[] = [];
  const errors: unknown[] = [];
  const send = async (chunk: Message[], retriesLeft: number): Promise<void> => {
    let refusals: ChunkRefusals;
    try {
      refusals = await call(chunk);
    } catch (error) {
      errors.push(error);
      for (const message of chunk) failed.add(message);
      return;
    }
    const again: Message[] = [];
    for (const { index, code, senderFault, detail } of refusals) {
      const message = chunk[index];
      if (!message) continue;
      if (retriesLeft > 0 && isRetryableEntry({ code, senderFault })) {
        again.push(message);
        retried.push({ message, code, senderFault, detail });
      } else {
        failed.add(message);
        refused.push({ message, code, senderFault, detail });
      }
    }
    if (again.length > 0) await send(again, retriesLeft - 1);
  };
  const retries = options.retryRefused === false ? 0 : 1;
  await Promise.all(chunks(messages).map((chunk) => send(chunk, retries)));
  return { failed, refused, retried, errors };
}

/**
 * What SQS counts against MaximumMessageSize: the body, and each attribute's name, type and value.
 * A binary value is counted as its base64 text, which is how it travels (and at least its byte count).
 */
export function messageSize(body: string, attributes: Record<string, MessageAttributeValue>): number {
  let size = Buffer.byteLength(body, 'utf8');
  for (const [name, value] of Object.entries(attributes)) {
    size += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(value.DataType ?? '', 'utf8');
    if (value.StringValue !== undefined) size += Buffer.byteLength(value.StringValue, 'utf8');
    if (value.BinaryValue !== undefined) size += base64Length(value.BinaryValue.byteLength);
  }
  return size;
}

function base64Length(bytes: number): number {
  return Math.ceil(bytes / 3) * 4;
}

/** The SQS default of MaximumMessageSize before 2025 (256 KiB): assumed while the DLQ's own is unknown. */
export const ASSUMED_MAX_MESSAGE_BYTES = 262_144;

/** The queue's MaximumMessageSize, in bytes. Throws if it cannot be read. */
export async function readMaximumMessageSize(
  sqs: SQSClient,
  queueUrl: string,
  deadline: SqsDeadline,
): Promise<number> {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['MaximumMessageSize'] }),
    { abortSignal: abortSignalOf(deadline) },
  );
  const bytes = Number(Attributes?.MaximumMessageSize);
  if (!Number.isInteger(bytes) || bytes <= 0) {
    throw new Error(`queue ${queueUrl} answered no MaximumMessageSize (${Attributes?.MaximumMessageSize})`);
  }
  return bytes;
}

/**
 * How much of ours a dead-lettered message carries: everything (`full`), a shortened error or reason
 * (`shortened`), only a short reason beside the original (`minimal`), or the original alone
 * (`original`; the reason is in the logs).
 */
export type DeadLetterFit = 'full' | 'shortened' | 'minimal' | 'original';

export type DeadLetterResult =
  | { readonly sent: true; readonly fit: DeadLetterFit }
  /** Nothing sent: even the original alone is larger than the DLQ's MaximumMessageSize. */
  | { readonly sent: false; readonly sizeBytes: number; readonly maxBytes: number };

/** The largest `poison-error` and `poison-reason` we add, before any shortening to fit. */
const MAX_ERROR_CHARS = 16_000;
const MAX_REASON_CHARS = 1_000;
/** The reason beside the original when nothing more fits. */
const MINIMAL_REASON_BYTES = 128;
/** Below this, a shortened error says nothing useful: it is dropped instead. */
const MIN_USEFUL_ERROR_BYTES = 256;
const ORIGINAL_ATTRIBUTES = 'original-attributes';

/**
 * Sends a poison message's original body and attributes to the dead-letter queue, with the reason and
 * the serialized error as attributes, within `maxBytes` (the DLQ's MaximumMessageSize): ours is
 * shortened first (the error, then the reason), then only a short reason goes beside the original,
 * then the original alone. When even that is too large, nothing is sent (`sent: false`), and the
 * caller keeps the original. A send refused as too large (SQS counted more than we did) is tried once
 * more with the smallest form that fits. Throws if a send fails (the caller then keeps the original).
 */
export async function sendToDeadLetter(
  sqs: SQSClient,
  deadLetterQueueUrl: string,
  message: Message,
  reason: string,
  error: unknown,
  deadline: SqsDeadline,
  maxBytes: number = ASSUMED_MAX_MESSAGE_BYTES,
): Promise<DeadLetterResult> {
  const body = message.Body ?? '';
  const errorText = error === undefined ? undefined : JSON.stringify(serializeError(error));
  const forms = deadLetterForms(message, reason, errorText, maxBytes);
  const fifo = deadLetterQueueUrl.endsWith('.fifo');
  const send = (attributes: Record<string, MessageAttributeValue>): Promise<unknown> =>
    sqs.send(
      new SendMessageCommand({
        QueueUrl: deadLetterQueueUrl,
        MessageBody: body,
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
  if (forms.length === 0) {
    const original = originalAttributes(message);
    const sizeBytes = messageSize(body, original);
    // Binary values are counted as their base64 text, which may be more than SQS counts: with any,
    // let SQS decide on the original alone (a message kept here may be lost to retention one day).
    const binary = Object.values(original).some((v) => v.BinaryValue !== undefined);
    if (!binary || Object.keys(original).length > SQS_ATTRIBUTE_LIMIT)
      return { sent: false, sizeBytes, maxBytes };
    try {
      await send(original);
      return { sent: true, fit: 'original' };
    } catch (sendError) {
      if (!isTooLarge(sendError)) throw sendError;
      return { sent: false, sizeBytes, maxBytes };
    }
  }
  const [first, ...smaller] = forms as [DeadLetterForm, ...DeadLetterForm[]];
  const smallest = smaller.at(-1);
  try {
    await send(first.attributes);
    return { sent: true, fit: first.fit };
  } catch (sendError) {
    if (!smallest || !isTooLarge(sendError)) throw sendError;
    await send(smallest.attributes);
    return { sent: true, fit: smallest.fit };
  }
}

interface DeadLetterForm {
  readonly fit: DeadLetterFit;
  readonly attributes: Record<string, MessageAttributeValue>;
}

/** The forms of the dead-lettered message that fit in `maxBytes`, largest first. */
function deadLetterForms(
  message: Message,
  reason: string,
  errorText: string | undefined,
  maxBytes: number,
): DeadLetterForm[] {
  const body = message.Body ?? '';
  const original = originalAttributes(message);
  const originalCount = Object.keys(original).length;
  const sourceId = { DataType: 'String', StringValue: message.MessageId ?? 'unknown' };
  // Escaped: an error's message may hold characters SQS refuses, and the send would then fail whole.
  const string = (value: string): MessageAttributeValue => ({
    DataType: 'String',
    StringValue: sqsAttributeText(value),
  });
  // Ours take up to 3 attributes: beyond 10 in all, the originals travel packed in one (as JSON, binary
  // values in base64); a redrive moves the message as it is, so the handler finds them there.
  const arranged = (ours: Record<string, MessageAttributeValue>): Record<string, MessageAttributeValue> =>
    originalCount + Object.keys(ours).length <= SQS_ATTRIBUTE_LIMIT
      ? { ...original, ...ours }
      : { ...ours, [ORIGINAL_ATTRIBUTES]: string(packAttributes(original)) };
  const fits = (attributes: Record<string, MessageAttributeValue>): boolean =>
    messageSize(body, attributes) <= maxBytes;
  const forms: DeadLetterForm[] = [];
  const add = (fit: DeadLetterFit, attributes: Record<string, MessageAttributeValue>): void => {
    if (fits(attributes)) forms.push({ fit, attributes });
  };

  const fullReason = truncateBytes(reason, Buffer.byteLength(reason.slice(0, MAX_REASON_CHARS)));
  const withoutError = {
    [POISON_ATTRIBUTES.reason]: string(fullReason),
    [POISON_ATTRIBUTES.sourceMessageId]: sourceId,
  };
  if (errorText !== undefined) {
    const fullError = truncateBytes(errorText, Buffer.byteLength(errorText.slice(0, MAX_ERROR_CHARS)));
    add('full', arranged({ ...withoutError, [POISON_ATTRIBUTES.error]: string(fullError) }));
    if (forms.length === 0) {
      // The error shortened to what is left once everything else is in.
      const empty = arranged({ ...withoutError, [POISON_ATTRIBUTES.error]: string('') });
      const room = maxBytes - messageSize(body, empty);
      if (room >= MIN_USEFUL_ERROR_BYTES) {
        add(
          'shortened',
          arranged({ ...withoutError, [POISON_ATTRIBUTES.error]: string(truncateBytes(fullError, room)) }),
        );
      }
    }
  } else add('full', arranged(withoutError));
  if (forms.length === 0) {
    // No error; the reason shortened to what is left.
    const empty = arranged({ ...withoutError, [POISON_ATTRIBUTES.reason]: string('') });
    const room = maxBytes - messageSize(body, empty);
    if (room >= Math.min(MINIMAL_REASON_BYTES, Buffer.byteLength(fullReason, 'utf8'))) {
      add(
        'shortened',
        arranged({ ...withoutError, [POISON_ATTRIBUTES.reason]: string(truncateBytes(fullReason, room)) }),
      );
    }
  }
  // Smaller forms stay as fallbacks for a send refused as too large.
  if (originalCount < SQS_ATTRIBUTE_LIMIT) {
    add('minimal', {
      ...original,
      [POISON_ATTRIBUTES.reason]: string(truncateBytes(fullReason, MINIMAL_REASON_BYTES)),
    });
  }
  add('original', original);
  return forms;
}

/**
 * The message's attributes as SendMessage takes them: the value of its type only (a received attribute
 * may carry empty list fields, which SendMessage refuses).
 */
function originalAttributes(message: Message): Record<string, MessageAttributeValue> {
  const out: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    out[name] =
      value.BinaryValue !== undefined
        ? { DataType: value.DataType, BinaryValue: value.BinaryValue }
        : { DataType: value.DataType, StringValue: value.StringValue ?? '' };
  }
  return out;
}

/** Attributes as one JSON text: binary values in base64 (as JSON arrays of bytes they grow tenfold). */
export function packAttributes(attributes: Record<string, MessageAttributeValue>): string {
  const packed: Record<string, { DataType?: string; StringValue?: string; BinaryValue?: string }> = {};
  for (const [name, value] of Object.entries(attributes)) {
    packed[name] =
      value.BinaryValue !== undefined
        ? { DataType: value.DataType, BinaryValue: Buffer.from(value.BinaryValue).toString('base64') }
        : { DataType: value.DataType, StringValue: value.StringValue ?? '' };
  }
  return JSON.stringify(packed);
}

/** A send SQS refused for the message's size. */
function isTooLarge(error: unknown): boolean {
  const text = `${(error as Error)?.name} ${(error as Error)?.message}`;
  return /shorter than|too long|MaximumMessageSize|message size/i.test(text);
}

/** `text` cut to at most `maxBytes` of UTF-8 (an ellipsis marks the cut), never inside a character. */
function truncateBytes(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  const ellipsis = '…'; // 3 bytes
  let end = Math.min(text.length, Math.max(0, maxBytes - 3));
  while (end > 0 && Buffer.byteLength(text.slice(0, end), 'utf8') > maxBytes - 3) {
    end = Math.floor(end * 0.9);
  }
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end -= 1; // never half a surrogate pair
  return `${text.slice(0, end)}${ellipsis}`;
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
