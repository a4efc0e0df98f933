/**
 * `sqs-redlock-worker check` as a real OS process (`node src/cli.ts check ...`), against fauxqs in
 * this process and real redis-server nodes: a healthy setup passes, and each fault an operator can
 * meet (a node down, the quorum lost, no RedrivePolicy, no AOF, CONFIG denied, a paused node, a
 * black-holed SQS endpoint) is named in its row, within the call deadline.
 */
import { describe, expect, it } from 'vitest';
import type { Finding } from '../../src/cli/check.ts';
import { cliEnv, inheritedEnv } from '../helpers/cli.ts';
import { NodeProcess, useProcesses } from '../helpers/processes.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { sendMessages, useSqs } from '../helpers/sqs.ts';
import { startBlackHole } from '../helpers/sqs-faults.ts';

const CLI = 'src/cli.ts';

type Report = { ok: boolean; findings: Finding[] };

describe('sqs-redlock-worker check', () => {
  const redis = useRedisNodes(3, { appendonly: true });
  const env = useSqs();
  const spawned = useProcesses<NodeProcess>();

  function check(extraArgs: string[], vars: Record<string, string>): NodeProcess {
    const p = new NodeProcess(
      'check',
      [CLI, 'check', ...extraArgs],
      { ...inheritedEnv(), ...vars },
      {
        waitForMs: 15_000,
      },
    );
    spawned.push(p);
    return p;
  }

  /** Runs `check --json`; its exit code and the findings it printed. */
  async function checkJson(
    vars: Record<string, string>,
    extraArgs: string[] = [],
  ): Promise<{ code: number | null; report: Report; p: NodeProcess }> {
    const p = check(['--json', ...extraArgs], vars);
    const { code } = await p.exit(20_000);
    const report = p.lines.find((l) => Array.isArray(l.findings)) as Report | undefined;
    if (!report) throw new Error(`no JSON report\n${p.describe()}`);
    return { code, report, p };
  }

  const row = (report: Report, check: string): Finding | undefined =>
    report.findings.find((f) => f.check === check);
  const label = (i: number): string => `127.0.0.1:${redis.nodes[i]?.port}`;

  function healthyQueue(name: string): { vars: Record<string, string>; queueName: string } {
    const { queueUrl, queueName } = env.createQueue(name, { maxReceiveCount: 5 });
    return { vars: cliEnv(redis, env, queueUrl), queueName };
  }

  it('passes on a healthy setup: every finding ok, exit 0, and the waiting message left in place', async () => {
    const { vars, queueName } = healthyQueue('check-healthy');
    await sendMessages(env.sqs, vars.SQS_QUEUE_URL as string, [{ body: '{"id":"waiting"}' }]);

    const { code, report } = await checkJson(vars, ['test/fixtures/cli-handler.ts']);

    expect(report.findings.filter((f) => f.status !== 'ok')).toEqual([]);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    const checks = report.findings.map((f) => f.check);
    for (const name of [
      'configuration',
      'handler module',
      'AWS region',
      'SQS queue',
      'SQS receive',
      'SQS change visibility',
      'SQS delete',
      'RedrivePolicy',
      'dead-letter queue',
      'clock skew',
      'Redis quorum',
    ]) {
      expect(checks).toContain(name);
    }
    for (let i = 0; i < 3; i++) {
      expect(row(report, `redis ${label(i)}`)?.detail).toMatch(/^PONG in [\d.]+ ms, Redis \d+\.\d+/);
      expect(row(report, `redis ${label(i)} persistence`)?.detail).toBe('appendonly yes, appendfsync always');
    }
    expect(row(report, 'SQS receive')?.detail).toContain('one message received with VisibilityTimeout 0');
    expect(row(report, 'Redis quorum')?.detail).toBe('3 of 3 nodes accept writes, quorum 2');
    expect(row(report, 'dead-letter queue')?.detail).toContain('SendMessage permission not checked');
    // Consumed nothing, hid nothing: the message is still there, receivable at once.
    expect(env.counts(queueName)).toMatchObject({ ready: 1, inflight: 0 });
  });

  it('prints a table of findings and a verdict', async () => {
    const { vars } = healthyQueue('check-table');
    const p = check([], vars);
    expect(await p.exit(20_000)).toEqual({ code: 0, signal: null });
    const lines = p.stdout.split('\n');
    expect(lines[0]).toMatch(/^STATUS\s+CHECK\s+DETAIL$/);
    expect(lines.find((l) => /^ok\s+Redis quorum\s+3 of 3 nodes accept writes/.test(l))).toBeDefined();
    expect(p.stdout).toMatch(/sqs-redlock-worker check: the worker can run \(\d+ ok, 0 warn, 0 fail\)\./);
  });

  it('fails without a RedrivePolicy, naming it', async () => {
    const { queueUrl } = env.createQueue('check-no-redrive');
    const { code, report } = await checkJson(cliEnv(redis, env, queueUrl));
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    expect(row(report, 'RedrivePolicy')).toMatchObject({
      status: 'fail',
      detail: expect.stringMatching(/^none: /),
    });
    expect(row(report, 'dead-letter queue')).toBeUndefined();
    expect(report.findings.filter((f) => f.status === 'fail').map((f) => f.check)).toEqual(['RedrivePolicy']);
  });

  it('fails on a dead-letter queue that does not exist', async () => {
    const { vars } = healthyQueue('check-dlq-gone');
    const { code, report } = await checkJson({
      ...vars,
      DLQ_URL: `${env.endpoint}/000000000000/no-such-dlq`,
    });
    expect(code).toBe(1);
    expect(row(report, 'dead-letter queue')).toMatchObject({
      status: 'fail',
      detail: expect.stringContaining('no-such-dlq'),
    });
  });

  it('warns on appendonly no and on appendfsync everysec, still exit 0', async () => {
    const [a, b] = redis.clients();
    try {
      await a?.config('SET', 'appendonly', 'no');
      await b?.config('SET', 'appendfsync', 'everysec');
      const { vars } = healthyQueue('check-aof');
      const { code, report } = await checkJson(vars);
      expect(code).toBe(0);
      expect(row(report, `redis ${label(0)} persistence`)).toMatchObject({
        status: 'warn',
        detail: expect.stringMatching(/^appendonly no: .*fencing weakens/),
      });
      expect(row(report, `redis ${label(1)} persistence`)).toMatchObject({
        status: 'warn',
        detail: expect.stringMatching(/^appendonly yes, appendfsync everysec: /),
      });
      expect(row(report, `redis ${label(2)} persistence`)?.status).toBe('ok');
    } finally {
      await a?.config('SET', 'appendonly', 'yes');
      await b?.config('SET', 'appendfsync', 'always');
    }
  });

  it("reports persistence 'unknown' (warn) where an ACL denies CONFIG", async () => {
    const [a] = redis.clients();
    try {
      await a?.call('ACL', 'SETUSER', 'checker', 'on', '>checker-pw', '~*', '&*', '+@all', '-config');
      const { vars } = healthyQueue('check-acl');
      const urls = redis.nodes.map((n, i) => (i === 0 ? `redis://checker:checker-pw@${label(0)}` : n.url));
      const { code, report } = await checkJson({ ...vars, REDIS_URLS: urls.join(',') });
      expect(code).toBe(0);
      expect(row(report, `redis ${label(0)} persistence`)).toMatchObject({
        status: 'warn',
        detail: expect.stringMatching(/^unknown: CONFIG GET refused \(NOPERM/),
      });
      expect(row(report, `redis ${label(0)}`)?.status).toBe('ok');
      expect(JSON.stringify(report)).not.toContain('checker-pw');
    } finally {
      await a?.call('ACL', 'DELUSER', 'checker');
    }
  });

  it('fails with a node down, naming it, while the quorum still answers', async () => {
    const { vars } = healthyQueue('check-node-down');
    await redis.nodes[2]?.kill();
    try {
      const { code, report } = await checkJson(vars);
      expect(code).toBe(1);
      expect(row(report, `redis ${label(2)}`)).toMatchObject({
        status: 'fail',
        detail: expect.stringMatching(/^no answer: /),
      });
      expect(row(report, `redis ${label(2)} persistence`)).toBeUndefined();
      expect(row(report, 'Redis quorum')).toMatchObject({
        status: 'ok',
        detail: expect.stringMatching(new RegExp(`^2 of 3 nodes accept writes, quorum 2; down: ${label(2)}`)),
      });
      expect(report.findings.filter((f) => f.status === 'fail').map((f) => f.check)).toEqual([
        `redis ${label(2)}`,
      ]);
    } finally {
      await redis.nodes[2]?.restart();
    }
  });

  it('fails when the quorum is lost', async () => {
    const { vars } = healthyQueue('check-quorum-lost');
    await Promise.all([redis.nodes[1]?.kill(), redis.nodes[2]?.kill()]);
    try {
      const { code, report } = await checkJson(vars);
      expect(code).toBe(1);
      expect(row(report, 'Redis quorum')).toMatchObject({
        status: 'fail',
        detail: expect.stringMatching(/^1 of 3 nodes accept writes, quorum 2: no lock can be granted/),
      });
    } finally {
      await Promise.all([redis.nodes[1]?.restart(), redis.nodes[2]?.restart()]);
    }
  });

  it('a paused node (accepts the connection, never answers) is named within --timeout', async () => {
    const { vars } = healthyQueue('check-paused');
    redis.nodes[0]?.pause();
    try {
      const started = performance.now();
      const { code, report } = await checkJson(vars, ['--timeout', '800']);
      // The node's calls, and the quorum probe after them, are each bounded by the deadline.
      expect(performance.now() - started).toBeLessThan(8_000);
      expect(code).toBe(1);
      expect(row(report, `redis ${label(0)}`)).toMatchObject({
        status: 'fail',
        detail: expect.stringContaining('no answer within 800 ms'),
      });
      expect(row(report, 'Redis quorum')?.status).toBe('ok');
    } finally {
      redis.nodes[0]?.resume();
    }
  });

  it('a black-holed SQS endpoint fails the queue check within --timeout', async () => {
    const blackHole = await startBlackHole();
    try {
      const { vars } = healthyQueue('check-sqs-hung');
      const started = performance.now();
      const { code, report } = await checkJson(
        { ...vars, AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${blackHole.port}` },
        ['--timeout', '800'],
      );
      expect(performance.now() - started).toBeLessThan(8_000);
      expect(code).toBe(1);
      expect(row(report, 'SQS queue')).toMatchObject({
        status: 'fail',
        detail: expect.stringContaining('no answer in time'),
      });
      // The Redis side is still checked.
      expect(row(report, 'Redis quorum')?.status).toBe('ok');
    } finally {
      await blackHole.close();
    }
  });

  it('an invalid variable: the configuration row names it and the value, exit 1', async () => {
    const { vars } = healthyQueue('check-bad-env');
    const { code, report } = await checkJson({ ...vars, LOCK_TTL_MS: 'soon' });
    expect(code).toBe(1);
    expect(report.findings).toEqual([
      {
        status: 'fail',
        check: 'configuration',
        detail: 'ConfigError: LOCK_TTL_MS must be an integer between 2000 and 3600000. Received: "soon"',
      },
    ]);
  });

  it('a bad flag value is a usage error (exit 2) naming the flag and the value', async () => {
    const p = check(['--timeout', 'soon'], {});
    expect(await p.exit(10_000)).toEqual({ code: 2, signal: null });
    expect(p.stderr).toContain("option '--timeout <ms>' argument 'soon' is invalid");
  });
});
