/**
 * `sqs-redlock-worker dlq inspect`: what is in the dead-letter queue, without consuming it. Messages
 * are received with a visibility timeout (so the scan meets each once), counted by `poison-reason`
 * and by error name, then made visible again at once with ChangeMessageVisibilityBatch 0; should
 * the process die meanwhile, they come back by themselves after {@link INSPECT_HOLD_SEC}.
 */
import { type Message, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { changeVisibility, POISON_ATTRIBUTES } from '../runtime/sqs-actions.ts';
import type { Env } from './env.ts';
import { type CliIo, type Interrupt, signalExitCode, table } from './io.ts';
import { describeError, onDeadLetterQueue, queueAttributes, within } from './sqs.ts';

/** How long a message read by the scan stays invisible at most (if the scan cannot give it back). */
export const INSPECT_HOLD_SEC = 60;
/** Long enough for a receive to ask every SQS server (short polls sample some, and may miss). */
const RECEIVE_WAIT_SEC = 1;
/** Bodies shown in samples are cut here (the JSON output keeps them whole). */
const SAMPLE_BODY_CHARS = 500;
/** A reason longer than this is cut in the table (the JSON output keeps it whole). */
const REASON_CHARS = 100;

export const NO_REASON = '(none: moved here by the RedrivePolicy)';
export const NO_ERROR = '(none)';

export interface InspectOptions {
  /** Read at most this many messages. */
  readonly max: number;
  /** Show this many bodies (0: none). */
  readonly samples: number;
  /** Deadline of every SQS call, in ms. */
  readonly timeoutMs: number;
  readonly json: boolean;
}

/** What the scan found. */
export interface DeadLetterSummary {
  readonly queueUrl: string;
  /** ApproximateNumberOfMessages and ...NotVisible before the scan. */
  readonly approximate: { readonly visible: number; readonly inFlight: number };
  readonly read: number;
  readonly byReason: Record<string, number>;
  readonly byErrorName: Record<string, number>;
  /** SentTimestamp, ISO 8601, of the oldest and newest read. */
  readonly oldest: string | undefined;
  readonly newest: string | undefined;
  readonly samples: readonly { messageId: string; sent: string | undefined; reason: string; body: string }[];
  /** Read messages whose visibility could not be set back to 0 (visible again within INSPECT_HOLD_SEC). */
  readonly stillHidden: number;
}

/** Resolves 0 after a scan that gave every message back, 1 otherwise, 128 + n after a signal. */
export async function inspectCommand(
  env: Env,
  io: CliIo,
  options: InspectOptions,
  deps: { sqs?: SQSClient } = {},
): Promise<number> {
  return onDeadLetterQueue(
    'dlq inspect',
    env,
    io,
    options.timeoutMs,
    deps.sqs,
    async ({ sqs, dlqUrl, interrupt }) => {
      const summary = await inspect(sqs, dlqUrl, options, interrupt);
      io.stdout(options.json ? `${JSON.stringify(summary)}\n` : render(summary, options));
      if (summary.stillHidden > 0) return 1;
      return interrupt.signal ? signalExitCode(interrupt.signal) : 0;
    },
  );
}

async function inspect(
  sqs: SQSClient,
  queueUrl: string,
  options: InspectOptions,
  interrupt: Interrupt,
): Promise<DeadLetterSummary> {
  const attributes = await queueAttributes(
    sqs,
    queueUrl,
    ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'RedrivePolicy'],
    options.timeoutMs,
  );
  if (attributes.RedrivePolicy !== undefined) {
    // Each scan receives every message once: with a policy of its own, the dead-letter queue would
    // move its messages on to the next queue after maxReceiveCount scans. Reading must not move them.
    throw new Error(
      `the dead-letter queue ${queueUrl} has a RedrivePolicy of its own (${attributes.RedrivePolicy}): every scan raises each message's receive count, so inspecting would move messages on; inspect the queue it names, or remove the policy`,
    );
  }
  // By MessageId: a message met twice (its hold ran out) counts once, and only its newest receipt
  // handle is valid for giving it back.
  const read = new Map<string, Message>();
  let scanError: unknown;
  try {
    while (read.size < options.max && !interrupt.signal) {
      const out = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: Math.min(10, options.max - read.size),
          VisibilityTimeout: INSPECT_HOLD_SEC,
          WaitTimeSeconds: RECEIVE_WAIT_SEC,
          MessageAttributeNames: ['All'],
          MessageSystemAttributeNames: ['All'],
          // Some emulators read only the older name (see RECEIVE_SYSTEM_ATTRIBUTES).
          AttributeNames: ['All'],
        }),
        within(options.timeoutMs + RECEIVE_WAIT_SEC * 1_000),
      );
      const batch = out.Messages ?? [];
      const fresh = batch.filter((m) => m.MessageId !== undefined && !read.has(m.MessageId));
      for (const m of batch) if (m.MessageId !== undefined) read.set(m.MessageId, m);
      if (fresh.length === 0) break;
    }
  } catch (error) {
    scanError = error;
  }
  // Always, also after a failed receive or a signal: nothing read stays hidden.
  const messages = [...read.values()];
  const given = await changeVisibility(
    sqs,
    queueUrl,
    messages.map((message) => ({ message, seconds: 0 })),
    { timeoutMs: options.timeoutMs },
  );
  if (scanError !== undefined) {
    const hidden = given.failed.size;
    const note = hidden > 0 ? `; ${hidden} read stay hidden up to ${INSPECT_HOLD_SEC} s` : '';
    throw new Error(`ReceiveMessage: ${describeError(scanError)}${note}`, { cause: scanError });
  }
  return summarize(queueUrl, attributes, messages, options.samples, given.failed.size);
}

