/**
 * Runs the Lambda handler of index.ts locally, against a real queue (LocalStack, fauxqs, or AWS), doing
 * what the event source mapping does: receive a batch, hand it to `handler` as an SQS event, then
 * delete the messages that are not in `batchItemFailures` (those come back after their visibility
 * timeout, or after the backoff the handler set). It repeats until a receive comes back empty.
 *
 *   npm run build
 *   SQS_QUEUE_URL=… REDIS_URLS=… STORE_URL=… node examples/lambda/invoke.ts
 *
 * Environment: that of index.ts (SQS_QUEUE_URL is required here), the SDK's (AWS_REGION, credentials,
 * AWS_ENDPOINT_URL_SQS), and TIMEOUT_SEC: the function timeout the context reports (default 30).
 */
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord, SQSRecordAttributes } from 'aws-lambda';

/** The context Lambda passes, for a function whose timeout is `timeoutMs` from now. */
export function lambdaContext(timeoutMs: number): Context {
  const deadline = Date.now() + timeoutMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'orders',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:local:000000000000:function:orders',
    memoryLimitInMB: '512',
    awsRequestId: randomUUID(),
    logGroupName: '/aws/lambda/orders',
    logStreamName: 'local',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** The record the event source mapping builds from a received message. */
export function toRecord(message: Message, queueArn: string): SQSRecord {
  const messageAttributes: SQSRecord['messageAttributes'] = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    messageAttributes[name] = {
      ...(value.StringValue === undefined ? {} : { stringValue: value.StringValue }),
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
    attributes: (message.Attributes ?? {}) as unknown as SQSRecordAttributes,
    messageAttributes,
    md5OfBody: message.MD5OfBody ?? '',
    ...(message.MD5OfMessageAttributes ? { md5OfMessageAttributes: message.MD5OfMessageAttributes } : {}),
    eventSource: 'aws:sqs',
    eventSourceARN: queueArn,
    awsRegion: queueArn.split(':')[3] ?? '',
  };
}

/**
 * Receives up to `max` messages (waiting up to `waitTimeSeconds` for the first) and builds the event
 * Lambda would pass: plain JSON, as the function gets it.
 */
export async function receiveEvent(
  sqs: SQSClient,
  queueUrl: string,
  { max = 10, waitTimeSeconds = 2, visibilityTimeoutSec = 60 } = {},
): Promise<{ event: SQSEvent; messages: Message[] }> {
  const [{ Attributes }, { Messages = [] }] = await Promise.all([
    sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] })),
    sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: max,
        WaitTimeSeconds: waitTimeSeconds,
        VisibilityTimeout: visibilityTimeoutSec,
        MessageSystemAttributeNames: ['All'],
        MessageAttributeNames: ['All'],
      }),
    ),
  ]);
  const queueArn = Attributes?.QueueArn ?? '';
  const event = JSON.parse(
    JSON.stringify({ Records: Messages.map((m) => toRecord(m, queueArn)) }),
  ) as SQSEvent;
  return { event, messages: Messages };
}

/** Deletes what the response does not report as failed, as the event source mapping does. */
export async function deleteSucceeded(
  sqs: SQSClient,
  queueUrl: string,
  event: SQSEvent,
  response: SQSBatchResponse,
): Promise<number> {
  const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
  const done = event.Records.filter((r) => !failed.has(r.messageId));
  if (done.length === 0) return 0;
  await sqs.send(
    new DeleteMessageBatchCommand({
      QueueUrl: queueUrl,
      Entries: done.map((r, i) => ({ Id: String(i), ReceiptHandle: r.receiptHandle })),
    }),
  );
  return done.length;
}

async function main(): Promise<void> {
  const queueUrl = process.env.SQS_QUEUE_URL?.trim();
  if (!queueUrl) throw new Error('SQS_QUEUE_URL is required (see examples/lambda/README.md)');
  const timeoutMs = Number(process.env.TIMEOUT_SEC ?? 30) * 1000;
  // Imported here, not at the top, so the helpers above can be imported without connecting to Redis.
  const { close, handler } = await import('./index.ts');
  const endpoint = process.env.AWS_ENDPOINT_URL_SQS?.trim();
  const sqs = new SQSClient(endpoint ? { endpoint } : {});
  try {
    for (;;) {
      const { event } = await receiveEvent(sqs, queueUrl);
      if (event.Records.length === 0) break;
      let response: SQSBatchResponse;
      try {
        response = await handler(event, lambdaContext(timeoutMs));
      } catch (error) {
        // A failed invocation (no Redis quorum for any record): like Lambda, delete nothing; the
        // records come back after the backoff the handler gave them.
        console.error(`invocation failed, nothing deleted: ${String(error)}`);
        continue;
      }
      const deleted = await deleteSucceeded(sqs, queueUrl, event, response);
      console.log(
        `invocation: ${event.Records.length} records, ${deleted} deleted, batchItemFailures: ${JSON.stringify(response.batchItemFailures)}`,
      );
    }
    console.log('queue empty');
  } finally {
    sqs.destroy();
    await close();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    // ../orders/handler.ts opens a store connection of its own when it loads (its CLI entry's), which
    // nothing here can close: exit rather than wait for it.
    () => process.exit(),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
