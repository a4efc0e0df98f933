/**
 * `sqs-redlock-worker dlq redrive [--to URL] [--rate N]`: moves the dead-letter queue's messages back
 * to SQS_QUEUE_URL (or `--to`). With SQS's own StartMessageMoveTask where the endpoint has it, watched
 * through ListMessageMoveTasks until the task ends; where it does not (fauxqs, some emulators), by
 * receive, send, then delete, a message being deleted only after its send succeeded.
 */
import {
  CancelMessageMoveTaskCommand,
  ListMessageMoveTasksCommand,
  type ListMessageMoveTasksResultEntry,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  type SQSClient,
  StartMessageMoveTaskCommand,
} from '@aws-sdk/client-sqs';
import { ConfigError } from '../errors.ts';
import {
  ASSUMED_MAX_MESSAGE_BYTES,
  changeVisibility,
  deleteMessages,
  messageSize,
} from '../runtime/sqs-actions.ts';
import { COMMAND, type Env } from './env.ts';
import { type CliIo, type Interrupt, pause, progress, signalExitCode } from './io.ts';
import {
  type DeadLetterSession,
  describeError,
  isMissingAction,
  onDeadLetterQueue,
  queueAttributes,
  within,
} from './sqs.ts';

/** How often a move task's progress is asked for (ListMessageMoveTasks). */
export const TASK_POLL_MS = 1_000;
/** Polls in a row that may fail or not list the task before the command gives up watching it. */
const TASK_POLL_ATTEMPTS = 10;
const RECEIVE_WAIT_SEC = 1;
/** SendMessageBatch's limits: 10 entries, and (as on most endpoints) 256 KiB in all. */
const SEND_BATCH_ENTRIES = 10;
const SEND_BATCH_BYTES = ASSUMED_MAX_MESSAGE_BYTES;

export interface RedriveOptions {
  /** Destination queue URL; default SQS_QUEUE_URL. */
  readonly to?: string | undefined;
  /** Messages per second at most (StartMessageMoveTask's MaxNumberOfMessagesPerSecond). */
  readonly rate?: number | undefined;
  /** Deadline of every SQS call, in ms. */
  readonly timeoutMs: number;
}

/** How the messages were moved, and what became of them. */
export type RedriveResult =
  | {
      readonly path: 'move-task';
      readonly status: string;
      readonly moved: number;
      readonly toMove: number;
      readonly failureReason?: string | undefined;
    }
  | {
      readonly path: 'receive-send-delete';
      readonly moved: number;
      /** Refused by the destination (too large, ...): kept in the dead-letter queue. */
      readonly refused: readonly { messageId: string; code: string }[];
      /** Sent, then not deleted: in both queues now. */
      readonly notDeleted: number;
      /** Why the move stopped early, when a call failed whole. */
      readonly error?: string | undefined;
    };

/** Resolves 0 when every message was moved, 1 otherwise, 128 + n after a signal. */
export async function redriveCommand(
  env: Env,
  io: CliIo,
  options: RedriveOptions,
  deps: { sqs?: SQSClient } = {},
): Promise<number> {
  return onDeadLetterQueue('dlq redrive', env, io, options.timeoutMs, deps.sqs, (session) =>
    redrive(session, io, options),
  );
}

