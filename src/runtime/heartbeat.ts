import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { SqsEntryError } from '../errors.ts';
import type { InFlightMessage } from '../handler/pipeline.ts';
import { serializeError } from '../observability/serialize.ts';
import { changeVisibility } from './sqs-actions.ts';

export interface HeartbeatOptions {
  readonly sqs: SQSClient;
  readonly queueUrl: string;
  readonly intervalMs: number;
  /** Seconds of visibility granted on each beat; undefined: visibility is not extended (no beats). */
  readonly visibilityTimeoutSec: number | undefined;
  /** The deadline of one SQS call; a beat's call is also cut at `intervalMs`, when the next beat starts. */
  readonly sqsTimeoutMs: number;
  readonly logger: Logger;
  /**
   * Told of a visibility call that failed whole (a timeout too), and of each entry SQS refused for a
   * message still running (an {@link SqsEntryError}), as `sqs_error` 'heartbeat_visibility'.
   */
  readonly onError: (error: unknown) => void;
}

/**
 * Keeps the visibility of every in-flight message of a worker extended: each beat sends one batched
 * ChangeMessageVisibilityBatch (per 10 messages), bounded by the smaller of `sqsTimeoutMs` and the
 * interval, so a hung call never delays the next beat. Locks are not its business: the Redlock's own
 * extender renews them on its own timer, so SQS can never stall lock renewal.
 *
 * A visibility call that fails, times out or answers late never aborts a handler: the lock, not the
 * visibility, decides exclusivity. If visibility lapses, another consumer may receive the message; it
 * meets the lock and backs off, and once the work is complete its redelivery is acked as a duplicate.
 * The timer is unref'd and nothing thrown in a beat escapes it.
 */
export class Heartbeat {
  readonly #options: HeartbeatOptions;
  readonly #messages = new Set<InFlightMessage>();
  #timer: NodeJS.Timeout | undefined;
  /** Cuts the previous beat's call when the next beat starts (it is also bounded by sqsTimeoutMs). */
  #previousBeat: AbortController | undefined;
  /** Beat calls on their way, with their messages: settling waits for them (see `settled`). */
  readonly #pending = new Set<{ readonly messages: ReadonlySet<Message>; readonly done: Promise<void> }>();

  constructor(options: HeartbeatOptions) {
    this.#options = options;
  }

  add(messages: readonly InFlightMessage[]): void {
    if (this.#options.visibilityTimeoutSec === undefined) return;
    for (const m of messages) this.#messages.add(m);
    if (this.#messages.size > 0 && !this.#timer) {
      this.#timer = setInterval(() => this.#beat(), this.#options.intervalMs);
      this.#timer.unref();
    }
  }

  remove(messages: readonly InFlightMessage[]): void {
    for (const m of messages) this.#messages.delete(m);
    if (this.#messages.size === 0) this.stop();
  }

  /**
   * Resolves once no beat call that carries one of `messages` is on its way (each is bounded by the
   * smaller of sqsTimeoutMs and the interval), so that a visibility change made after it is the last.
   */
  async settled(messages: readonly Message[]): Promise<void> {
    const wanted = new Set(messages);
    const calls = [...this.#pending].filter((p) => [...wanted].some((m) => p.messages.has(m)));
    await Promise.all(calls.map((p) => p.done));
  }

  /** Stops beating. A call in flight runs to its answer or its bound; its messages are done with anyway. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #beat(): void {
    const { visibilityTimeoutSec, sqs, queueUrl, intervalMs, sqsTimeoutMs, logger } = this.#options;
    if (visibilityTimeoutSec === undefined || this.#messages.size === 0) return;
    this.#previousBeat?.abort();
    const beat = new AbortController();
    this.#previousBeat = beat;
    const messages = [...this.#messages];
    const done = changeVisibility(
      sqs,
      queueUrl,
      messages.map((m) => ({ message: m.message, seconds: visibilityTimeoutSec })),
      { timeoutMs: Math.min(sqsTimeoutMs, intervalMs), signal: beat.signal },
      // The next beat is the retry of a refused entry.
      { retryRefused: false },
    )
      .then(({ failed, refused, errors }) => {
        // A message that finished meanwhile was deleted or backed off: its refusal means nothing.
        const running = new Set(messages.filter((m) => this.#messages.has(m)).map((m) => m.message));
        const stillRunning = messages.filter((m) => failed.has(m.message) && running.has(m.message));
        const refusedRunning = refused.filter((r) => running.has(r.message));
        if (stillRunning.length > 0) {
          // Refused entries (a receipt handle no longer current) or a failed call: the handlers go on.
          logger.warn(
            'visibility not extended; the handlers go on under their locks (another consumer that ' +
              'receives these messages meets the lock and backs off)',
            {
              messageIds: stillRunning.map((m) => m.message.MessageId),
              refused: refusedRunning.map((r) => ({
                messageId: r.message.MessageId,
                code: r.code,
                senderFault: r.senderFault,
                detail: r.detail,
              })),
              err: errors.length > 0 ? serializeError(errors[0]) : undefined,
            },
          );
        }
        for (const error of errors) this.#options.onError(error);
        for (const r of refusedRunning) {
          this.#options.onError(
            new SqsEntryError('heartbeat_visibility', { messageId: r.message.MessageId, ...r }),
          );
        }
      })
      .catch((error: unknown) => {
        // changeVisibility never rejects; a throwing listener or logger must not escape the timer.
        try {
          logger.warn('heartbeat beat failed', { err: serializeError(error) });
        } catch {}
      })
      .finally(() => {
        if (this.#previousBeat === beat) this.#previousBeat = undefined;
        this.#pending.delete(pending);
      });
    const pending = { messages: new Set(messages.map((m) => m.message)), done };
    this.#pending.add(pending);
  }
}
