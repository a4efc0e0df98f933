/**
 * The chaos suite's handler module, run by the real CLI: `node src/cli.ts run chaos/handler.ts`.
 * Its default export is a BaseHandler subclass the CLI instantiates with no arguments, so its settings
 * come from the environment:
 *   CHAOS_LEDGER_URL     redis:// URL of the ledger node (its own node, never one of the quorum) (required)
 *   CHAOS_LEDGER_PREFIX  key prefix of the Ledger (default 'chaos')
 *   CHAOS_SEED           the run's seed: decides which runs throw at random (default 0)
 *   CHAOS_THROW_P        probability that a run on receive 1 or 2 throws (default 0)
 *   LOCK_TTL_MS          the CLI's lock TTL: an event-loop gap longer than this is a process pause
 *
 * Every run writes its effect to the Ledger with `apply(id, ctx.fencingToken)`, which rejects a token
 * lower than the last one accepted. The handler is a good citizen: it honours `ctx.signal` (stops and
 * throws when it aborts) and checks it right before writing. Except after a process pause longer than the
 * lock TTL (the orchestrator SIGSTOPs the worker: the GC-pause story): then it writes anyway, as a handler
 * that checked its signal just before the pause would, and the ledger's fencing must reject the write.
 *
 * It reports each step on stdout as one JSON line `{"chaos": step, ...}` (synchronous on a pipe, so the
 * orchestrator knows, once it has frozen the process, everything that happened before):
 *   start, applying (before the write), applied | rejected, throw, aborted, end.
 * and `{"chaosLag": ms}` when the event loop stalled over 150 ms (after the first run; a freeze shows too).
 */
import type { Message } from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import { BaseHandler, type HandlerContext } from '../src/index.ts';
import { Ledger } from '../test/helpers/ledger.ts';
import { sleepUnlessAborted } from '../test/helpers/lock.ts';
import { type ChaosJob, unitHash } from './schedule.ts';

/** One step of a run, as the orchestrator reads it. */
export interface ChaosLine {
  readonly chaos: 'start' | 'applying' | 'applied' | 'rejected' | 'throw' | 'aborted' | 'end';
  readonly id: string;
  /** SQS MessageId. */
  readonly mid: string;
  readonly token: number;
  readonly rc: number;
  readonly pid: number;
  /** Set on `applying` when the write follows a process pause (a stale holder's write). */
  readonly stale?: boolean;
  /** On `applying` after a pause: how long the event loop was frozen, in ms. */
  readonly pausedMs?: number;
  /** Date.now() when the line was written. */
  readonly at: number;
}

/** How often the pause detector ticks. */
const TICK_MS = 100;
/** Event-loop delays beyond this are logged (`{"chaosLag": ms}`). */
const LAG_REPORT_MS = 150;

/**
 * Event-loop gaps: a timer that should tick every TICK_MS and did not for longer than the lock TTL
 * means the whole process was frozen (SIGSTOP, a stop-the-world pause).
 */
class PauseDetector {
  /** performance.now() at the end of the last pause longer than the threshold. */
  lastPauseEndedAt = Number.NEGATIVE_INFINITY;
  lastPauseMs = 0;
  /** Off until the first run: the CLI's start-up (module loading) stalls the loop, harmlessly. */
  reportLag = false;
  readonly #thresholdMs: number;
  #last = performance.now();
  readonly #timer: NodeJS.Timeout;

  constructor(thresholdMs: number) {
    this.#thresholdMs = thresholdMs;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
  }

  /** Registers a pause that just ended, even before the next tick sees it. */
  poll(): void {
    this.#tick();
  }

  /** Whether a pause ended after `since`; `since` must be taken after a poll(), so an earlier pause is not counted. */
  pausedSince(since: number): boolean {
    this.#tick();
    return this.lastPauseEndedAt > since;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #tick(): void {
    const now = performance.now();
    const gap = now - this.#last;
    // A stalled event loop delays lock extensions and the signal: worth a line in the worker's log.
    if (this.reportLag && gap > TICK_MS + LAG_REPORT_MS) {
      process.stdout.write(
        `${JSON.stringify({ chaosLag: Math.round(gap - TICK_MS), pid: process.pid, at: Date.now() })}\n`,
      );
    }
    if (gap > this.#thresholdMs) {
      this.lastPauseEndedAt = now;
      this.lastPauseMs = Math.round(gap);
    }
    this.#last = now;
  }
}

function numberFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`chaos handler: ${name}=${raw} is not a number`);
  return value;
}

export default class ChaosHandler extends BaseHandler<ChaosJob> {
  readonly #redis: Redis;
  readonly #ledger: Ledger;
  readonly #seed: number;
  readonly #throwP: number;
  readonly #pauses: PauseDetector;

  constructor() {
    super();
    const url = process.env.CHAOS_LEDGER_URL;
    if (!url) throw new Error('chaos handler: CHAOS_LEDGER_URL is required');
    this.#redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    this.#redis.on('error', () => {});
    this.#ledger = new Ledger(this.#redis, process.env.CHAOS_LEDGER_PREFIX || 'chaos');
    this.#seed = numberFromEnv('CHAOS_SEED', 0);
    this.#throwP = numberFromEnv('CHAOS_THROW_P', 0);
    this.#pauses = new PauseDetector(numberFromEnv('LOCK_TTL_MS', 30_000));
  }

  hydrate(message: Message): ChaosJob | null {
    // Not JSON: throws, and a JSON body without an id: null. Both are poison, dead-lettered.
    const job = JSON.parse(message.Body ?? '') as Partial<ChaosJob>;
    if (typeof job.id !== 'string' || job.id.length === 0) return null;
    return { id: job.id, workMs: Number(job.workMs) || 0, throwUntil: job.throwUntil };
  }

  async handle(job: ChaosJob, ctx: HandlerContext): Promise<void> {
    // A freeze that ended just before this run started is not this run's: register it first.
    this.#pauses.poll();
    this.#pauses.reportLag = true;
    const started = performance.now();
    const base = {
      id: job.id,
      mid: ctx.messageId,
      token: ctx.fencingToken,
      rc: ctx.receiveCount,
      pid: process.pid,
    };
    const emit = (chaos: ChaosLine['chaos'], extra: Partial<ChaosLine> = {}): void => {
      process.stdout.write(`${JSON.stringify({ chaos, ...base, ...extra, at: Date.now() })}\n`);
    };
    emit('start');
    if (ctx.signal.aborted) {
      // Lost before it began (the lock or the visibility): a good citizen does not even start.
      emit('aborted');
      throw ctx.signal.reason;
    }
    await this.#ledger.begin(job.id);
    try {
      await sleepUnlessAborted(job.workMs, ctx.signal);
      if (this.#pauses.pausedSince(started)) {
        // The GC-pause story: this process was frozen past its lock TTL. A handler that checked its
        // signal just before the freeze writes now, with a token another holder has superseded.
        emit('applying', { stale: true, pausedMs: this.#pauses.lastPauseMs });
        const accepted = await this.#ledger.apply(job.id, ctx.fencingToken);
        emit(accepted ? 'applied' : 'rejected', { stale: true });
        if (!accepted) throw new Error(`chaos: the ledger rejected stale fencing token ${ctx.fencingToken}`);
        return;
      }
      const injected =
        (job.throwUntil !== undefined && ctx.receiveCount <= job.throwUntil) ||
        (ctx.receiveCount <= 2 && unitHash(this.#seed, `${job.id}#${ctx.receiveCount}`) < this.#throwP);
      if (injected) {
        emit('throw');
        throw new Error(`chaos: injected failure of ${job.id} on receive ${ctx.receiveCount}`);
      }
      if (ctx.signal.aborted) {
        emit('aborted');
        throw ctx.signal.reason;
      }
      emit('applying');
      const accepted = await this.#ledger.apply(job.id, ctx.fencingToken);
      emit(accepted ? 'applied' : 'rejected');
      if (!accepted) throw new Error(`chaos: the ledger rejected fencing token ${ctx.fencingToken}`);
    } finally {
      await this.#ledger.end(job.id);
      emit('end');
    }
  }

  async close(): Promise<void> {
    this.#pauses.stop();
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
