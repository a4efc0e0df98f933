import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PipelineDeps, runBatch } from '../../src/handler/pipeline.ts';
import { BaseHandler, type Message, type Redlock } from '../../src/index.ts';
import { loadScripts, redlockOver, scriptCalls, silentLogger, sleep } from '../helpers/lock.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';

/** Works as many ms as its message body says. */
class TimedHandler extends BaseHandler<number> {
  hydrate(message: Message): number {
    return Number(message.Body);
  }
  async handle(workMs: number): Promise<void> {
    await sleep(workMs);
  }
}

function messages(bodies: readonly number[]): Message[] {
  return bodies.map((body) => ({ MessageId: randomUUID(), ReceiptHandle: randomUUID(), Body: String(body) }));
}

describe('runBatch: ending each lock as its handler finishes', () => {
  const redis = useRedisNodes(3);
  let redlock: Redlock;

  beforeAll(async () => {
    const over = redlockOver(redis);
    redlock = over.redlock;
    await loadScripts(over.clients);
  });
  afterAll(() => redlock.quit());

  function deps(
    handler: TimedHandler,
    settleEarly?: PipelineDeps<number>['settleEarly'],
    completionWindowMs = 0,
  ): PipelineDeps<number> {
    return {
      handler,
      redlock,
      logger: silentLogger,
      fifo: false,
      autoExtendLocks: true,
      completionTtlMs: undefined,
      completionWindowMs,
      shutdown: new AbortController().signal,
      logBodies: false,
      ...(settleEarly ? { settleEarly } : {}),
    };
  }

  /** Runs `bodies` as one batch; answers the bodies of each group settled together, in order. */
  async function settledGroups(bodies: readonly number[], completionWindowMs: number): Promise<string[][]> {
    const groups: string[][] = [];
    const settle: PipelineDeps<number>['settleEarly'] = async (outcomes) => {
      groups.push(outcomes.map(({ message }) => message.Body ?? ''));
    };
    // Not extended (the TTL outlasts every handler here), so the script calls counted are the batch's own.
    await runBatch(
      { ...deps(new TimedHandler(), settle, completionWindowMs), autoExtendLocks: false },
      messages(bodies),
    );
    return groups;
  }

  it('lets handlers that finish within completionWindowMs share one completion; the last one never waits', async () => {
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    expect(await settledGroups([0, 50, 100, 1_500], 600)).toEqual([['0', '50', '100'], ['1500']]);
    // Two completions per node (plus the acquire), not four.
    expect(await scriptCalls(redis)).toEqual([3, 3, 3]);
    // Without a window, only those finishing in the same turn of the event loop share a call: the
    // 300 ms one is never waited for.
    const unwindowed = await settledGroups([0, 0, 300], 0);
    expect(unwindowed.flat()).toEqual(['0', '0', '300']);
    expect(unwindowed.at(-1)).toEqual(['300']);
    // The batch's last handler does not wait out the window.
    const started = performance.now();
    expect(await settledGroups([0, 0], 5_000)).toEqual([['0', '0']]);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('completes a batch of handlers that finish together in one call per node', async () => {
    await Promise.all(redis.nodes.map((n) => n.resetStats()));
    // A window, as the Worker's default has: on a loaded machine, ten 0 ms timers may fire in more
    // than one turn of the event loop.
    const outcomes = await runBatch(deps(new TimedHandler(), undefined, 500), messages(Array(10).fill(0)));
    expect(outcomes.map((o) => o.outcome.kind)).toEqual(Array(10).fill('processed'));
    // One acquire and one complete per node for the ten.
    expect(await scriptCalls(redis)).toEqual([2, 2, 2]);
  });

  it('settles each message once its own lock has ended, not when the slowest handler is done', async () => {
    const handler = new TimedHandler();
    const settled: { body: string; at: number; kind: string }[] = [];
    const batch = messages([0, 0, 300, 600]);
    const started = performance.now();
    const rest = await runBatch(
      deps(handler, async (outcomes) => {
        for (const { message, outcome } of outcomes) {
          settled.push({ body: message.Body ?? '', at: performance.now() - started, kind: outcome.kind });
        }
      }),
      batch,
    );
    expect(rest).toEqual([]); // everything went through settleEarly
    expect(settled.map((s) => [s.body, s.kind])).toEqual([
      ['0', 'processed'],
      ['0', 'processed'],
      ['300', 'processed'],
      ['600', 'processed'],
    ]);
    const at = (body: string): number => settled.find((s) => s.body === body)?.at ?? Number.NaN;
    // Before the 600 ms handler could have finished (it started after `started`): not held back by it.
    expect(at('0')).toBeLessThan(300);
    expect(at('300')).toBeLessThan(600);
    expect(at('600')).toBeGreaterThanOrEqual(600);
    // Every key carries its completion marker: a redelivery is acked as a duplicate.
    const again = await redlock.acquireMany(
      batch.map((m) => m.MessageId as string),
      { retryCount: 0 },
    );
    expect(again.map((r) => ('reason' in r ? r.reason : 'lock'))).toEqual(['done', 'done', 'done', 'done']);
  });
});