async function redrive(
  { config, sqs, dlqUrl, interrupt }: DeadLetterSession,
  io: CliIo,
  options: RedriveOptions,
): Promise<number> {
  const to = options.to ?? config.queueUrl;
  if (to === undefined) {
    throw new ConfigError('--to', undefined, 'must name the destination queue when SQS_QUEUE_URL is not set');
  }
  if (to === dlqUrl) throw new ConfigError('--to', to, 'must not be the dead-letter queue itself');
  const [source, destination] = await Promise.all([
    queueAttributes(sqs, dlqUrl, ['QueueArn', 'ApproximateNumberOfMessages', 'FifoQueue'], options.timeoutMs),
    queueAttributes(sqs, to, ['QueueArn', 'FifoQueue'], options.timeoutMs),
  ]);
  const fifo = source.FifoQueue === 'true';
  if (fifo !== (destination.FifoQueue === 'true')) {
    throw new ConfigError(
      '--to',
      to,
      `must be ${fifo ? 'a FIFO' : 'a standard'} queue, as the dead-letter queue is`,
    );
  }
  const queued = Number(source.ApproximateNumberOfMessages ?? 0);
  io.stdout(`Moving about ${queued} messages from ${dlqUrl} to ${to}.\n`);
  const move: Move = {
    sqs,
    io,
    interrupt,
    options,
    dlqUrl,
    to,
    fifo,
    queued,
    sourceArn: source.QueueArn ?? '',
    destinationArn: destination.QueueArn ?? '',
  };
  let result: RedriveResult;
  try {
    result = await moveTask(move);
  } catch (error) {
    if (!isMissingAction(error)) throw error;
    io.stdout(
      `path: receive, send, delete (this endpoint has no StartMessageMoveTask: ${describeError(error)})\n`,
    );
    result = await receiveSendDelete(move);
  }
  const left = await queueAttributes(sqs, dlqUrl, ['ApproximateNumberOfMessages'], options.timeoutMs).then(
    (a) => a.ApproximateNumberOfMessages ?? '?',
    () => '?',
  );
  io.stdout(`${describeResult(result)}; about ${left} left in the dead-letter queue.\n`);
  if (interrupt.signal) return signalExitCode(interrupt.signal);
  return succeeded(result) ? 0 : 1;
}

interface Move {
  readonly sqs: SQSClient;
  readonly io: CliIo;
  readonly interrupt: Interrupt;
  readonly options: RedriveOptions;
  readonly dlqUrl: string;
  readonly to: string;
  readonly fifo: boolean;
  /** ApproximateNumberOfMessages of the dead-letter queue at the start. */
  readonly queued: number;
  readonly sourceArn: string;
  readonly destinationArn: string;
}

function succeeded(result: RedriveResult): boolean {
  if (result.path === 'move-task') return result.status === 'COMPLETED';
  return result.error === undefined && result.refused.length === 0 && result.notDeleted === 0;
}

function describeResult(result: RedriveResult): string {
  if (result.path === 'move-task') {
    const why = result.failureReason ? ` (${result.failureReason})` : '';
    return `result: move task ${result.status}${why}: ${result.moved} of about ${result.toMove} moved`;
  }
  const parts = [`result: ${result.moved} moved`];
  if (result.refused.length > 0) {
    const codes = [...new Set(result.refused.map((r) => r.code))].join(', ');
    parts.push(
      `${result.refused.length} refused by the destination (${codes}) and kept in the dead-letter queue`,
    );
  }
  if (result.notDeleted > 0) {
    parts.push(`${result.notDeleted} sent but not deleted (now in both queues: a duplicate delivery)`);
  }
  if (result.error !== undefined) parts.push(`stopped: ${result.error}`);
  return parts.join('; ');
}

// ---- StartMessageMoveTask ----

const TASK_ENDED = new Set(['COMPLETED', 'CANCELLED', 'FAILED']);

