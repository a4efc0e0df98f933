import type { Server } from 'node:http';
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { createSqsServer } from 'local-aws-sqs';
import { afterAll, beforeAll } from 'vitest';

/**
 * local-aws-sqs in this process on a free port: unlike fauxqs it implements StartMessageMoveTask and
 * ListMessageMoveTasks (a task moves up to its rate each second, and ends once it moved the count it
 * saw at its start or met ten empty seconds).
 */
export interface LocalSqs {
  readonly endpoint: string;
  readonly sqs: SQSClient;
  /** A queue and its dead-letter queue (the queue's RedrivePolicy names it). */
  createQueueWithDlq(name: string): Promise<{ queueUrl: string; dlqUrl: string }>;
  /** ApproximateNumberOfMessages and ...NotVisible (local-aws-sqs counts in-flight messages in the first). */
  counts(queueUrl: string): Promise<{ messages: number; notVisible: number }>;
}

const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

export function useLocalSqs(): LocalSqs {
  let server: Server | undefined;
  let sqs: SQSClient | undefined;
  let endpoint = '';
  beforeAll(async () => {
    server = await createSqsServer({ port: 0, hostname: '127.0.0.1', emulateQueueCreationLifecycle: false });
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('local-aws-sqs: no port');
    endpoint = `http://127.0.0.1:${address.port}`;
    sqs = new SQSClient({ endpoint, region: 'us-east-1', credentials: CREDENTIALS });
  });
  afterAll(async () => {
    sqs?.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });
  const client = (): SQSClient => {
    if (!sqs) throw new Error('useLocalSqs(): only usable inside tests, after beforeAll');
    return sqs;
  };
  return {
    get endpoint() {
      return endpoint;
    },
    get sqs() {
      return client();
    },
    async createQueueWithDlq(name) {
      const dlq = await client().send(new CreateQueueCommand({ QueueName: `${name}-dlq` }));
      const dlqUrl = dlq.QueueUrl as string;
      const { Attributes } = await client().send(
        new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }),
      );
      const queue = await client().send(
        new CreateQueueCommand({
          QueueName: name,
          Attributes: {
            RedrivePolicy: JSON.stringify({ deadLetterTargetArn: Attributes?.QueueArn, maxReceiveCount: 3 }),
          },
        }),
      );
      return { queueUrl: queue.QueueUrl as string, dlqUrl };
    },
    async counts(queueUrl) {
      const { Attributes } = await client().send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
        }),
      );
      return {
        messages: Number(Attributes?.ApproximateNumberOfMessages),
        notVisible: Number(Attributes?.ApproximateNumberOfMessagesNotVisible),
      };
    },
  };
}
