import { EventEmitter } from 'node:events';
import { Agent, request } from 'node:http';
import { type DataPoint, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LockLostError } from '../../src/errors.ts';
import type { QuorumStatus, RedlockEvents } from '../../src/lock/redlock.ts';
import type { WorkerEvents } from '../../src/observability/events.ts';
import { checkReadiness, type MetricsServer, startMetricsServer } from '../../src/observability/http.ts';
import {
  createMetrics,
  EXPIRED_LOSS_WAIT_MS,
  type Metrics,
  type MetricsRedlock,
  OTEL_METRICS,
} from '../../src/observability/metrics.ts';
import type { WorkerState } from '../../src/runtime/worker.ts';

class FakeWorker extends EventEmitter<WorkerEvents> {
  state: WorkerState = 'running';
}

class FakeRedlock extends EventEmitter<RedlockEvents> {
  readonly quorum = 2;
  heldLocks: unknown[] = [];
  status: QuorumStatus = { available: true, up: ['a:1', 'b:2', 'c:3'], down: [] };
  pings = 0;

  async quorumStatus(): Promise<QuorumStatus> {
    this.pings++;
    return this.status;
  }
}

const asRedlock = (fake: FakeRedlock): MetricsRedlock => fake as unknown as MetricsRedlock;
const event = { messageId: 'm1', lockKey: 'k1', idempotencyKey: 'm1' };

/** The value of one sample of a metric, by labels (and, for histograms, by sample name suffix). */
async function value(
  metrics: Metrics,
  name: string,
  labels: Record<string, string | number> = {},
): Promise<number | undefined> {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const metric = metrics.registry.getSingleMetric(base);
  if (!metric) throw new Error(`no metric ${base}`);
  const { values } = await metric.get();
  const found = values.find(
    (v) =>
      ((v as { metricName?: string }).metricName ?? base) === name &&
      Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l),
  );
  return found?.value;
}

