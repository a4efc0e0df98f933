/**
 * The CLI's process lifecycle as an operator meets it: signals during a startup that hangs (an SQS
 * endpoint or Redis nodes that accept connections and never answer), a shutdown bounded as a whole,
 * an uncaught error during the shutdown, and METRICS_HOST. The CLI runs as a child process
 * (`node src/cli.ts run test/fixtures/cli-lifecycle-handler.ts`) against fauxqs and redis-server.
 */
import { describe, expect, it } from 'vitest';
import { SHUTDOWN_SLACK_MS } from '../../src/cli/env.ts';
import { cliEnv, inheritedEnv } from '../helpers/cli.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { useSqs } from '../helpers/sqs.ts';
import { startBlackHole } from '../helpers/sqs-faults.ts';

const CLI = 'src/cli.ts';
const HANDLER = 'test/fixtures/cli-lifecycle-handler.ts';

type Line = { level?: string; message?: string } & Record<string, unknown>;

const byMessage =
  (message: string) =>
  (line: Line): boolean =>
    line.message === message;

describe('sqs-redlock-worker CLI lifecycle', () => {
  const redis = useRedisNodes(3);
  const env = useSqs();
  const spawned = useProcesses<NodeProcess<Line>>();

  function cli(extra: Record<string, string>): NodeProcess<Line> {
    const p = new NodeProcess<Line>(
      'CLI',
      [CLI, 'run', HANDLER],
      { ...inheritedEnv({ also: ['CLOSE_BEHAVIOUR'] }), ...extra },
      {
        waitForMs: 15_000,
      },
    );
    spawned.push(p);
    return p;
  }

  function baseEnv(queueUrl: string): Record<string, string> {
    return {
      ...cliEnv(redis, env, queueUrl),
      SHUTDOWN_TIMEOUT_MS: '5000',
      METRICS_PORT: '0',
      LOG_LEVEL: 'info',
    };
  }

  /** Sends `signal`, and resolves the exit with how long it took. */
  async function signalAndTime(p: NodeProcess<Line>, signal: NodeJS.Signals, timeoutMs: number) {
    const sentAt = performance.now();
    p.child.kill(signal);
    const exit = await p.exit(timeoutMs);
    return { exit, tookMs: performance.now() - sentAt };
  }

  it('SIGTERM while the startup GetQueueAttributes hangs (a black-holed SQS endpoint): exits 0 within 3 s', async () => {
    const blackHole = await startBlackHole();
    try {
      const { queueUrl } = env.createQueue('life-hung-sqs');
      // No DLQ_URL: the worker's start looks the RedrivePolicy up, and that call never answers.
      const p = cli({ ...baseEnv(queueUrl), AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${blackHole.port}` });
      await p.waitFor(byMessage('metrics server listening'));
      await new Promise((resolve) => setTimeout(resolve, 500)); // the quorum check is done, the lookup open
      expect(p.lines.find(byMessage('worker started'))).toBeUndefined();

      const { exit, tookMs } = await signalAndTime(p, 'SIGTERM', 15_000);
      expect(exit).toEqual({ code: 0, signal: null });
      // A second or two (at worst the bin's 2 s safety exit, should a socket of the hung call linger).
      expect(tookMs).toBeLessThan(3_000);
      expect(p.lines.find(byMessage('SIGTERM received: shutting down'))).toBeDefined();
      expect(p.lines.find(byMessage('worker started'))).toBeUndefined();
    } finally {
      await blackHole.close();
    }
  });

  it('SIGINT while no Redis node answers (three black-holed nodes): exits 0 within 3 s', async () => {
    const holes = await Promise.all([startBlackHole(), startBlackHole(), startBlackHole()]);
    try {
      const { queueUrl } = env.createQueue('life-hung-redis');
      const p = cli({
        ...baseEnv(queueUrl),
        REDIS_URLS: holes.map((h) => `redis://127.0.0.1:${h.port}`).join(','),
      });
      await p.waitFor(byMessage('metrics server listening'));
      await new Promise((resolve) => setTimeout(resolve, 300)); // the quorum check waits for the nodes

      const { exit, tookMs } = await signalAndTime(p, 'SIGINT', 15_000);
      expect(exit).toEqual({ code: 0, signal: null });
      // A second or two (at worst the bin's 2 s safety exit, should a socket of the hung call linger).
      expect(tookMs).toBeLessThan(3_000);
      expect(p.lines.find(byMessage('worker started'))).toBeUndefined();
    } finally {
      await Promise.all(holes.map((h) => h.close()));
    }
  });

  it(`a handler close() that never settles gets ${SHUTDOWN_SLACK_MS} ms after stop() ended, then exit 1; the whole within SHUTDOWN_TIMEOUT_MS + ${SHUTDOWN_SLACK_MS} ms`, async () => {
    const { queueUrl } = env.createQueue('life-hung-close');
    const p = cli({ ...baseEnv(queueUrl), SHUTDOWN_TIMEOUT_MS: '1000', CLOSE_BEHAVIOUR: 'hang' });
    await p.waitFor(byMessage('worker started'));

    const { exit, tookMs } = await signalAndTime(p, 'SIGTERM', 20_000);
    expect(exit).toEqual({ code: 1, signal: null });
    // An idle worker stops at once; close() then gets the slack. A margin for a loaded machine; well
    // below what a platform's SIGKILL allows.
    expect(tookMs).toBeGreaterThanOrEqual(SHUTDOWN_SLACK_MS - 100);
    expect(tookMs).toBeLessThan(1_000 + SHUTDOWN_SLACK_MS + 1_500);
    expect(p.lines.find(byMessage('shutdown did not finish in time'))).toMatchObject({
      level: 'error',
      timeoutMs: SHUTDOWN_SLACK_MS,
    });
  });

  it('a second signal during the shutdown exits at once, with 128 + its number', async () => {
    const { queueUrl } = env.createQueue('life-second-signal');
    // close() hangs: the first SIGTERM's shutdown would take the whole slack.
    const p = cli({ ...baseEnv(queueUrl), CLOSE_BEHAVIOUR: 'hang' });
    await p.waitFor(byMessage('worker started'));
    p.child.kill('SIGTERM');
    await p.waitFor(byMessage('SIGTERM received: shutting down'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { exit, tookMs } = await signalAndTime(p, 'SIGINT', 5_000);
    expect(exit).toEqual({ code: 130, signal: null });
    expect(tookMs).toBeLessThan(1_000);
    expect(p.lines.find(byMessage('second SIGINT: exiting without finishing the shutdown'))).toBeTruthy();
  });

  it('an uncaught error during the shutdown: logged, the shutdown goes on, exit 1', async () => {
    const { queueUrl } = env.createQueue('life-uncaught-close');
    const p = cli({ ...baseEnv(queueUrl), CLOSE_BEHAVIOUR: 'uncaught' });
    await p.waitFor(byMessage('worker started'));

    const { exit } = await signalAndTime(p, 'SIGTERM', 10_000);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(p.lines.find(byMessage('uncaught error during shutdown'))).toMatchObject({
      level: 'error',
      err: { message: 'cli-lifecycle-handler: uncaught error in close()' },
    });
    expect(p.lines.find(byMessage('stopped'))).toMatchObject({ reason: 'SIGTERM', clean: false });
  });

  it('METRICS_HOST binds the health and metrics server to that address only', async () => {
    const { queueUrl } = env.createQueue('life-metrics-host');
    const p = cli({ ...baseEnv(queueUrl), METRICS_HOST: '127.0.0.1' });
    const listening = await p.waitFor(byMessage('metrics server listening'));
    expect(listening).toMatchObject({ host: '127.0.0.1' });
    expect(await (await fetch(`http://127.0.0.1:${listening.port}/healthz`)).text()).toBe('ok\n');
    await p.waitFor(byMessage('worker started'));
    expect((await signalAndTime(p, 'SIGTERM', 10_000)).exit).toEqual({ code: 0, signal: null });
  });

  it('METRICS_HOST that is no address: exit 1, the variable named', async () => {
    const { queueUrl } = env.createQueue('life-metrics-host-bad');
    const p = cli({ ...baseEnv(queueUrl), METRICS_HOST: 'not a host!' });
    expect(await p.exit(10_000)).toEqual({ code: 1, signal: null });
    expect(p.stderr).toContain('METRICS_HOST must be an IP address or a host name');
  });
});
