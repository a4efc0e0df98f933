/**
 * `sqs-redlock-worker dlq inspect` and `dlq redrive` as real OS processes, against fauxqs (which
 * has no StartMessageMoveTask: the redrive's receive, send, delete path) and local-aws-sqs (which has
 * it), both in this process. The dead-letter queues are filled the way the worker fills them
 * (sendToDeadLetter), next to messages that arrived by a RedrivePolicy (no poison attributes).
 */
import {
  DeleteMessageBatchCommand,
  type Message,
  type MessageAttributeValue,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import type { DeadLetterSummary } from '../../src/cli/dlq-inspect.ts';
import { redriveCommand } from '../../src/cli/dlq-redrive.ts';
import { POISON_ATTRIBUTES, sendToDeadLetter } from '../../src/runtime/sqs-actions.ts';
import { inheritedEnv } from '../helpers/cli.ts';
import { useLocalSqs } from '../helpers/local-sqs.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { drainQueue, sendMessages, useSqs } from '../helpers/sqs.ts';
import { faultySqsClient, startBlackHole } from '../helpers/sqs-faults.ts';

const CLI = 'src/cli.ts';

/** The user's own attributes every test message carries, a binary one among them. */
function userAttributes(i: number): Record<string, MessageAttributeValue> {
  return {
    tenant: { DataType: 'String', StringValue: `tenant-${i % 3}` },
    attempt: { DataType: 'Number', StringValue: String(i) },
    signature: { DataType: 'Binary', BinaryValue: new Uint8Array([i, 255 - i, 7]) },
  };
}

/** Dead-letters `count` messages as the worker does, each with `reason` and (if given) `error`. */
async function deadLetter(
  sqs: SQSClient,
  dlqUrl: string,
  prefix: string,
  count: number,
  reason: string,
  error?: Error,
): Promise<string[]> {
  const bodies: string[] = [];
  for (let i = 0; i < count; i++) {
    const body = JSON.stringify({ id: `${prefix}-${i}`, secret: 'card-4242' });
    const message: Message = {
      MessageId: `${prefix}-src-${i}`,
      Body: body,
      MessageAttributes: userAttributes(i),
    };
    const sent = await sendToDeadLetter(sqs, dlqUrl, message, reason, error, { timeoutMs: 5_000 });
    expect(sent).toMatchObject({ sent: true, fit: 'full' });
    bodies.push(body);
  }
  return bodies;
}

/** Bodies of `messages`, sorted; and whether any came twice. */
function bodiesOf(messages: readonly Message[]): string[] {
  return messages.map((m) => m.Body ?? '').sort();
}

/** Each message carries the user's attributes it was dead-lettered with (binary values byte for byte). */
function expectUserAttributes(messages: readonly Message[]): void {
  for (const m of messages) {
    const i = Number(m.MessageAttributes?.attempt?.StringValue);
    expect(m.MessageAttributes?.tenant?.StringValue).toBe(`tenant-${i % 3}`);
    expect(m.MessageAttributes?.attempt?.DataType).toBe('Number');
    expect([...(m.MessageAttributes?.signature?.BinaryValue ?? [])]).toEqual([i, 255 - i, 7]);
  }
}

describe('sqs-redlock-worker dlq', () => {
  const env = useSqs();
  const local = useLocalSqs();
  const spawned = useProcesses<NodeProcess>();

  function cli(args: string[], vars: Record<string, string>): NodeProcess {
    const p = new NodeProcess('dlq', [CLI, ...args], { ...inheritedEnv(), ...vars }, { waitForMs: 15_000 });
    spawned.push(p);
    return p;
  }

  function fauxqsEnv(queueUrl: string): Record<string, string> {
    return {
      SQS_QUEUE_URL: queueUrl,
      AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL_SQS: env.endpoint,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    };
  }

  describe('inspect', () => {
    it('counts by poison-reason and by error name, and leaves every message in place, visible at once', async () => {
      const { queueUrl, dlqUrl, dlqName } = env.createQueue('inspect-counts', { maxReceiveCount: 3 });
      const dlq = dlqUrl as string;
      await deadLetter(
        env.sqs,
        dlq,
        'bad-json',
        4,
        'hydrate threw: Unexpected token',
        new SyntaxError('Unexpected token'),
      );
      await deadLetter(env.sqs, dlq, 'null', 3, 'hydrate returned null');
      await deadLetter(env.sqs, dlq, 'range', 1, 'lockKey threw', new RangeError('key too long'));
      // Arrived by the RedrivePolicy: no poison attributes.
      await sendMessages(env.sqs, dlq, [{ body: '{"id":"redriven-0"}' }, { body: '{"id":"redriven-1"}' }]);
      const before = env.counts(dlqName as string);
      expect(before).toMatchObject({ ready: 10, inflight: 0 });

      const p = cli(['dlq', 'inspect', '--json'], fauxqsEnv(queueUrl));
      expect(await p.exit(20_000)).toEqual({ code: 0, signal: null });

      const summary = p.lines[0] as unknown as DeadLetterSummary;
      expect(summary).toMatchObject({
        queueUrl: dlq,
        read: 10,
        approximate: { visible: 10, inFlight: 0 },
        byReason: {
          'hydrate threw: Unexpected token': 4,
          'hydrate returned null': 3,
          'lockKey threw': 1,
          '(none: moved here by the RedrivePolicy)': 2,
        },
        byErrorName: { SyntaxError: 4, RangeError: 1, '(none)': 5 },
        samples: [],
        stillHidden: 0,
      });
      expect(Date.parse(summary.oldest ?? '')).toBeLessThanOrEqual(Date.parse(summary.newest ?? ''));
      expect(Date.now() - Date.parse(summary.newest ?? '')).toBeLessThan(60_000);
      // Bodies only with --samples.
      expect(p.stdout).not.toContain('card-4242');

      // Nothing consumed, nothing hidden: the same count, every one receivable at once.
      expect(env.counts(dlqName as string)).toEqual(before);
      const again = await drainQueue(env.sqs, dlq);
      expect(again).toHaveLength(10);
    });

    it('--max bounds the read, --samples shows bodies; a table by default', async () => {
      const { queueUrl, dlqUrl, dlqName } = env.createQueue('inspect-max', { maxReceiveCount: 3 });
      await deadLetter(env.sqs, dlqUrl as string, 'm', 12, 'hydrate returned null');

      const p = cli(['dlq', 'inspect', '--max', '5', '--samples', '2'], fauxqsEnv(queueUrl));
      expect(await p.exit(20_000)).toEqual({ code: 0, signal: null });
      expect(p.stdout).toContain(`Dead-letter queue: ${dlqUrl}`);
      expect(p.stdout).toContain('About 12 waiting and 0 in flight; 5 read (--max 5 reached).');
      expect(p.stdout).toMatch(/^COUNT\s+POISON-REASON\n5\s+hydrate returned null$/m);
      expect(p.stdout).toMatch(/^COUNT\s+ERROR NAME\n5\s+\(none\)$/m);
      expect(p.stdout).toContain('Samples (2 of 5):');
      expect(p.stdout.match(/card-4242/g)).toHaveLength(2);
      expect(p.stdout).toContain('All 5 read were made visible again.');
      expect(env.counts(dlqName as string)).toMatchObject({ ready: 12, inflight: 0 });
    });

    it('no dead-letter queue to read: exit 1, the variable named', async () => {
      const { queueUrl } = env.createQueue('inspect-none');
      const noPolicy = cli(['dlq', 'inspect'], fauxqsEnv(queueUrl));
      expect(await noPolicy.exit(20_000)).toEqual({ code: 1, signal: null });
      expect(noPolicy.stderr).toContain(
        `SQS_QUEUE_URL has no RedrivePolicy naming a dead-letter queue: set DLQ_URL. Received: "${queueUrl}"`,
      );
      const none = cli(['dlq', 'inspect'], { ...fauxqsEnv(queueUrl), DLQ_URL: 'none' });
      expect(await none.exit(20_000)).toEqual({ code: 1, signal: null });
      expect(none.stderr).toContain('DLQ_URL names no dead-letter queue');
    });
  });

  describe('redrive', () => {
    it('local-aws-sqs: moves every message with StartMessageMoveTask at --rate, none lost, none twice', async () => {
      const { queueUrl, dlqUrl } = await local.createQueueWithDlq('redrive-task');
      const bodies = await deadLetter(
        local.sqs,
        dlqUrl,
        'task',
        25,
        'hydrate threw: boom',
        new Error('boom'),
      );

      const p = cli(['dlq', 'redrive', '--rate', '10'], {
        SQS_QUEUE_URL: queueUrl,
        AWS_REGION: 'us-east-1',
        AWS_ENDPOINT_URL_SQS: local.endpoint,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
      });
      expect(await p.exit(30_000)).toEqual({ code: 0, signal: null });
      expect(p.stdout).toContain(`Moving about 25 messages from ${dlqUrl} to ${queueUrl}.`);
      expect(p.stdout).toContain('path: StartMessageMoveTask');
      // At 10 a second, the progress shows steps on the way (one line each, not a TTY).
      const steps = p.stdout.split('\n').filter((l) => /^moved: \d+ of about 25/.test(l));
      expect(steps.some((l) => /^moved: (10|20) of about 25/.test(l))).toBe(true);
      expect(p.stdout).toMatch(/result: move task COMPLETED: 25 of about 25 moved; about 0 left/);

      const moved = await drainQueue(local.sqs, queueUrl);
      expect(bodiesOf(moved)).toEqual([...bodies].sort());
      expectUserAttributes(moved);
      expect(
        moved.every(
          (m) => m.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue === 'hydrate threw: boom',
        ),
      ).toBe(true);
      expect(await local.counts(dlqUrl)).toEqual({ messages: 0, notVisible: 0 });
    });

    it('local-aws-sqs, SIGINT: the move task is cancelled, exit 130, every message in one queue or the other', async () => {
      const { queueUrl, dlqUrl } = await local.createQueueWithDlq('redrive-task-int');
      const bodies = await deadLetter(local.sqs, dlqUrl, 'task-int', 8, 'hydrate returned null');

      const p = cli(['dlq', 'redrive', '--rate', '1'], {
        SQS_QUEUE_URL: queueUrl,
        AWS_REGION: 'us-east-1',
        AWS_ENDPOINT_URL_SQS: local.endpoint,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
      });
      await expect
        .poll(() => /^moved: [1-3] of about 8/m.test(p.stdout), { timeout: 15_000, interval: 20 })
        .toBe(true);
      p.child.kill('SIGINT');
      expect(await p.exit(10_000)).toEqual({ code: 130, signal: null });
      expect(p.stdout).toContain('interrupted: move task cancelled');
      expect(p.stdout).toMatch(/result: move task CANCELLED: \d of about 8 moved/);

      // Let a tick of the emulator's task pass: a cancelled task moves nothing more.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const moved = await drainQueue(local.sqs, queueUrl);
      const left = await drainQueue(local.sqs, dlqUrl);
      expect(moved.length).toBeGreaterThanOrEqual(1);
      expect(left.length).toBeGreaterThanOrEqual(1);
      expect(bodiesOf([...moved, ...left])).toEqual([...bodies].sort());
    });

    it('fauxqs: no StartMessageMoveTask, so receive, send, delete moves every message, attributes kept', async () => {
      const { queueUrl, queueName, dlqUrl, dlqName } = env.createQueue('redrive-copy', {
        maxReceiveCount: 3,
      });
      const bodies = await deadLetter(env.sqs, dlqUrl as string, 'copy', 23, 'hydrate returned null');

      const p = cli(['dlq', 'redrive'], fauxqsEnv(queueUrl));
      expect(await p.exit(30_000)).toEqual({ code: 0, signal: null });
      expect(p.stdout).toContain(
        'path: receive, send, delete (this endpoint has no StartMessageMoveTask: InvalidAction: Unknown action: StartMessageMoveTask)',
      );
      expect(p.stdout).toMatch(/result: 23 moved; about 0 left in the dead-letter queue\./);

      expect(env.counts(dlqName as string).total).toBe(0);
      expect(env.counts(queueName)).toMatchObject({ ready: 23, inflight: 0 });
      const moved = await drainQueue(env.sqs, queueUrl);
      expect(bodiesOf(moved)).toEqual([...bodies].sort());
      expectUserAttributes(moved);
      expect(moved.every((m) => m.MessageAttributes?.[POISON_ATTRIBUTES.sourceMessageId]?.StringValue)).toBe(
        true,
      );
    });

    it('fauxqs, FIFO: the group and its order are kept', async () => {
      const { queueUrl, dlqUrl } = env.createQueue('redrive-fifo', { maxReceiveCount: 3, fifo: true });
      const sent = ['a', 'b'].flatMap((group) =>
        [0, 1, 2].map((n) => ({ body: `${group}-${n}`, groupId: group, attributes: userAttributes(n) })),
      );
      await sendMessages(env.sqs, dlqUrl as string, sent);

      const p = cli(['dlq', 'redrive'], fauxqsEnv(queueUrl));
      expect(await p.exit(30_000)).toEqual({ code: 0, signal: null });
      expect(p.stdout).toMatch(/result: 6 moved/);

      // A FIFO queue hands out a group's next message only once the one before it is deleted.
      const moved: Message[] = [];
      for (
        let batch = await drainQueue(env.sqs, queueUrl);
        batch.length > 0;
        batch = await drainQueue(env.sqs, queueUrl)
      ) {
        moved.push(...batch);
        await env.sqs.send(
          new DeleteMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: batch.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle })),
          }),
        );
      }
      for (const group of ['a', 'b']) {
        const inGroup = moved.filter((m) => m.Attributes?.MessageGroupId === group).map((m) => m.Body);
        expect(inGroup).toEqual([`${group}-0`, `${group}-1`, `${group}-2`]);
      }
      expect(moved).toHaveLength(6);
      expectUserAttributes(moved);
    });

    it('a message the destination refuses is never deleted: it stays in the dead-letter queue, visible', async () => {
      const { queueUrl, dlqUrl, dlqName } = env.createQueue('redrive-refused', { maxReceiveCount: 3 });
      const small = env.server.createQueue('redrive-refused-small', {
        attributes: { MaximumMessageSize: '1024' },
      });
      const bodies = await deadLetter(env.sqs, dlqUrl as string, 'fits', 12, 'hydrate returned null');
      await sendMessages(env.sqs, dlqUrl as string, [
        { body: `{"id":"too-large","pad":"${'x'.repeat(2_000)}"}` },
      ]);

      const p = cli(['dlq', 'redrive', '--to', small.queueUrl], fauxqsEnv(queueUrl));
      expect(await p.exit(30_000)).toEqual({ code: 1, signal: null });
      expect(p.stdout).toMatch(
        /result: 12 moved; 1 refused by the destination \(InvalidParameterValue\) and kept in the dead-letter queue/,
      );
      // Given back at once, not after the hold.
      expect(env.counts(dlqName as string)).toMatchObject({ ready: 1, inflight: 0 });
      const left = await drainQueue(env.sqs, dlqUrl as string);
      expect(left.map((m) => JSON.parse(m.Body ?? '{}').id)).toEqual(['too-large']);
      expect(bodiesOf(await drainQueue(env.sqs, small.queueUrl))).toEqual([...bodies].sort());
    });

    it('a send that fails whole (a black-holed SendMessageBatch) deletes nothing it did not send', async () => {
      const blackHole = await startBlackHole();
      const { queueUrl, queueName, dlqUrl, dlqName } = env.createQueue('redrive-hung', {
        maxReceiveCount: 3,
      });
      const bodies = await deadLetter(env.sqs, dlqUrl as string, 'hung', 25, 'hydrate returned null');
      // The second batch's send never answers.
      const sqs = faultySqsClient(env, blackHole.port, {
        hang: (name, nth) => name === 'SendMessageBatchCommand' && nth === 2,
      });
      const out: string[] = [];
      try {
        const code = await redriveCommand(
          fauxqsEnv(queueUrl),
          {
            stdout: (t) => void out.push(t),
            stderr: (t) => void out.push(t),
            cwd: process.cwd(),
            isTTY: false,
          },
          { timeoutMs: 500 },
          { sqs },
        );
        expect(code).toBe(1);
      } finally {
        sqs.destroy();
        await blackHole.close();
      }
      const text = out.join('');
      expect(text).toContain('path: receive, send, delete');
      expect(text).toMatch(
        /result: 10 moved; stopped: SendMessageBatch: no answer in time \(AbortError\); 10 not deleted/,
      );
      // The unsent batch is back in the dead-letter queue, visible at once; none lost, none in both.
      expect(env.counts(dlqName as string)).toMatchObject({ ready: 15, inflight: 0 });
      expect(env.counts(queueName).total).toBe(10);
      const all = [
        ...(await drainQueue(env.sqs, queueUrl)),
        ...(await drainQueue(env.sqs, dlqUrl as string)),
      ];
      expect(bodiesOf(all)).toEqual([...bodies].sort());
    });

    it('SIGINT stops after the batch in hand: exit 130, what was not moved stays in the dead-letter queue', async () => {
      const { queueUrl, queueName, dlqUrl, dlqName } = env.createQueue('redrive-int', { maxReceiveCount: 3 });
      const bodies = await deadLetter(env.sqs, dlqUrl as string, 'int', 6, 'hydrate returned null');

      const p = cli(['dlq', 'redrive', '--rate', '1'], fauxqsEnv(queueUrl));
      await expect
        .poll(() => /^moved: 1 of about 6/m.test(p.stdout), { timeout: 15_000, interval: 20 })
        .toBe(true);
      p.child.kill('SIGINT');
      expect(await p.exit(10_000)).toEqual({ code: 130, signal: null });

      const moved = env.counts(queueName).total;
      expect(moved).toBeGreaterThanOrEqual(1);
      expect(moved).toBeLessThan(6);
      expect(env.counts(dlqName as string)).toMatchObject({ ready: 6 - moved, inflight: 0 });
      const all = [
        ...(await drainQueue(env.sqs, queueUrl)),
        ...(await drainQueue(env.sqs, dlqUrl as string)),
      ];
      expect(bodiesOf(all)).toEqual([...bodies].sort());
    });

    it('--to the dead-letter queue itself, or a queue that does not exist: exit 1, --to named, nothing moved', async () => {
      const { queueUrl, dlqUrl, dlqName } = env.createQueue('redrive-bad-to', { maxReceiveCount: 3 });
      await deadLetter(env.sqs, dlqUrl as string, 'bad', 2, 'hydrate returned null');
      const self = cli(['dlq', 'redrive', '--to', dlqUrl as string], fauxqsEnv(queueUrl));
      expect(await self.exit(20_000)).toEqual({ code: 1, signal: null });
      expect(self.stderr).toContain(`--to must not be the dead-letter queue itself. Received: "${dlqUrl}"`);
      const missing = cli(
        ['dlq', 'redrive', '--to', `${env.endpoint}/000000000000/nowhere`],
        fauxqsEnv(queueUrl),
      );
      expect(await missing.exit(20_000)).toEqual({ code: 1, signal: null });
      expect(missing.stderr).toMatch(/dlq redrive: .*(NonExistentQueue|QueueDoesNotExist)/);
      expect(env.counts(dlqName as string)).toMatchObject({ ready: 2, inflight: 0 });
    });
  });
});