/** Starts the task (throws what StartMessageMoveTask threw) and watches it until it ends. */
async function moveTask(move: Move): Promise<RedriveResult> {
  const { sqs, io, interrupt, options } = move;
  const startedAt = Date.now();
  const { TaskHandle } = await sqs.send(
    new StartMessageMoveTaskCommand({
      SourceArn: move.sourceArn,
      DestinationArn: move.destinationArn,
      ...(options.rate === undefined ? {} : { MaxNumberOfMessagesPerSecond: options.rate }),
    }),
    within(options.timeoutMs),
  );
  io.stdout('path: StartMessageMoveTask\n');
  const bar = progress(io, 'moved');
  let startedTimestamp: number | undefined;
  let misses = 0;
  let last: ListMessageMoveTasksResultEntry | undefined;
  try {
    for (let first = true; ; first = false) {
      if (!first) await pause(TASK_POLL_MS, interrupt.aborted);
      if (interrupt.signal) {
        await cancelTask(sqs, TaskHandle, options.timeoutMs, io);
        return taskResult(last, 'CANCELLED', move.queued);
      }
      let task: ListMessageMoveTasksResultEntry | undefined;
      try {
        const { Results } = await sqs.send(
          new ListMessageMoveTasksCommand({ SourceArn: move.sourceArn, MaxResults: 10 }),
          within(options.timeoutMs),
        );
        task = findTask(Results ?? [], TaskHandle, startedTimestamp, startedAt);
      } catch (error) {
        if (++misses >= TASK_POLL_ATTEMPTS) throw error;
        continue;
      }
      if (task === undefined) {
        if (++misses >= TASK_POLL_ATTEMPTS) {
          throw new Error(
            `the move task is not listed by ListMessageMoveTasks (${TASK_POLL_ATTEMPTS} polls)`,
          );
        }
        continue;
      }
      misses = 0;
      last = task;
      startedTimestamp ??= task.StartedTimestamp;
      bar.update(
        task.ApproximateNumberOfMessagesMoved ?? 0,
        task.ApproximateNumberOfMessagesToMove ?? 0,
        task.Status,
      );
      if (task.Status !== undefined && TASK_ENDED.has(task.Status))
        return taskResult(task, task.Status, move.queued);
    }
  } finally {
    bar.end();
  }
}

/**
 * Ours among the source's tasks: by its handle while it runs (SQS drops the handle once a task
 * ended), then by its start time; newest first, and only one may run per source at a time.
 */
export function findTask(
  results: readonly ListMessageMoveTasksResultEntry[],
  handle: string | undefined,
  startedTimestamp: number | undefined,
  startedAt: number,
): ListMessageMoveTasksResultEntry | undefined {
  const byHandle = handle === undefined ? undefined : results.find((r) => r.TaskHandle === handle);
  if (byHandle) return byHandle;
  if (startedTimestamp !== undefined) return results.find((r) => r.StartedTimestamp === startedTimestamp);
  // Ended before the first poll: the newest, if it started after us (a minute of clock skew allowed).
  const newest = results[0];
  return newest && (newest.StartedTimestamp ?? 0) >= startedAt - 60_000 ? newest : undefined;
}

function taskResult(
  task: ListMessageMoveTasksResultEntry | undefined,
  status: string,
  queued: number,
): RedriveResult {
  return {
    path: 'move-task',
    status,
    moved: task?.ApproximateNumberOfMessagesMoved ?? 0,
    toMove: task?.ApproximateNumberOfMessagesToMove ?? queued,
    failureReason: task?.FailureReason,
  };
}

async function cancelTask(
  sqs: SQSClient,
  handle: string | undefined,
  timeoutMs: number,
  io: CliIo,
): Promise<void> {
  if (handle === undefined) return;
  try {
    await sqs.send(new CancelMessageMoveTaskCommand({ TaskHandle: handle }), within(timeoutMs));
    io.stdout('interrupted: move task cancelled (what it moved stays moved)\n');
  } catch (error) {
    io.stderr(`${COMMAND} dlq redrive: could not cancel the move task: ${describeError(error)}\n`);
  }
}

// ---- receive, send, delete ----

/**
 * Moves up to the number queued at the start (as a move task does: messages dead-lettered meanwhile,
 * perhaps the same ones again, wait for the next run), in batches of up to 10. A message refused by
 * the destination stays hidden until the end, then is made visible again; one is deleted from the
 * dead-letter queue only once its send succeeded. A call that fails whole stops the move.
 */