describe('createMetrics', () => {
  it('counts messages by outcome from the worker events, every outcome present from the start', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    metrics.attach(worker);
    const text = await metrics.registry.getSingleMetricAsString('sqs_redlock_messages_total');
    for (const outcome of ['processed', 'duplicate', 'contended', 'poison', 'failed', 'lock_lost']) {
      expect(text).toContain(`sqs_redlock_messages_total{outcome="${outcome}"} 0`);
    }

    worker.emit('message_processed', { ...event, fencingToken: 1, durationMs: 250, marked: true });
    worker.emit('message_processed', { ...event, fencingToken: 2, durationMs: 1500, marked: false });
    worker.emit('duplicate_skipped', event);
    worker.emit('lock_contended', { ...event, retryInSec: 3 });
    worker.emit('poison_message', { messageId: 'm2', reason: 'hydrate returned null', deadLettered: true });
    worker.emit('handler_error', {
      ...event,
      fencingToken: 3,
      error: new Error('boom'),
      receiveCount: 1,
      retryInSec: 2,
    });
    worker.emit('handler_error', {
      ...event,
      fencingToken: 4,
      error: new Error('boom'),
      receiveCount: 2,
      retryInSec: 4,
    });
    worker.emit('lock_lost', { ...event, fencingToken: 5, error: new Error('lost') });
    worker.emit('quorum_unavailable', { ...event, failedNodes: ['a:1', 'b:2'], retryInSec: 5 });
    worker.emit('message_released', { ...event, reason: 'shutdown' });

    const counts = Object.fromEntries(
      (await metrics.messages.get()).values.map((v) => [v.labels.outcome, v.value]),
    );
    expect(counts).toEqual({
      processed: 2,
      duplicate: 1,
      contended: 1,
      quorum_unavailable: 1,
      poison: 1,
      failed: 2,
      lock_lost: 1,
      released: 1,
    });
  });

  it('observes the handler time of processed messages, in seconds', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    metrics.attach(worker);
    worker.emit('message_processed', { ...event, fencingToken: 1, durationMs: 250, marked: true });
    worker.emit('message_processed', { ...event, fencingToken: 2, durationMs: 1500, marked: true });
    expect(await value(metrics, 'sqs_redlock_handler_seconds_count')).toBe(2);
    expect(await value(metrics, 'sqs_redlock_handler_seconds_sum')).toBeCloseTo(1.75);
    expect(await value(metrics, 'sqs_redlock_handler_seconds_bucket', { le: 0.25 })).toBe(1);
    expect(await value(metrics, 'sqs_redlock_handler_seconds_bucket', { le: 2.5 })).toBe(2);
  });

  it('observes how long locking each batch took, from batch_locked, and stops on detach', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    const detach = metrics.attach(worker);
    worker.emit('batch_locked', { messages: 10, locked: 9, durationMs: 20 });
    worker.emit('batch_locked', { messages: 10, locked: 10, durationMs: 15 });
    expect(await value(metrics, 'sqs_redlock_lock_acquire_seconds_count')).toBe(2);
    expect(await value(metrics, 'sqs_redlock_lock_acquire_seconds_sum')).toBeCloseTo(0.035);
    detach();
    worker.emit('batch_locked', { messages: 1, locked: 1, durationMs: 5 });
    expect(await value(metrics, 'sqs_redlock_lock_acquire_seconds_count')).toBe(2);
  });

  it('reads the gauges from the Redlock and the worker on scrape', async () => {
    const metrics = createMetrics({ quorumCacheMs: 0 });
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    metrics.attach(worker, asRedlock(redlock));
    redlock.heldLocks = [{}, {}, {}];
    expect(await value(metrics, 'sqs_redlock_locks_held')).toBe(3);
    expect(await value(metrics, 'sqs_redlock_redis_nodes_up')).toBe(3);
    expect(await value(metrics, 'sqs_redlock_redis_quorum')).toBe(2);
    expect(await value(metrics, 'sqs_redlock_polling_paused')).toBe(0);

    redlock.heldLocks = [];
    redlock.status = { available: false, up: ['c:3'], down: ['a:1', 'b:2'] };
    worker.state = 'paused';
    expect(await value(metrics, 'sqs_redlock_locks_held')).toBe(0);
    expect(await value(metrics, 'sqs_redlock_redis_nodes_up')).toBe(1);
    expect(await value(metrics, 'sqs_redlock_redis_node_up', { node: 'a:1' })).toBe(0);
    expect(await value(metrics, 'sqs_redlock_redis_node_up', { node: 'c:3' })).toBe(1);
    expect(await value(metrics, 'sqs_redlock_polling_paused')).toBe(1);
    const text = await metrics.registry.metrics();
    expect(text).toContain('sqs_redlock_redis_nodes_up 1');
    expect(text).toContain('sqs_redlock_redis_node_up{node="b:2"} 0');
  });

  it('pings the nodes once per scrape (cached for quorumCacheMs)', async () => {
    const metrics = createMetrics();
    const redlock = new FakeRedlock();
    metrics.attach(new FakeWorker(), asRedlock(redlock));
    await metrics.registry.metrics();
    await metrics.registry.metrics();
    expect(redlock.pings).toBe(1);

    const uncached = createMetrics({ quorumCacheMs: 0 });
    const other = new FakeRedlock();
    uncached.attach(new FakeWorker(), asRedlock(other));
    await uncached.registry.metrics();
    await uncached.registry.metrics();
    expect(other.pings).toBe(2);
  });

  it('counts locks lost by reason and SQS errors by operation', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    metrics.attach(worker, asRedlock(redlock));
    const lost = (reason: 'expired' | 'not_owner', fencingToken: number) => ({
      key: 'k',
      fencingToken,
      error: new LockLostError('k', fencingToken, reason, 'test'),
    });
    redlock.emit('lock_lost', lost('expired', 1));
    redlock.emit('lock_lost', lost('expired', 2));
    redlock.emit('lock_lost', lost('not_owner', 3));
    // An expiry counts once its message settled otherwise than processed.
    worker.emit('lock_lost', { ...event, lockKey: 'k', fencingToken: 1, error: lost('expired', 1).error });
    worker.emit('handler_error', {
      ...event,
      lockKey: 'k',
      fencingToken: 2,
      error: new Error('boom'),
      receiveCount: 1,
      retryInSec: 2,
    });
    worker.emit('sqs_error', { operation: 'receive', error: new Error('x') });
    expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'expired' })).toBe(2);
    expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'not_owner' })).toBe(1);
    expect(await value(metrics, 'sqs_redlock_sqs_errors_total', { operation: 'receive' })).toBe(1);
  });

  it('does not count as lost an expired lock whose late success was taken back and completed', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    metrics.attach(worker, asRedlock(redlock));
    const expired = (fencingToken: number) => ({
      key: 'k',
      fencingToken,
      error: new LockLostError('k', fencingToken, 'expired', 'validity ended'),
    });
    // Validity ran out while the handler ran; no one claimed the key: completed, processed.
    redlock.emit('lock_lost', expired(7));
    worker.emit('message_processed', {
      ...event,
      lockKey: 'k',
      fencingToken: 7,
      durationMs: 10,
      marked: true,
    });
    expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'expired' })).toBeUndefined();
    // A late success that someone claimed meanwhile is a loss, counted once for both reports.
    redlock.emit('lock_lost', expired(8));
    worker.emit('lock_lost', { ...event, lockKey: 'k', fencingToken: 8, error: expired(8).error });
    redlock.emit('lock_lost', expired(8));
    // A message released (FIFO order, shutdown) under an expired lock: lost too.
    redlock.emit('lock_lost', expired(9));
    worker.emit('message_released', { ...event, lockKey: 'k', reason: 'shutdown' });
    // A loss only the worker saw (the lock ran out before its handler started) counts as well.
    worker.emit('lock_lost', { ...event, lockKey: 'k', fencingToken: 10, error: expired(10).error });
    expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'expired' })).toBe(3);
  });

  it('counts an expired lock no message settles under after the wait', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const metrics = createMetrics();
      const worker = new FakeWorker();
      const redlock = new FakeRedlock();
      metrics.attach(worker, asRedlock(redlock));
      redlock.emit('lock_lost', {
        key: 'own',
        fencingToken: 1,
        error: new LockLostError('own', 1, 'expired', 'x'),
      });
      expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'expired' })).toBeUndefined();
      vi.advanceTimersByTime(EXPIRED_LOSS_WAIT_MS);
      expect(await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'expired' })).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('detaches: no more counting, no gauges; one worker per Metrics', async () => {
    const metrics = createMetrics();
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    redlock.heldLocks = [{}];
    const detach = metrics.attach(worker, asRedlock(redlock));
    expect(() => metrics.attach(new FakeWorker())).toThrow(/already attached/);
    detach();
    detach(); // idempotent
    expect(worker.listenerCount('message_processed')).toBe(0);
    expect(redlock.listenerCount('lock_lost')).toBe(0);
    worker.emit('duplicate_skipped', event);
    expect(await value(metrics, 'sqs_redlock_messages_total', { outcome: 'duplicate' })).toBe(0);
    expect(await value(metrics, 'sqs_redlock_locks_held')).not.toBe(1);
    // Attachable again once detached.
    metrics.attach(worker);
    worker.emit('duplicate_skipped', event);
    expect(await value(metrics, 'sqs_redlock_messages_total', { outcome: 'duplicate' })).toBe(1);
  });

  it('keeps each worker in its own registry; default process metrics on request', async () => {
    const a = createMetrics();
    const b = createMetrics({ defaultMetrics: true });
    const wa = new FakeWorker();
    a.attach(wa);
    b.attach(new FakeWorker());
    wa.emit('duplicate_skipped', event);
    expect(await value(a, 'sqs_redlock_messages_total', { outcome: 'duplicate' })).toBe(1);
    expect(await value(b, 'sqs_redlock_messages_total', { outcome: 'duplicate' })).toBe(0);
    expect(await a.registry.metrics()).not.toContain('process_cpu_user_seconds_total');
    expect(await b.registry.metrics()).toContain('process_cpu_user_seconds_total');
  });
});