/** Counts and samples of `messages` (pure: unit-testable). */
export function summarize(
  queueUrl: string,
  attributes: { ApproximateNumberOfMessages?: string; ApproximateNumberOfMessagesNotVisible?: string },
  messages: readonly Message[],
  samples: number,
  stillHidden: number,
): DeadLetterSummary {
  const byReason: Record<string, number> = {};
  const byErrorName: Record<string, number> = {};
  let oldest: number | undefined;
  let newest: number | undefined;
  for (const m of messages) {
    const reason = reasonOf(m);
    byReason[reason] = (byReason[reason] ?? 0) + 1;
    const name = errorNameOf(m.MessageAttributes?.[POISON_ATTRIBUTES.error]?.StringValue);
    byErrorName[name] = (byErrorName[name] ?? 0) + 1;
    const sent = Number(m.Attributes?.SentTimestamp);
    if (Number.isFinite(sent) && sent > 0) {
      oldest = oldest === undefined ? sent : Math.min(oldest, sent);
      newest = newest === undefined ? sent : Math.max(newest, sent);
    }
  }
  const iso = (ms: number | undefined): string | undefined =>
    ms === undefined ? undefined : new Date(ms).toISOString();
  return {
    queueUrl,
    approximate: {
      visible: Number(attributes.ApproximateNumberOfMessages ?? 0),
      inFlight: Number(attributes.ApproximateNumberOfMessagesNotVisible ?? 0),
    },
    read: messages.length,
    byReason,
    byErrorName,
    oldest: iso(oldest),
    newest: iso(newest),
    samples: messages.slice(0, samples).map((m) => ({
      messageId: m.MessageId ?? '',
      sent: iso(Number(m.Attributes?.SentTimestamp) || undefined),
      reason: reasonOf(m),
      body: m.Body ?? '',
    })),
    stillHidden,
  };
}

function reasonOf(message: Message): string {
  return message.MessageAttributes?.[POISON_ATTRIBUTES.reason]?.StringValue ?? NO_REASON;
}

/**
 * The `name` of the serialized error in `poison-error` (JSON from serialize-error). A shortened one
 * is no longer JSON: its name is still near the start.
 */
export function errorNameOf(poisonError: string | undefined): string {
  if (poisonError === undefined || poisonError === '') return NO_ERROR;
  try {
    const parsed = JSON.parse(poisonError) as unknown;
    if (
      parsed !== null &&
      typeof parsed === 'object' &&
      typeof (parsed as { name?: unknown }).name === 'string'
    ) {
      return (parsed as { name: string }).name;
    }
  } catch {
    const name = /"name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(poisonError)?.[1];
    if (name !== undefined) return name;
  }
  return '(unnamed)';
}

function cut(text: string, chars: number): string {
  return text.length <= chars ? text : `${text.slice(0, chars - 1)}…`;
}

function countTable(title: string, counts: Record<string, number>): string {
  const rows = Object.entries(counts)
    .sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
    .map(([key, n]) => [String(n), cut(key.replace(/\s+/g, ' '), REASON_CHARS)]);
  return table([['COUNT', title], ...rows]);
}

function render(s: DeadLetterSummary, options: InspectOptions): string {
  const lines = [
    `Dead-letter queue: ${s.queueUrl}`,
    `About ${s.approximate.visible} waiting and ${s.approximate.inFlight} in flight; ` +
      `${s.read} read${s.read >= options.max ? ` (--max ${options.max} reached)` : ''}.`,
  ];
  if (s.read === 0) return `${lines.join('\n')}\n`;
  lines.push(`Oldest sent ${s.oldest ?? 'unknown'}, newest sent ${s.newest ?? 'unknown'}.`, '');
  lines.push(countTable('POISON-REASON', s.byReason), countTable('ERROR NAME', s.byErrorName));
  if (s.samples.length > 0) {
    lines.push(`Samples (${s.samples.length} of ${s.read}):`);
    for (const sample of s.samples) {
      lines.push(
        `  ${sample.messageId}  sent ${sample.sent ?? 'unknown'}  ${cut(sample.reason, REASON_CHARS)}`,
      );
      // Quoted as JSON: a body's control characters (a terminal escape) are shown, not obeyed.
      lines.push(`    ${cut(JSON.stringify(sample.body), SAMPLE_BODY_CHARS)}`);
    }
    lines.push('');
  }
  lines.push(
    s.stillHidden === 0
      ? `All ${s.read} read were made visible again.`
      : `${s.stillHidden} of ${s.read} read could not be made visible again: they come back within ${INSPECT_HOLD_SEC} s.`,
  );
  return `${lines.join('\n')}\n`;
}
