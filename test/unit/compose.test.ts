import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/** There is no Docker engine here: the compose file is checked statically against the rest of the repo. */
describe('docker-compose.yml', () => {
  const compose = parse(readFileSync('docker-compose.yml', 'utf8')) as {
    services: Record<
      string,
      {
        image?: string;
        command?: string[];
        environment?: Record<string, string>;
        volumes?: string[];
        deploy?: { replicas?: number };
        build?: { context?: string; dockerfile?: string };
      }
    >;
  };
  const { services } = compose;
  const worker = services.worker;
  const env = worker?.environment ?? {};
  const initScript = readFileSync('localstack/init/ready.d/create-queues.sh', 'utf8');

  it('pins LocalStack to a release that runs without an auth token, and mounts the init script', () => {
    expect(services.localstack?.image).toBe('localstack/localstack:4.14.0');
    expect(services.localstack?.volumes).toContain(
      './localstack/init/ready.d:/etc/localstack/init/ready.d:ro',
    );
    expect(existsSync('localstack/init/ready.d/create-queues.sh')).toBe(true);
  });

  it('mounts only paths that exist in the repository', () => {
    const mounts = Object.values(services).flatMap((service) => service.volumes ?? []);
    expect(mounts.length).toBeGreaterThan(0);
    for (const mount of mounts) {
      const host = mount.split(':')[0] ?? '';
      if (host.startsWith('.')) expect(existsSync(host), mount).toBe(true);
    }
  });

  it('runs three independent Redis nodes with AOF and fsync always, all in REDIS_URLS', () => {
    const nodes = ['redis-a', 'redis-b', 'redis-c'];
    for (const name of nodes) {
      const command = services[name]?.command?.join(' ');
      expect(command, name).toContain('--appendonly yes');
      expect(command, name).toContain('--appendfsync always');
    }
    expect(env.REDIS_URLS?.split(',')).toEqual(nodes.map((n) => `redis://${n}:6379`));
  });

  it('points the worker at the queues the init script creates, through LocalStack', () => {
    const queue = env.SQS_QUEUE_URL?.split('/').pop();
    const dlq = env.DLQ_URL?.split('/').pop();
    expect(initScript).toContain(`--queue-name ${queue}`);
    expect(initScript).toContain(`--queue-name ${dlq}`);
    expect(initScript).toMatch(/RedrivePolicy/);
    expect(env.AWS_ENDPOINT_URL_SQS).toBe('http://localstack:4566');
    expect(env.SQS_QUEUE_URL?.startsWith('http://localstack:4566/')).toBe(true);
  });

  it('runs the example worker with two replicas, every variable the CLI reads, and a handler that exists', () => {
    expect(worker?.deploy?.replicas).toBe(2);
    for (const name of [
      'SQS_QUEUE_URL',
      'REDIS_URLS',
      'AWS_REGION',
      'AWS_ENDPOINT_URL_SQS',
      'LOCK_TTL_MS',
      'BATCH_SIZE',
      'CONCURRENCY',
      'SHUTDOWN_TIMEOUT_MS',
      'DLQ_URL',
      'LOG_LEVEL',
      'METRICS_PORT',
    ]) {
      expect(env, name).toHaveProperty(name);
    }
    // The Dockerfile's paths are relative to the repository root (test/unit/dockerfile.test.ts checks it).
    expect(worker?.build?.context).toBe('.');
    const dockerfile = worker?.build?.dockerfile ?? '';
    expect(existsSync(dockerfile)).toBe(true);
    expect(existsSync(`${dockerfile}.dockerignore`)).toBe(true);
    // The image runs the handler compiled into dist/: its TypeScript source must exist.
    const handler = /"run", "([^"]+)"/.exec(readFileSync(dockerfile, 'utf8'))?.[1] ?? '';
    expect(handler).toMatch(/^dist\/.+\.js$/);
    const source = handler.replace(/^dist\//, '').replace(/\.js$/, '.ts');
    expect(existsSync(source), source).toBe(true);
    expect(env.STORE_URL).toBe('redis://store:6379');
    expect(services.store).toBeDefined();
  });
});