async function receiveSendDelete(move: Move): Promise<RedriveResult> {
  const { sqs, io, interrupt, options, dlqUrl } = move;
  // Long enough for the send and the delete of a batch, each bounded by the timeout.
  const holdSec = Math.max(30, Math.ceil((3 * options.timeoutMs) / 1_000) + 5);
  const perBatch = Math.min(10, options.rate ?? 10);
  const giveBack: Message[] = [];
  // By MessageId: a refused message seen again (a long run outlasts its hold) is one refusal, not two.
  const refused = new Map<string, { messageId: string; code: string }>();
  let moved = 0;
  let sentCount = 0;
  let notDeleted = 0;
  let error: string | undefined;
  const startedAt = performance.now();
  const bar = progress(io, 'moved');
  try {
    while (moved + refused.size < move.queued && !interrupt.signal) {
      if (options.rate !== undefined) {
        // Never ahead of the rate: message k may be sent no earlier than k / rate seconds in (counted
        // on what was sent, delivered whether or not its delete then succeeded).
        const due = startedAt + (sentCount / options.rate) * 1_000;
        await pause(Math.max(0, due - performance.now()), interrupt.aborted);
        if (interrupt.signal) break;
      }
      let batch: Message[];
      try {
        const out = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: dlqUrl,
            MaxNumberOfMessages: Math.min(perBatch, move.queued - moved - refused.size),
            VisibilityTimeout: holdSec,
            WaitTimeSeconds: RECEIVE_WAIT_SEC,
            MessageAttributeNames: ['All'],
            MessageSystemAttributeNames: ['All'],
            // Some emulators read only the older name (see RECEIVE_SYSTEM_ATTRIBUTES).
            AttributeNames: ['All'],
          }),
          within(options.timeoutMs + RECEIVE_WAIT_SEC * 1_000),
        );
        batch = out.Messages ?? [];
      } catch (receiveError) {
        error = `ReceiveMessage: ${describeError(receiveError)}`;
        break;
      }
      if (batch.length === 0) break;

      const sent = await sendAll(move, batch);
      // FIFO: behind a refused message of their group, not sent (they must not overtake it).
      giveBack.push(...sent.held);
      for (const r of sent.refused) {
        giveBack.push(r.message);
        const messageId = r.message.MessageId ?? '';
        refused.set(messageId, { messageId, code: r.code });
      }
      sentCount += sent.ok.length;
      if (sent.ok.length > 0) {
        const deleted = await deleteMessages(sqs, dlqUrl, sent.ok, { timeoutMs: options.timeoutMs });
        notDeleted += deleted.failed.size;
        moved += sent.ok.length - deleted.failed.size;
        if (deleted.errors.length > 0) error = `DeleteMessageBatch: ${describeError(deleted.errors[0])}`;
      }
      bar.update(moved, move.queued, refused.size > 0 ? `${refused.size} refused` : undefined);
      if (sent.error !== undefined) {
        // Not sent (or not known to be): hidden no longer, and never deleted.
        giveBack.push(...sent.unsent);
        error = `SendMessageBatch: ${describeError(sent.error)}; ${sent.unsent.length} not deleted`;
      }
      if (error !== undefined) break;
    }
  } finally {
    bar.end();
    // Whatever was held and not moved is visible again at once, not after the hold.
    if (giveBack.length > 0) {
      await changeVisibility(
        sqs,
        dlqUrl,
        giveBack.map((message) => ({ message, seconds: 0 })),
        { timeoutMs: options.timeoutMs },
      );
    }
  }
  return { path: 'receive-send-delete', moved, refused: [...refused.values()], notDeleted, error };
}

/**
 * SendMessageBatch of `messages`, in batches within SQS's limits, stopping at the first that fails
 * whole. FIFO: SQS answers each entry of a batch on its own, so a group's message is sent only once
 * the one before it was (one message per group per call); behind one refused, the rest of its
 * group is `held` (not sent), or it would overtake it.
 */