/** Collects when asked: what an exporter of the OpenTelemetry SDK would be handed. */
class OnDemandReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

describe('createMetrics: the OpenTelemetry twins, fed by the same events', () => {
  /** createMetrics recording into a real MeterProvider, and a reader of one OpenTelemetry metric. */
  function withMeter() {
    const reader = new OnDemandReader();
    const provider = new MeterProvider({ readers: [reader] });
    const metrics = createMetrics({ quorumCacheMs: 0, meter: provider.getMeter('test') });
    const points = async (name: string): Promise<DataPoint<unknown>[]> => {
      const { resourceMetrics } = await reader.collect();
      return resourceMetrics.scopeMetrics
        .flatMap((s) => s.metrics)
        .filter((m) => m.descriptor.name === name)
        .flatMap((m) => m.dataPoints as DataPoint<unknown>[]);
    };
    /** The value (counter, gauge) or count (histogram) of the point with these attributes. */
    const otel = async (
      name: string,
      attributes: Record<string, string> = {},
    ): Promise<number | undefined> => {
      const point = (await points(name)).find((p) =>
        Object.entries(attributes).every(([k, v]) => p.attributes[k] === v),
      );
      const v = point?.value as number | { count: number } | undefined;
      return typeof v === 'object' ? v.count : v;
    };
    return { metrics, otel, provider };
  }

  it('counts what Prometheus counts: outcomes, handler and lock times, losses, dead letters, SQS errors', async () => {
    const { metrics, otel } = withMeter();
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    metrics.attach(worker, asRedlock(redlock));
    worker.emit('message_processed', { ...event, fencingToken: 1, durationMs: 250, marked: true });
    worker.emit('message_processed', { ...event, fencingToken: 2, durationMs: 50, marked: true });
    worker.emit('poison_message', { messageId: 'm2', reason: 'null', deadLettered: true });
    worker.emit('poison_message', { messageId: 'm3', reason: 'null', deadLettered: false });
    worker.emit('batch_locked', { messages: 10, locked: 9, durationMs: 20 });
    worker.emit('sqs_error', { operation: 'delete', error: new Error('x') });
    redlock.emit('lock_lost', {
      key: 'k',
      fencingToken: 9,
      error: new LockLostError('k', 9, 'not_owner', 'a majority says not owner'),
    });

    for (const outcome of ['processed', 'poison']) {
      expect(await otel(OTEL_METRICS.messages, { 'sqs_redlock.outcome': outcome })).toBe(
        await value(metrics, 'sqs_redlock_messages_total', { outcome }),
      );
    }
    expect(await otel(OTEL_METRICS.messages, { 'sqs_redlock.outcome': 'processed' })).toBe(2);
    expect(await otel(OTEL_METRICS.handlerDuration)).toBe(2);
    expect(await otel(OTEL_METRICS.lockAcquireDuration)).toBe(1);
    expect(await value(metrics, 'sqs_redlock_dead_lettered_total')).toBe(1);
    expect(await otel(OTEL_METRICS.deadLettered)).toBe(1);
    expect(await otel(OTEL_METRICS.sqsErrors, { 'sqs_redlock.sqs.operation': 'delete' })).toBe(1);
    expect(await otel(OTEL_METRICS.locksLost, { 'sqs_redlock.lock.lost_reason': 'not_owner' })).toBe(
      await value(metrics, 'sqs_redlock_locks_lost_total', { reason: 'not_owner' }),
    );
    expect(await otel(OTEL_METRICS.locksLost, { 'sqs_redlock.lock.lost_reason': 'not_owner' })).toBe(1);
  });

  it('observes the gauges from the same readings, one PING round per collection, none once detached', async () => {
    const { metrics, otel } = withMeter();
    const worker = new FakeWorker();
    const redlock = new FakeRedlock();
    redlock.heldLocks = [{}, {}];
    redlock.status = { available: true, up: ['a:1', 'b:2'], down: ['c:3'] };
    const detach = metrics.attach(worker, asRedlock(redlock));
    worker.state = 'paused';
    expect(await otel(OTEL_METRICS.locksHeld)).toBe(2);
    expect(await otel(OTEL_METRICS.redisQuorum)).toBe(2);
    expect(await otel(OTEL_METRICS.pollingPaused)).toBe(1);
    expect(await otel(OTEL_METRICS.redisNodesUp)).toBe(2);
    expect(await otel(OTEL_METRICS.redisNodeUp, { 'sqs_redlock.redis.node': 'c:3' })).toBe(0);
    expect(await otel(OTEL_METRICS.redisNodeUp, { 'sqs_redlock.redis.node': 'a:1' })).toBe(1);
    const pings = redlock.pings;
    await otel(OTEL_METRICS.locksHeld);
    expect(redlock.pings).toBe(pings + 1);
    detach();
    await otel(OTEL_METRICS.locksHeld);
    expect(redlock.pings).toBe(pings + 1);
    worker.emit('duplicate_skipped', event);
    expect(await otel(OTEL_METRICS.messages, { 'sqs_redlock.outcome': 'duplicate' })).toBeUndefined();
  });
});

