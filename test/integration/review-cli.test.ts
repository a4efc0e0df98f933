/**
 * Review of the operator commands (check, dlq inspect, dlq redrive) against fauxqs and real
 * redis-server nodes: the interleavings that could consume, hide, lose or duplicate a message.
 */
import {
  CreateQueueCommand,
  ReceiveMessageCommand,
  type SendMessageBatchCommandInput,
  type SendMessageBatchCommandOutput,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { checkCommand } from '../../src/cli/check.ts';
import { inspectCommand } from '../../src/cli/dlq-inspect.ts';
import { redriveCommand } from '../../src/cli/dlq-redrive.ts';
import type { CliIo } from '../../src/cli/io.ts';
import { cliEnv } from '../helpers/cli.ts';
import { useLocalSqs } from '../helpers/local-sqs.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { drainQueue, sendMessages, useSqs } from '../helpers/sqs.ts';
import { faultySqsClient, startBlackHole } from '../helpers/sqs-faults.ts';

function captureIo(): { io: CliIo; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    io: {
      stdout: (t) => void out.push(t),
      stderr: (t) => void err.push(t),
      cwd: process.cwd(),
      isTTY: false,
    },
  };
}

/** One receive as the worker makes it: what it got. */
async function workerReceive(sqs: SQSClient, queueUrl: string) {
  const out = await sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: queueUrl,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: 1,
      VisibilityTimeout: 0,
      MessageSystemAttributeNames: ['All'],
      AttributeNames: ['All'],
    }),
  );
  return out.Messages ?? [];
}

