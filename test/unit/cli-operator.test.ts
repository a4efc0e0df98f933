import type { Message } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { CLOCK_SKEW_WARN_MS, clockSkewFinding, persistenceFinding } from '../../src/cli/check.ts';
import { errorNameOf, NO_ERROR, summarize } from '../../src/cli/dlq-inspect.ts';
import { findTask, sendEntry } from '../../src/cli/dlq-redrive.ts';
import { progress, table } from '../../src/cli/io.ts';
import { isMissingAction } from '../../src/cli/sqs.ts';
import { serializeError } from '../../src/observability/serialize.ts';

describe('check', () => {
  describe('persistenceFinding', () => {
    it('is ok only with AOF and appendfsync always', () => {
      expect(persistenceFinding({ appendonly: 'yes', appendfsync: 'always' }).status).toBe('ok');
      expect(persistenceFinding({ appendonly: 'no', appendfsync: 'always' })).toMatchObject({
        status: 'warn',
        detail: expect.stringMatching(/^appendonly no: /),
      });
      expect(persistenceFinding({ appendonly: 'yes', appendfsync: 'everysec' })).toMatchObject({
        status: 'warn',
        detail: expect.stringContaining('appendfsync everysec'),
      });
      expect(persistenceFinding({ unknown: 'CONFIG GET refused (NOPERM)' })).toEqual({
        status: 'warn',
        detail: 'unknown: CONFIG GET refused (NOPERM)',
      });
    });
  });

  describe('clockSkewFinding', () => {
    const node = (label: string, offsetMs: number, rttMs = 2) => ({ label, clock: { offsetMs, rttMs } });

    it('measures the spread of the offsets, within the round trips', () => {
      expect(clockSkewFinding([node('a', 3), node('b', -2), node('c', 0)])).toEqual({
        status: 'ok',
        detail: '5 ms across 3 nodes (±1 ms); this host differs by up to 3 ms',
      });
    });

    it('warns past the threshold, not when the round trips could explain it', () => {
      const far = CLOCK_SKEW_WARN_MS + 500;
      expect(clockSkewFinding([node('a', 0), node('b', far)])?.status).toBe('warn');
      expect(clockSkewFinding([node('a', 0), node('b', far, 2 * far)])?.status).toBe('ok');
    });

    it('has nothing to say without an answering node', () => {
      expect(clockSkewFinding([{ label: 'a' }])).toBeUndefined();
    });
  });
});

describe('dlq inspect', () => {
  describe('errorNameOf', () => {
    it('reads the name of a serialized error, also of one shortened past valid JSON', () => {
      const text = JSON.stringify(serializeError(new TypeError('x'.repeat(100))));
      expect(errorNameOf(text)).toBe('TypeError');
      expect(errorNameOf(`${text.slice(0, 40)}…`)).toBe('TypeError');
      expect(errorNameOf(undefined)).toBe(NO_ERROR);
      expect(errorNameOf('not json')).toBe('(unnamed)');
    });
  });

  it('summarize counts, dates and samples', () => {
    const message = (id: string, sent: number, reason?: string): Message => ({
      MessageId: id,
      Body: `body-${id}`,
      Attributes: { SentTimestamp: String(sent) },
      MessageAttributes:
        reason === undefined ? {} : { 'poison-reason': { DataType: 'String', StringValue: reason } },
    });
    const s = summarize(
      'q',
      { ApproximateNumberOfMessages: '3' },
      [message('a', 2_000, 'r1'), message('b', 1_000, 'r1'), message('c', 3_000)],
      1,
      0,
    );
    expect(s).toMatchObject({
      read: 3,
      byReason: { r1: 2, '(none: moved here by the RedrivePolicy)': 1 },
      byErrorName: { '(none)': 3 },
      oldest: new Date(1_000).toISOString(),
      newest: new Date(3_000).toISOString(),
      samples: [{ messageId: 'a', body: 'body-a', reason: 'r1' }],
    });
  });
});