async function sendAll(
  move: Move,
  messages: readonly Message[],
): Promise<{
  ok: Message[];
  refused: { message: Message; code: string }[];
  held: Message[];
  unsent: Message[];
  error?: unknown;
}> {
  const ok: Message[] = [];
  const refused: { message: Message; code: string }[] = [];
  const held: Message[] = [];
  const blocked = new Set<string>();
  const groupOf = (m: Message): string => m.Attributes?.MessageGroupId ?? '';
  const rounds = move.fifo ? fifoRounds(messages) : [messages];
  for (const [r, round] of rounds.entries()) {
    const sendable = round.filter((m) => !(move.fifo && blocked.has(groupOf(m))));
    held.push(...round.filter((m) => !sendable.includes(m)));
    const groups = sendGroups(sendable);
    for (const [g, group] of groups.entries()) {
      try {
        const out = await move.sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: move.to,
            Entries: group.map((m, i) => sendEntry(m, i, move.fifo)),
          }),
          within(move.options.timeoutMs),
        );
        const failed = new Map((out.Failed ?? []).map((f) => [f.Id, f.Code ?? 'unknown']));
        const succeeded = new Set((out.Successful ?? []).map((s) => s.Id));
        group.forEach((m, i) => {
          const code = failed.get(`m${i}`);
          if (code !== undefined) refused.push({ message: m, code });
          else if (succeeded.has(`m${i}`)) ok.push(m);
          else refused.push({ message: m, code: 'no answer for this entry' });
          if (code !== undefined || !succeeded.has(`m${i}`)) blocked.add(groupOf(m));
        });
      } catch (error) {
        return {
          ok,
          refused,
          held,
          unsent: [...groups.slice(g).flat(), ...rounds.slice(r + 1).flat()],
          error,
        };
      }
    }
  }
  return { ok, refused, held, unsent: [] };
}

/** FIFO: the first message of each group, then the second of each, ...: in each group's order. */
function fifoRounds(messages: readonly Message[]): Message[][] {
  const rounds: Message[][] = [];
  const seen = new Map<string, number>();
  for (const m of messages) {
    const group = m.Attributes?.MessageGroupId ?? '';
    const k = seen.get(group) ?? 0;
    seen.set(group, k + 1);
    const round = rounds[k] ?? [];
    round.push(m);
    rounds[k] = round;
  }
  return rounds;
}

/** Batches of at most 10 entries and 256 KiB; a message larger than that goes alone. */
function sendGroups(messages: readonly Message[]): Message[][] {
  const groups: Message[][] = [];
  let current: Message[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = messageSize(m.Body ?? '', attributesOf(m));
    if (current.length > 0 && (current.length === SEND_BATCH_ENTRIES || bytes + size > SEND_BATCH_BYTES)) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

/** The message's attributes as they are sent: type and value only (no empty list fields). */
function attributesOf(message: Message): Record<string, MessageAttributeValue> {
  const out: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    out[name] = {
      DataType: value.DataType,
      ...(value.StringValue === undefined ? {} : { StringValue: value.StringValue }),
      ...(value.BinaryValue === undefined ? {} : { BinaryValue: value.BinaryValue }),
    };
  }
  return out;
}

/**
 * The message as it was: body, attributes, its trace header, and (FIFO) its group. The deduplication
 * id is the dead-lettered copy's MessageId: a send repeated after a failed delete is deduplicated,
 * and no earlier send of the original (its own id) can swallow this one.
 */
function dedupIdOf(message: Message): string | undefined {
  const id = message.MessageId;
  const sent = message.Attributes?.SentTimestamp;
  return id === undefined || sent === undefined ? id : `${id}-${sent}`;
}

export function sendEntry(message: Message, index: number, fifo: boolean): SendMessageBatchRequestEntry {
  const attributes = attributesOf(message);
  const trace = message.Attributes?.AWSTraceHeader;
  return {
    Id: `m${index}`,
    MessageBody: message.Body ?? '',
    ...(Object.keys(attributes).length > 0 ? { MessageAttributes: attributes } : {}),
    ...(trace === undefined
      ? {}
      : { MessageSystemAttributes: { AWSTraceHeader: { DataType: 'String', StringValue: trace } } }),
    ...(fifo
      ? {
          MessageGroupId: message.Attributes?.MessageGroupId ?? 'redrive',
          // Dedups a resend of this copy (a send answered too late), but not a later stay of the same
          // message in the dead-letter queue: SQS keeps a moved message's MessageId, and a FIFO queue
          // resets its SentTimestamp when it moves it to the DLQ.
          MessageDeduplicationId: dedupIdOf(message),
        }
      : {}),
  };
}
