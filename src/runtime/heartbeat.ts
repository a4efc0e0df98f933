import type { SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from 'winston';
import { VisibilityLostError } from '../errors.ts';
import type { InFlightMessage } from '../handler/pipeline.ts';
import type { Redlock } from '../lock/redlock.ts';
import { changeVisibility } from './sqs-actions.ts';

export interface HeartbeatOptions {
  readonly redlock: Redlock;
  readonly sqs: SQSClient;
  readonly queueUrl: string;
  readonly intervalMs: number;
  /** Seconds of visibility granted on each beat; undefined: visibility is not extended. */
  readonly visibilityTimeoutSec: number | undefined;
  readonly logger: Logger;
}

/**
 * One heartbeat for every in-flight message of a worker: each tick extends all their locks (one
 * batched call per Redis node) and their visibility (batched SQS calls). A message whose visibility
 * cannot be extended, or whose visibility ran out, gets its signal aborted. Timers are unref'd, ticks
 * never overlap, and nothing thrown in a tick escapes it.
 */
export class Heartbeat {
  readonly #options: HeartbeatOptions;
  readonly #messages = new Map<InFlightMessage, { visibleUntil: number }>();
  #timer: NodeJS.Timeout | undefined;
  #beating = false;

  constructor(options: HeartbeatOptions) {
    this.#options = options;
  }

  add(messages: readonly InFlightMessage[]): void {
    const visibleUntil = performance.now() + (this.#options.visibilityTimeoutSec ?? 0) * 1000;
    for (const m of messages) this.#messages.set(m, { visibleUntil });
    if (this.#messages.size > 0 && !this.#timer) {
      this.#timer = setInterval(() => void this.#tick(), this.#options.intervalMs);
      this.#timer.unref();
    }
  }

  remove(messages: readonly InFlightMessage[]): void {
    for (const m of messages) this.#messages.delete(m);
    if (this.#messages.size === 0) this.stop();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #tick(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    try {
      const entries = [...this.#messages.entries()];
      const started = performance.now();
      const { visibilityTimeoutSec, redlock, sqs, queueUrl } = this.#options;
      await Promise.all([
        redlock.extendMany(entries.map(([m]) => m.lock)),
        visibilityTimeoutSec === undefined
          ? undefined
          : changeVisibility(
              sqs,
              queueUrl,
              entries.map(([m]) => ({ message: m.message, seconds: visibilityTimeoutSec })),
            ).then(({ failed, errors }) => {
              const now = performance.now();
              for (const [m, state] of entries) {
                if (!failed.has(m.message)) state.visibleUntil = started + visibilityTimeoutSec * 1000;
                else if (errors.length === 0 || now >= state.visibleUntil) {
                  // Refused by SQS (the receipt handle is no longer current), or out of time.
                  m.visibility.abort(
                    new VisibilityLostError(
                      m.message.MessageId,
                      'ChangeMessageVisibility was refused or came too late',
                      {
                        cause: errors[0],
                      },
                    ),
                  );
                }
              }
            }),
      ]);
    } catch (error) {
      this.#options.logger.warn('heartbeat tick failed', { err: String(error) });
    } finally {
      this.#beating = false;
    }
  }
}