describe('review: operator commands', () => {
  const redis = useRedisNodes(3, { appendonly: true });
  const env = useSqs();
  const local = useLocalSqs();
  beforeAll(() => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
  });

  it('check on a maxReceiveCount=1 queue leaves a waiting message to the worker (not dead-lettered unrun)', async () => {
    const { queueUrl, dlqName } = env.createQueue('review-check-mrc1', { maxReceiveCount: 1 });
    await sendMessages(env.sqs, queueUrl, [{ body: '{"id":"waiting"}' }]);
    const { io, out } = captureIo();
    const code = await checkCommand(cliEnv(redis, env, queueUrl), io, { timeoutMs: 5_000, json: true });
    expect(code, out.join('')).toBe(0);
    // The worker's first receive must get the message, not find it moved to the DLQ.
    const report = JSON.parse(out.join('')) as { findings: { status: string; check: string }[] };
    expect(report.findings.find((f) => f.check === 'SQS receive')?.status).toBe('warn');
    const got = await workerReceive(env.sqs, queueUrl);
    expect(got.map((m) => m.Body)).toEqual(['{"id":"waiting"}']);
    expect(env.counts(dlqName as string).total).toBe(0);
  });

  it('check fails on a handler module the worker would refuse (a SchemaHandler without a schema)', async () => {
    const { queueUrl } = env.createQueue('review-check-schemaless', { maxReceiveCount: 5 });
    const { io, out } = captureIo();
    const code = await checkCommand(cliEnv(redis, env, queueUrl), io, {
      timeoutMs: 5_000,
      json: true,
      handlerModule: 'test/fixtures/review-schemaless-handler.ts',
    });
    const report = JSON.parse(out.join('')) as {
      findings: { status: string; check: string; detail: string }[];
    };
    expect(report.findings.find((f) => f.check === 'handler module')).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('SchemalessHandler.schema'),
    });
    expect(code).toBe(1);
  });

  it('redrive, FIFO: a message the destination refuses is not overtaken by the rest of its group', async () => {
    // local-aws-sqs hands out several messages of one group in one receive, as SQS does; its move
    // task is hidden, so the receive, send, delete path runs. SQS refuses one entry of the batch
    // (g-0, an InternalError for that entry alone): the middleware drops it and answers Failed for it.
    const fifo = { FifoQueue: 'true', ContentBasedDeduplication: 'true' };
    const dlq = await local.sqs.send(
      new CreateQueueCommand({ QueueName: 'review-refused-dlq.fifo', Attributes: fifo }),
    );
    const source = await local.sqs.send(
      new CreateQueueCommand({ QueueName: 'review-refused.fifo', Attributes: fifo }),
    );
    const dlqUrl = dlq.QueueUrl as string;
    const queueUrl = source.QueueUrl as string;
    await sendMessages(local.sqs, dlqUrl, [
      { body: '{"n":"g-0"}', groupId: 'g' },
      { body: '{"n":"g-1"}', groupId: 'g' },
      { body: '{"n":"g-2"}', groupId: 'g' },
      { body: '{"n":"h-0"}', groupId: 'h' },
    ]);
    const sqs = new SQSClient({
      endpoint: local.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    sqs.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'StartMessageMoveTaskCommand') {
          throw Object.assign(new Error('not here'), { name: 'UnsupportedOperation' });
        }
        if (context.commandName !== 'SendMessageBatchCommand') return next(args);
        const input = args.input as SendMessageBatchCommandInput;
        const refused = (input.Entries ?? []).filter((e) => e.MessageBody === '{"n":"g-0"}');
        const rest = (input.Entries ?? []).filter((e) => !refused.includes(e));
        const result =
          rest.length > 0
            ? await next({ ...args, input: { ...input, Entries: rest } })
            : { output: { $metadata: {}, Successful: [] }, response: {} };
        const output = result.output as SendMessageBatchCommandOutput;
        output.Failed = [
          ...(output.Failed ?? []),
          ...refused.map((e) => ({ Id: e.Id, Code: 'InternalError', SenderFault: false })),
        ];
        return result;
      },
      { step: 'initialize', name: 'reviewRefuseOneEntry' },
    );
    try {
      const { io, out } = captureIo();
      const code = await redriveCommand(
        { SQS_QUEUE_URL: queueUrl, DLQ_URL: dlqUrl, AWS_REGION: 'us-east-1' },
        io,
        { timeoutMs: 5_000 },
        { sqs },
      );
      expect(code, out.join('')).toBe(1);
    } finally {
      sqs.destroy();
    }
    const moved = (await drainQueue(local.sqs, queueUrl)).map((m) => JSON.parse(m.Body ?? '').n);
    // h-0 moves; nothing of group g may pass g-0, which stays first in its group in the DLQ.
    expect(moved).toEqual(['h-0']);
    const left = (await drainQueue(local.sqs, dlqUrl)).map((m) => JSON.parse(m.Body ?? '').n);
    expect(left).toEqual(['g-0', 'g-1', 'g-2']);
  });

  it('redrive of a FIFO DLQ twice within 5 minutes (moved by the RedrivePolicy both times) loses nothing', async () => {
    const { queueUrl, queueName, dlqUrl, dlqName } = env.createQueue('review-fifo-twice', {
      maxReceiveCount: 1,
      fifo: true,
    });
    await sendMessages(env.sqs, queueUrl, [{ body: '{"id":"f1"}', groupId: 'g' }]);
    // Received once (count 1 = maxReceiveCount), then the next receive moves it to the DLQ.
    const toDlq = async () => {
      for (let i = 0; i < 5 && env.counts(dlqName as string).total === 0; i++)
        await workerReceive(env.sqs, queueUrl);
      expect(env.counts(dlqName as string).total).toBe(1);
    };
    await toDlq();
    const first = env.server.inspectQueue(dlqName as string)?.messages.ready.map((m) => m.messageId);
    const redriveEnv = { SQS_QUEUE_URL: queueUrl, DLQ_URL: dlqUrl as string, AWS_REGION: 'us-east-1' };
    const one = captureIo();
    expect(
      await redriveCommand(redriveEnv, one.io, { timeoutMs: 5_000 }, { sqs: env.sqs }),
      one.out.join(''),
    ).toBe(0);
    expect(env.counts(queueName).total).toBe(1);
    await toDlq();
    const second = env.server.inspectQueue(dlqName as string)?.messages.ready.map((m) => m.messageId);
    // fauxqs gives the copy a new MessageId on each move; SQS may keep it (see the report).
    expect(second).not.toEqual(first);
    const two = captureIo();
    expect(
      await redriveCommand(redriveEnv, two.io, { timeoutMs: 5_000 }, { sqs: env.sqs }),
      two.out.join(''),
    ).toBe(0);
    // Moved back: in the source queue, not deleted from both.
    expect(env.counts(queueName).total + env.counts(dlqName as string).total).toBe(1);
    expect(env.counts(queueName).total).toBe(1);
  });

  it('inspect whose second receive hangs, then SIGINT: what it read is visible again at once, exit 1, the call named', async () => {
    const blackHole = await startBlackHole();
    const { queueUrl, dlqUrl, dlqName } = env.createQueue('review-inspect-hang', { maxReceiveCount: 3 });
    await sendMessages(
      env.sqs,
      dlqUrl as string,
      Array.from({ length: 15 }, (_, i) => ({ body: `{"n":${i}}` })),
    );
    const sqs = faultySqsClient(env, blackHole.port, {
      hang: (name, nth) => name === 'ReceiveMessageCommand' && nth === 2,
      onHang: () => void setTimeout(() => process.emit('SIGINT'), 100),
    });
    const { io, out, err } = captureIo();
    try {
      const code = await inspectCommand(
        { SQS_QUEUE_URL: queueUrl, AWS_REGION: 'us-east-1' },
        io,
        { max: 1_000, samples: 0, timeoutMs: 500, json: true },
        { sqs },
      );
      expect(code, out.join('') + err.join('')).toBe(1);
    } finally {
      sqs.destroy();
      await blackHole.close();
    }
    expect(err.join('')).toMatch(/dlq inspect: .*ReceiveMessage: no answer in time/);
    expect(env.counts(dlqName as string)).toMatchObject({ ready: 15, inflight: 0 });
  });

  it('inspect refuses a DLQ that has its own RedrivePolicy (maxReceiveCount 1): twice, and nothing moves on', async () => {
    const dlq2 = env.server.createQueue('review-inspect-dlq2');
    const dlq = env.server.createQueue('review-inspect-dlq1', {
      attributes: {
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq2.queueArn, maxReceiveCount: 1 }),
      },
    });
    await sendMessages(env.sqs, dlq.queueUrl, [{ body: '{"n":1}' }]);
    for (let i = 0; i < 2; i++) {
      const { io, err } = captureIo();
      const code = await inspectCommand(
        { DLQ_URL: dlq.queueUrl, AWS_REGION: 'us-east-1' },
        io,
        { max: 1_000, samples: 0, timeoutMs: 5_000, json: true },
        { sqs: env.sqs },
      );
      expect(code).toBe(1);
      expect(err.join('')).toContain('has a RedrivePolicy of its own');
    }
    expect(env.counts(dlq2.queueName).total).toBe(0);
    expect(env.counts(dlq.queueName).total).toBe(1);
  });
});