describe('startMetricsServer', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  async function start(worker = new FakeWorker(), redlock = new FakeRedlock()) {
    const metrics = createMetrics({ quorumCacheMs: 0 });
    metrics.attach(worker, asRedlock(redlock));
    const server = await startMetricsServer({
      port: 0,
      host: '127.0.0.1',
      registry: metrics.registry,
      worker,
      redlock,
      quorumCacheMs: 0, // each request sees the status the test just set
    });
    servers.push(server);
    const url = (p: string) => `http://127.0.0.1:${server.port}${p}`;
    return { server, worker, redlock, metrics, url };
  }

  it('serves /metrics in the Prometheus format', async () => {
    const { url, worker, metrics } = await start();
    worker.emit('message_processed', { ...event, fencingToken: 1, durationMs: 10, marked: true });
    const res = await fetch(url('/metrics'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(metrics.registry.contentType);
    const body = await res.text();
    expect(body).toContain('# TYPE sqs_redlock_messages_total counter');
    expect(body).toContain('sqs_redlock_messages_total{outcome="processed"} 1');
    expect(body).toContain('sqs_redlock_handler_seconds_count 1');
    expect(body).toContain('sqs_redlock_redis_nodes_up 3');
  });

  it('answers /healthz with 200 ok, even when not ready', async () => {
    const { url, worker } = await start();
    worker.state = 'stopping';
    const res = await fetch(url('/healthz'));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
  });

  it('answers /readyz 200 only while polling with a Redis quorum', async () => {
    const { url, worker, redlock } = await start();
    const ready = await fetch(url('/readyz'));
    expect(ready.status).toBe(200);
    expect(ready.headers.get('content-type')).toContain('application/json');
    expect(await ready.json()).toEqual({
      ready: true,
      state: 'running',
      redis: { up: ['a:1', 'b:2', 'c:3'], down: [] },
    });

    redlock.status = { available: false, up: ['a:1'], down: ['b:2', 'c:3'] };
    const noQuorum = await fetch(url('/readyz'));
    expect(noQuorum.status).toBe(503);
    expect(await noQuorum.json()).toEqual({
      ready: false,
      reason: 'no Redis quorum',
      state: 'running',
      redis: { up: ['a:1'], down: ['b:2', 'c:3'] },
    });

    redlock.status = { available: true, up: ['a:1', 'b:2', 'c:3'], down: [] };
    for (const [state, reason] of [
      ['paused', 'polling paused: no Redis quorum'],
      ['idle', 'worker is idle'],
      ['stopping', 'worker is stopping'],
      ['stopped', 'worker is stopped'],
    ] as const) {
      worker.state = state;
      const res = await fetch(url('/readyz'));
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ ready: false, reason, state });
    }
  });

  it('is not ready when the quorum check throws', async () => {
    const readiness = await checkReadiness(
      { state: 'running' },
      { quorumStatus: () => Promise.reject(new Error('boom')) },
    );
    expect(readiness).toEqual({ ready: false, reason: 'quorum check failed: boom', state: 'running' });
  });

  it('answers 404 to other paths, 405 to other methods, and HEAD without a body', async () => {
    const { url } = await start();
    expect((await fetch(url('/nope'))).status).toBe(404);
    const post = await fetch(url('/metrics'), { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(url('/healthz?probe=1'), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('closes promptly with a keep-alive connection open', async () => {
    const { server } = await start();
    // A scraper's idle keep-alive socket (and one mid-request would be cut after a second).
    await new Promise<void>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: server.port, path: '/healthz', agent: new Agent({ keepAlive: true }) },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end();
    });
    const started = performance.now();
    await server.close();
    expect(performance.now() - started).toBeLessThan(1_500);
    await server.close(); // idempotent
    servers.length = 0;
  });

  it('rejects when the port is taken', async () => {
    const { server } = await start();
    const metrics = createMetrics();
    await expect(
      startMetricsServer({
        port: server.port,
        host: '127.0.0.1',
        registry: metrics.registry,
        worker: new FakeWorker(),
        redlock: new FakeRedlock(),
      }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });
});
