import {
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { type FauxqsServer, startFauxqs } from 'fauxqs';
import { afterAll, beforeAll } from 'vitest';

/** A real SQS emulator (fauxqs) running in this process on a free port, and a client pointed at it. */
export interface SqsEnv {
  readonly server: FauxqsServer;
  readonly sqs: SQSClient;
  /** The endpoint other processes set as AWS_ENDPOINT_URL_SQS. */
  readonly endpoint: string;
  /** A new client on fauxqs, for a test's own middleware (the caller destroys it). */
  newClient(): SQSClient;
  /** Creates a queue; with `maxReceiveCount`, also its DLQ and RedrivePolicy. */
  createQueue(
    name: string,
    options?: QueueOptions,
  ): { queueUrl: string; queueName: string; dlqUrl?: string; dlqName?: string };
  /** Messages ready, in flight and delayed, as the emulator sees them. */
  counts(queueName: string): { ready: number; inflight: number; delayed: number; total: number };
  stop(): Promise<void>;
}

export interface QueueOptions {
  visibilityTimeoutSec?: number;
  maxReceiveCount?: number;
  fifo?: boolean;
}

const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
const REGION = 'us-east-1';

export async function startSqs(): Promise<SqsEnv> {
  const server = await startFauxqs({ port: 0, logger: false });
  const sqs = new SQSClient({ endpoint: server.address, region: REGION, credentials: CREDENTIALS });
  return {
    server,
    sqs,
    endpoint: server.address,
    newClient: () => new SQSClient({ endpoint: server.address, region: REGION, credentials: CREDENTIALS }),
    createQueue(name, options = {}) {
      const suffix = options.fifo ? '.fifo' : '';
      const fifoAttributes: Record<string, string> = options.fifo
        ? { FifoQueue: 'true', ContentBasedDeduplication: 'true' }
        : {};
      let dlq: { queueUrl: string; queueArn: string; queueName: string } | undefined;
      if (options.maxReceiveCount !== undefined) {
        dlq = server.createQueue(`${name}-dlq${suffix}`, { attributes: fifoAttributes });
      }
      const attributes: Record<string, string> = {
        ...fifoAttributes,
        VisibilityTimeout: String(options.visibilityTimeoutSec ?? 30),
      };
      if (dlq) {
        attributes.RedrivePolicy = JSON.stringify({
          deadLetterTargetArn: dlq.queueArn,
          maxReceiveCount: options.maxReceiveCount,
        });
      }
      const queue = server.createQueue(`${name}${suffix}`, { attributes });
      return {
        queueUrl: queue.queueUrl,
        queueName: queue.queueName,
        ...(dlq ? { dlqUrl: dlq.queueUrl, dlqName: dlq.queueName } : {}),
      };
    },
    counts(queueName) {
      const q = server.inspectQueue(queueName);
      if (!q) throw new Error(`no queue ${queueName}`);
      const ready = q.messages.ready.length;
      const inflight = q.messages.inflight.length;
      const delayed = q.messages.delayed.length;
      return { ready, inflight, delayed, total: ready + inflight + delayed };
    },
    async stop() {
      sqs.destroy();
      await server.stop();
    },
  };
}

/** Starts fauxqs before the file's tests and stops it after. */
export function useSqs(): SqsEnv {
  let env: SqsEnv | undefined;
  beforeAll(async () => {
    env = await startSqs();
  });
  afterAll(() => env?.stop());
  const get = (): SqsEnv => {
    if (!env) throw new Error('useSqs(): only usable inside tests, after beforeAll');
    return env;
  };
  return {
    get server() {
      return get().server;
    },
    get sqs() {
      return get().sqs;
    },
    get endpoint() {
      return get().endpoint;
    },
    newClient: () => get().newClient(),
    createQueue: (name, options) => get().createQueue(name, options),
    counts: (name) => get().counts(name),
    stop: () => get().stop(),
  };
}

export interface OutgoingMessage {
  body: string;
  groupId?: string;
  attributes?: Record<string, MessageAttributeValue>;
}

/** Sends messages in batches of 10; returns their MessageIds in order. */
export async function sendMessages(
  sqs: SQSClient,
  queueUrl: string,
  messages: readonly OutgoingMessage[],
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < messages.length; i += 10) {
    const chunk = messages.slice(i, i + 10);
    const out = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: chunk.map((m, j) => ({
          Id: `e${j}`,
          MessageBody: m.body,
          ...(m.groupId ? { MessageGroupId: m.groupId } : {}),
          ...(m.attributes ? { MessageAttributes: m.attributes } : {}),
        })),
      }),
    );
    if (out.Failed?.length) throw new Error(`send failed: ${JSON.stringify(out.Failed)}`);
    const byId = new Map((out.Successful ?? []).map((s) => [s.Id, s.MessageId]));
    for (let j = 0; j < chunk.length; j++) ids.push(byId.get(`e${j}`) ?? '');
  }
  return ids;
}

/** Receives everything currently ready in a queue (for inspecting a DLQ), with all attributes. */
export async function drainQueue(sqs: SQSClient, queueUrl: string): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const out = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageAttributeNames: ['All'],
        MessageSystemAttributeNames: ['All'],
        VisibilityTimeout: 60,
      }),
    );
    if (!out.Messages?.length) return all;
    all.push(...out.Messages);
  }
}