describe('dlq redrive', () => {
  describe('findTask', () => {
    const running = { TaskHandle: 'h1', Status: 'RUNNING', StartedTimestamp: 1_000 };
    it('by handle while it runs, then by its start time (SQS drops the handle once it ended)', () => {
      expect(findTask([{ TaskHandle: 'other' }, running], 'h1', undefined, 0)).toBe(running);
      const ended = { Status: 'COMPLETED', StartedTimestamp: 1_000 };
      expect(findTask([{ StartedTimestamp: 2_000 }, ended], 'h1', 1_000, 0)).toBe(ended);
    });
    it('ended before the first poll: the newest, only if it started after us', () => {
      const newest = { Status: 'COMPLETED', StartedTimestamp: 100_000 };
      expect(findTask([newest], 'h1', undefined, 100_500)).toBe(newest);
      expect(findTask([newest], 'h1', undefined, 100_000 + 120_000)).toBeUndefined();
    });
  });

  describe('sendEntry', () => {
    const message = {
      MessageId: 'dlq-copy-id',
      Body: 'b',
      Attributes: { MessageGroupId: 'g', AWSTraceHeader: 'Root=1-abc' },
      MessageAttributes: {
        k: { DataType: 'String', StringValue: 'v', StringListValues: [], BinaryListValues: [] },
      },
    };
    it('keeps the body, the attributes (type and value only), the trace header and the FIFO group', () => {
      expect(sendEntry(message, 3, true)).toEqual({
        Id: 'm3',
        MessageBody: 'b',
        MessageAttributes: { k: { DataType: 'String', StringValue: 'v' } },
        MessageSystemAttributes: { AWSTraceHeader: { DataType: 'String', StringValue: 'Root=1-abc' } },
        MessageGroupId: 'g',
        MessageDeduplicationId: 'dlq-copy-id',
      });
      expect(sendEntry({ MessageId: 'x', Body: 'b' }, 0, false)).toEqual({ Id: 'm0', MessageBody: 'b' });
    });
    it('dedups a FIFO resend of one dead-letter stay, not a later stay of the same message', () => {
      // SQS keeps a moved message's MessageId; a FIFO DLQ resets its SentTimestamp on each move. With the
      // MessageId alone, a second redrive within 5 minutes would be dropped by the source as a duplicate
      // and then deleted from the DLQ: lost.
      const stay = (sent: string) => ({
        ...message,
        Attributes: { ...message.Attributes, SentTimestamp: sent },
      });
      const first = sendEntry(stay('1700000000000'), 0, true).MessageDeduplicationId;
      expect(first).toBe('dlq-copy-id-1700000000000');
      expect(sendEntry(stay('1700000000000'), 5, true).MessageDeduplicationId).toBe(first);
      expect(sendEntry(stay('1700000060000'), 0, true).MessageDeduplicationId).not.toBe(first);
    });
  });

  it('isMissingAction knows how emulators and AWS say an action does not exist', () => {
    const named = (name: string) => Object.assign(new Error('x'), { name });
    for (const name of ['InvalidAction', 'UnsupportedOperation', 'UnknownOperationException']) {
      expect(isMissingAction(named(name))).toBe(true);
    }
    for (const name of ['AccessDenied', 'InvalidParameterValue', 'AbortError']) {
      expect(isMissingAction(named(name))).toBe(false);
    }
  });
});

describe('table', () => {
  it('pads every column but the last to its widest cell', () => {
    expect(
      table([
        ['A', 'BB', 'C'],
        ['long', 'x', 'tail'],
      ]),
    ).toBe('A     BB  C\nlong  x   tail\n');
  });
});

describe('progress', () => {
  const io = (isTTY: boolean) => {
    const out: string[] = [];
    return { out, io: { stdout: (t: string) => void out.push(t), stderr: () => {}, cwd: '/', isTTY } };
  };

  it('redraws one bar in place on a terminal, and ends its line', () => {
    const { out, io: tty } = io(true);
    const bar = progress(tty, 'moved');
    bar.update(5, 10);
    bar.update(10, 10, 'COMPLETED');
    bar.end();
    expect(out).toEqual([
      `\r[${'#'.repeat(15)}${'-'.repeat(15)}] 5/10 moved\x1b[K`,
      `\r[${'#'.repeat(30)}] 10/10 moved (COMPLETED)\x1b[K`,
      '\n',
    ]);
  });

  it('writes one line per change otherwise', () => {
    const { out, io: pipe } = io(false);
    const bar = progress(pipe, 'moved');
    bar.update(0, 4, 'RUNNING');
    bar.update(0, 4, 'RUNNING');
    bar.update(4, 4, 'COMPLETED');
    bar.end();
    expect(out).toEqual(['moved: 0 of about 4 (RUNNING)\n', 'moved: 4 of about 4 (COMPLETED)\n']);
  });
});
