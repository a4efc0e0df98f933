/**
 * The examples' handlers unit-tested with the testing kit, as their authors would: no SQS, no Redis,
 * a downstream of the test's own that keeps the stores' fencing rule (a write older than the last
 * accepted one is refused).
 */
import { describe, expect, it, vi } from 'vitest';
import { type Charge, ChargeOrderHandler } from '../../examples/orders/handler.ts';
import { NightlyReportHandler, reportTaskKey } from '../../examples/scheduler/handler.ts';
import { lockHandoffAttributes } from '../../src/index.ts';
import { sqsMessage, testHandler } from '../../src/testing/index.ts';

// The examples import the library by its package name (dist/ after a build): here, the source.
vi.mock('sqs-redlock-worker', () => import('../../src/index.ts'));

/** Writes by key, each refused when its fencing token is older than the last accepted. */
class FencedWrites<V> {
  readonly accepted: { key: string; value: V; fencingToken: number }[] = [];
  readonly #last = new Map<string, number>();
  /** Called inside each write, before it lands: lets a test fail it or lose the lock meanwhile. */
  during: (() => void) | undefined;

  async write(key: string, value: V, fencingToken: number): Promise<boolean> {
    this.during?.();
    if (fencingToken < (this.#last.get(key) ?? 0)) return false;
    this.#last.set(key, fencingToken);
    this.accepted.push({ key, value, fencingToken });
    return true;
  }
}

describe('examples/orders: ChargeOrderHandler', () => {
  const setup = () => {
    const writes = new FencedWrites<number>();
    const handler = new ChargeOrderHandler({
      charge: (orderId, cents, t) => writes.write(orderId, cents, t),
    });
    return { writes, handler };
  };
  const charge = (body: unknown) => sqsMessage({ body });

  it('charges under the order lock and the charge idempotency key, with the fencing token', async () => {
    const { writes, handler } = setup();
    const result = await testHandler(handler, charge({ orderId: 'o-1', cents: 1250 }), { fencingToken: 7 });

    expect(result).toMatchObject({
      kind: 'processed',
      input: { orderId: 'o-1', cents: 1250 } satisfies Charge,
      lockKey: 'order:o-1',
      idempotencyKey: 'charge:o-1',
    });
    expect(writes.accepted).toEqual([{ key: 'o-1', value: 1250, fencingToken: 7 }]);
    expect(result.logs).toEqual([
      expect.objectContaining({ level: 'info', message: 'order charged', cents: 1250 }),
    ]);
  });

  it('a stale fencing token is refused downstream: processed, with a warning, nothing charged', async () => {
    const { writes, handler } = setup();
    await testHandler(handler, charge({ orderId: 'o-2', cents: 100 }), { fencingToken: 20 });
    const stale = await testHandler(handler, charge({ orderId: 'o-2', cents: 100 }), { fencingToken: 19 });

    expect(stale.kind).toBe('processed');
    expect(stale.logs.map((l) => l.level)).toEqual(['warn', 'info']);
    expect(stale.logs[0]?.message).toMatch(/stale fencing token/);
    expect(writes.accepted.map((w) => w.fencingToken)).toEqual([20]);
  });

  it.each([
    ['cents not a positive integer', { orderId: 'o-3', cents: 0 }, 'hydrate returned null'],
    ['no orderId', { cents: 5 }, 'hydrate returned null'],
    ['a body that is not JSON', '{oops', /^hydrate threw: /],
  ])('poison (%s): dead-lettered, never charged', async (_, body, reason) => {
    const { writes, handler } = setup();
    const result = await testHandler(handler, charge(body));
    expect(result).toMatchObject({ kind: 'poison', reason: expect.stringMatching(reason) });
    expect(writes.accepted).toEqual([]);
  });

  it('a downstream failure is a failure: retried with backoff, not deleted', async () => {
    const { writes, handler } = setup();
    writes.during = () => {
      throw new Error('ledger unavailable');
    };
    const result = await testHandler(handler, charge({ orderId: 'o-4', cents: 1 }));
    expect(result).toMatchObject({ kind: 'failed', error: new Error('ledger unavailable') });
  });

  it('a lock lost during the charge: lock_lost, though the handler returned', async () => {
    const { writes, handler } = setup();
    let loseLock: (() => void) | undefined;
    writes.during = () => loseLock?.();
    const result = await testHandler(handler, charge({ orderId: 'o-5', cents: 1 }), {
      onContext: (_, lose) => {
        loseLock = lose;
      },
    });
    expect(result).toMatchObject({ kind: 'lock_lost', handlerSucceeded: true });
  });
});

describe('examples/scheduler: NightlyReportHandler', () => {
  const task = { customerId: 'c-1', date: '2025-03-01' };
  const setup = (workMs = 0) => {
    const writes = new FencedWrites<string>();
    const handler = new NightlyReportHandler(
      { save: (key, report, t) => writes.write(key, report, t) },
      workMs,
    );
    return { writes, handler };
  };

  it('writes the report under the task key, both its lock and idempotency key', async () => {
    const { writes, handler } = setup();
    const result = await testHandler(handler, sqsMessage({ body: task }), { fencingToken: 3 });

    const key = reportTaskKey(task);
    expect(result).toMatchObject({ kind: 'processed', lockKey: key, idempotencyKey: key });
    expect(writes.accepted).toEqual([{ key, value: expect.any(String), fencingToken: 3 }]);
    expect(JSON.parse(writes.accepted[0]?.value ?? '{}')).toMatchObject(task);
  });

  it('a Publisher dispatch carries its lock: the handoff key, whatever lockKey says', async () => {
    const { handler } = setup();
    const secret = 'h'.repeat(32);
    const attributes = lockHandoffAttributes(
      { key: 'adopted:task', value: 'owner', fencingToken: 11 },
      secret,
    );
    const result = await testHandler(handler, sqsMessage({ body: task, attributes }), {
      handoffSecret: secret,
    });
    expect(result).toMatchObject({
      kind: 'processed',
      lockKey: 'adopted:task',
      idempotencyKey: 'adopted:task',
    });
  });

  it.each([
    ['a date not YYYY-MM-DD', { customerId: 'c-1', date: '1/3/2025' }],
    ['an empty customerId', { customerId: '', date: '2025-03-01' }],
  ])('poison (%s): no report written', async (_, body) => {
    const { writes, handler } = setup();
    await expect(testHandler(handler, sqsMessage({ body }))).resolves.toMatchObject({
      kind: 'poison',
      reason: 'hydrate returned null',
    });
    expect(writes.accepted).toEqual([]);
  });

  it('stops its work when the lock is lost: lock_lost, no report written', async () => {
    const { writes, handler } = setup(30_000);
    const started = performance.now();
    const result = await testHandler(handler, sqsMessage({ body: task }), {
      onContext: (_, loseLock) => {
        setTimeout(loseLock, 20);
      },
    });
    expect(result).toMatchObject({ kind: 'lock_lost', handlerSucceeded: false });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(writes.accepted).toEqual([]);
  });
});
