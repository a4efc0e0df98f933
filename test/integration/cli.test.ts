/**
 * The `sqs-redlock-worker` command as a real OS process, run from source
 * (`node src/cli.ts run test/fixtures/cli-handler.ts`), against fauxqs running in this process and
 * real redis-server quorum nodes; the fixture handler records its effects in a Ledger.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI_VARIABLES } from '../../src/cli/env.ts';
import { cliEnv, inheritedEnv } from '../helpers/cli.ts';
import { jobs } from '../helpers/handlers.ts';
import { Ledger } from '../helpers/ledger.ts';
import { eventually } from '../helpers/lock.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';

const CLI = 'src/cli.ts';
const HANDLER = 'test/fixtures/cli-handler.ts';

/** One JSON log line of the CLI's stdout. */
type Line = { level?: string; message?: string } & Record<string, unknown>;

/** The CLI as a child process (`node src/cli.ts ...args`), its log lines parsed. */
class CliProcess extends NodeProcess<Line> {
  constructor(args: string[], env: Record<string, string>) {
    super('CLI', [CLI, ...args], { ...inheritedEnv(), ...env }, { waitForMs: 15_000 });
  }
}

const byMessage =
  (message: string) =>
  (line: Line): boolean =>
    line.message === message;

/** The value of a sample in a Prometheus text exposition, e.g. `sqs_redlock_messages_total{outcome="processed"}`. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('sqs-redlock-worker CLI', () => {
  const redis = useRedisNodes(3);
  const env = useSqs();
  let ledgerClient: Redis;
  const spawned = useProcesses<CliProcess>();

  beforeAll(() => {
    // The ledger lives on the first quorum node, under its own prefix (no faults in this file).
    ledgerClient = redis.clients()[0] as Redis;
  });

  function cli(args: string[], extra: Record<string, string> = {}): CliProcess {
    const p = new CliProcess(args, extra);
    spawned.push(p);
    return p;
  }

  function workerEnv(queueUrl: string, prefix: string): Record<string, string> {
    return {
      ...cliEnv(redis, env, queueUrl),
      LOCK_TTL_MS: '3000',
      BATCH_SIZE: '10',
      CONCURRENCY: '2',
      SHUTDOWN_TIMEOUT_MS: '5000',
      METRICS_PORT: '0',
      LOG_LEVEL: 'info',
      LEDGER_URL: redis.nodes[0]?.url ?? '',
      LEDGER_PREFIX: prefix,
    };
  }

  it('--help lists every variable with its default, exit code 0', async () => {
    const p = cli(['--help']);
    expect(await p.exit(10_000)).toEqual({ code: 0, signal: null });
    for (const v of CLI_VARIABLES) {
      expect(p.stdout).toContain(v.name);
      expect(p.stdout).toContain(`Default: ${v.default}`);
    }
    expect(p.stderr).toBe('');
  });

  it('an invalid variable: non-zero exit, the variable and the value named in the logs and on stderr', async () => {
    const { queueUrl } = env.createQueue('cli-bad-env');
    const p = cli(['run', HANDLER], { ...workerEnv(queueUrl, 'cli-bad'), BATCH_SIZE: 'abc' });
    expect(await p.exit(10_000)).toEqual({ code: 1, signal: null });
    expect(p.stderr).toContain('BATCH_SIZE must be an integer between 1 and 10. Received: "abc"');
    const logged = p.lines.find(byMessage('invalid configuration'));
    expect(logged).toMatchObject({
      level: 'error',
      err: { name: 'ConfigError', option: 'BATCH_SIZE', value: 'abc' },
    });
  });

  it('no region anywhere: exit code 1, AWS_REGION named', async () => {
    const { queueUrl } = env.createQueue('cli-no-region');
    const home = await mkdtemp(path.join(os.tmpdir(), 'cli-home-'));
    try {
      const { AWS_REGION: _, ...rest } = workerEnv(queueUrl, 'cli-bad');
      // An empty HOME: no ~/.aws/config to take a region from.
      const p = cli(['run', HANDLER], { ...rest, HOME: home, AWS_CONFIG_FILE: path.join(home, 'none') });
      expect(await p.exit(10_000)).toEqual({ code: 1, signal: null });
      expect(p.stderr).toContain('AWS_REGION must be set');
      expect(p.lines.find(byMessage('fatal error: shutting down'))).toMatchObject({
        err: { name: 'ConfigError', option: 'AWS_REGION' },
      });
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it('a handler module that does not load: exit code 1, the module named', async () => {
    const { queueUrl } = env.createQueue('cli-bad-module');
    const p = cli(['run', 'test/fixtures/no-such-handler.ts'], workerEnv(queueUrl, 'cli-bad'));
    expect(await p.exit(10_000)).toEqual({ code: 1, signal: null });
    expect(p.stderr).toContain('handler module "test/fixtures/no-such-handler.ts" could not be imported');
  });

  it('runs the handler, serves metrics, health and readiness, and drains on SIGTERM with exit code 0', async () => {
    const prefix = 'cli-run';
    const { queueUrl, queueName } = env.createQueue('cli-run', { visibilityTimeoutSec: 10 });
    const ledger = new Ledger(ledgerClient, prefix);
    const p = cli(['run', HANDLER], workerEnv(queueUrl, prefix));

    const listening = await p.waitFor(byMessage('metrics server listening'));
    const port = Number(listening.port);
    expect(port).toBeGreaterThan(0);
    const url = (route: string): string => `http://127.0.0.1:${port}${route}`;
    expect(await (await fetch(url('/healthz'))).text()).toBe('ok\n');
    await p.waitFor(byMessage('worker started'));
    const ready = await fetch(url('/readyz'));
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, state: 'running', redis: { down: [] } });

    // 30 messages: every one applied exactly once, and counted.
    const sent = jobs(30, 'c', { workMs: 5 });
    const ids = sent.map((j) => j.id);
    await sendMessages(env.sqs, queueUrl, sent);
    await eventually(
      async () => env.counts(queueName).total === 0 && (await ledger.report(ids)).applied === 30,
      15_000,
    );
    const metrics = await eventually(async () => {
      const text = await (await fetch(url('/metrics'))).text();
      return sample(text, 'sqs_redlock_messages_total{outcome="processed"}') === 30 && text;
    }, 5_000);
    expect(sample(metrics, 'sqs_redlock_handler_seconds_count')).toBe(30);
    expect(sample(metrics, 'sqs_redlock_lock_acquire_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(sample(metrics, 'sqs_redlock_redis_nodes_up')).toBe(3);
    expect(sample(metrics, 'sqs_redlock_redis_quorum')).toBe(2);
    expect(sample(metrics, 'sqs_redlock_locks_held')).toBe(0);
    for (const outcome of ['duplicate', 'contended', 'poison', 'failed', 'lock_lost']) {
      expect(sample(metrics, `sqs_redlock_messages_total{outcome="${outcome}"}`)).toBe(0);
    }
    expect(metrics).toContain('process_resident_memory_bytes');
    expect(await ledger.report(ids)).toMatchObject({ applied: 30, appliedTwice: 0, concurrentRuns: 0 });

    // A slow message in flight at SIGTERM finishes, is deleted, and the process exits 0 in time.
    const [slow] = jobs(1, 'slow', { workMs: 1_500 });
    await sendMessages(env.sqs, queueUrl, [slow as { body: string }]);
    await p.waitFor((l) => l.message === 'cli-handler: started' && l.id === 'slow-0');
    const lockedMetrics = await (await fetch(url('/metrics'))).text();
    expect(sample(lockedMetrics, 'sqs_redlock_locks_held')).toBe(1);
    const terminatedAt = performance.now();
    p.child.kill('SIGTERM');
    // Stopping: no longer ready, still alive.
    await eventually(async () => (await fetch(url('/readyz'))).status === 503, 1_000);
    const notReady = await fetch(url('/readyz'));
    expect(await notReady.json()).toMatchObject({ ready: false, state: 'stopping' });
    expect((await fetch(url('/healthz'))).status).toBe(200);

    expect(await p.exit(5_000 + 3_000)).toEqual({ code: 0, signal: null });
    const tookMs = performance.now() - terminatedAt;
    expect(tookMs).toBeLessThan(5_000);
    expect(p.lines.find((l) => l.message === 'cli-handler: done' && l.id === 'slow-0')).toBeDefined();
    expect(p.lines.find(byMessage('SIGTERM received: shutting down'))).toBeDefined();
    expect(p.lines.find(byMessage('stopped'))).toMatchObject({ reason: 'SIGTERM', clean: true });
    expect(env.counts(queueName).total).toBe(0);
    expect(await ledger.report(['slow-0'])).toMatchObject({ applied: 1, lost: 0 });
    expect(p.lines.filter((l) => l.level === 'error')).toEqual([]);
    expect(p.stderr).toBe('');
    // The server is closed with the rest.
    await expect(fetch(url('/healthz'))).rejects.toThrow();
  });

  it('an uncaught error is fatal: logged through serialize-error, locks released, exit code 1', async () => {
    const prefix = 'cli-crash';
    const { queueUrl, queueName } = env.createQueue('cli-crash', { visibilityTimeoutSec: 10 });
    const ledger = new Ledger(ledgerClient, prefix);
    const p = cli(['run', HANDLER], workerEnv(queueUrl, prefix));
    await p.waitFor(byMessage('worker started'));
    await sendMessages(env.sqs, queueUrl, [
      { body: JSON.stringify({ id: 'boom', crash: true, workMs: 300 }) },
    ]);

    expect(await p.exit(10_000)).toEqual({ code: 1, signal: null });
    expect(p.stderr).toContain('fatal error: shutting down: cli-handler: uncaught crash in job boom');
    expect(p.lines.find(byMessage('fatal error: shutting down'))).toMatchObject({
      level: 'error',
      err: { name: 'Error', message: 'cli-handler: uncaught crash in job boom' },
    });
    expect(p.lines.find(byMessage('stopped'))).toMatchObject({ reason: 'fatal error', clean: false });
    // The in-flight handler was drained (not killed): its work applied and its message deleted.
    expect(await ledger.report(['boom'])).toMatchObject({ applied: 1 });
    expect(env.counts(queueName).total).toBe(0);
    // No lock left behind on any node (the completed one was released), and its marker is written.
    for (const client of redis.clients()) {
      const locks = (await client.keys('srw:*:lock')).filter((k) => !k.startsWith('srw:{probe:'));
      expect(locks).toEqual([]);
      expect((await client.keys('srw:*:done')).length).toBeGreaterThan(0);
    }
  });

  it('SIGINT stops an idle worker at once, exit code 0', async () => {
    const { queueUrl } = env.createQueue('cli-sigint');
    const p = cli(['run', HANDLER], { ...workerEnv(queueUrl, 'cli-int'), METRICS_PORT: '' });
    await p.waitFor(byMessage('worker started'));
    expect(p.lines.find(byMessage('metrics server listening'))).toBeUndefined();
    const startedAt = performance.now();
    p.child.kill('SIGINT');
    expect(await p.exit(5_000)).toEqual({ code: 0, signal: null });
    // Nothing left open: the process ends by itself, well before the bin's 2 s safety exit.
    expect(performance.now() - startedAt).toBeLessThan(1_800);
    expect(p.lines.find(byMessage('stopped'))).toMatchObject({ reason: 'SIGINT', clean: true });
  });
});
