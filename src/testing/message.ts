import { randomUUID } from 'node:crypto';
import type { Message, MessageAttributeValue } from '@aws-sdk/client-sqs';
import { ConfigError } from '../errors.ts';
import { integer } from '../validate.ts';

/** A message attribute: a string, a number, bytes, or an SQS attribute value as is. */
export type SqsMessageAttribute = string | number | Uint8Array | MessageAttributeValue;

/** What {@link sqsMessage} builds a message from. */
export interface SqsMessageInit {
  /** A string is the body as is; anything else is sent as its JSON. */
  readonly body?: unknown;
  /** The message attributes (`MessageAttributes`, the producer's), by name. */
  readonly attributes?: Readonly<Record<string, SqsMessageAttribute>>;
  /** `ApproximateReceiveCount`. @defaultValue 1 */
  readonly receiveCount?: number;
  /** `MessageGroupId`, as a FIFO queue sets it. */
  readonly groupId?: string;
  /** @defaultValue a random UUID, as SQS gives */
  readonly messageId?: string;
}

/**
 * An SQS `Message` as a Worker receives it: a MessageId and ReceiptHandle, the body, the system
 * attributes the pipeline reads (receive count, group) and the message attributes.
 */
export function sqsMessage(init: SqsMessageInit = {}): Message {
  const { body, attributes, receiveCount = 1, groupId, messageId = randomUUID() } = init;
  integer('sqsMessage receiveCount', receiveCount, { min: 1 });
  if (typeof messageId !== 'string' || messageId.length === 0) {
    throw new ConfigError('sqsMessage messageId', messageId, 'must be a non-empty string');
  }
  if (groupId !== undefined && (typeof groupId !== 'string' || groupId.length === 0)) {
    throw new ConfigError('sqsMessage groupId', groupId, 'must be a non-empty string');
  }
  const now = String(Date.now());
  return {
    MessageId: messageId,
    ReceiptHandle: `test-receipt-${randomUUID()}`,
    ...(body === undefined ? {} : { Body: typeof body === 'string' ? body : JSON.stringify(body) }),
    Attributes: {
      ApproximateReceiveCount: String(receiveCount),
      SentTimestamp: now,
      ApproximateFirstReceiveTimestamp: now,
      ...(groupId === undefined ? {} : { MessageGroupId: groupId }),
    },
    ...(attributes === undefined ? {} : { MessageAttributes: messageAttributes(attributes) }),
  };
}

function messageAttributes(
  attributes: Readonly<Record<string, SqsMessageAttribute>>,
): Record<string, MessageAttributeValue> {
  const out: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'string') out[name] = { DataType: 'String', StringValue: value };
    else if (typeof value === 'number') out[name] = { DataType: 'Number', StringValue: String(value) };
    else if (value instanceof Uint8Array) out[name] = { DataType: 'Binary', BinaryValue: value };
    else if (value && typeof value === 'object' && typeof value.DataType === 'string') out[name] = value;
    else {
      throw new ConfigError(
        `sqsMessage attributes.${name}`,
        value,
        'must be a string, a number, a Uint8Array or an SQS MessageAttributeValue (with a DataType)',
      );
    }
  }
  return out;
}
