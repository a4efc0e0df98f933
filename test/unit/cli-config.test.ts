import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_DEFAULTS, CLI_VARIABLES, parseConfig, redactUrl } from '../../src/cli/env.ts';
import { loadHandler } from '../../src/cli/handler-module.ts';
import { helpText } from '../../src/cli/help.ts';
import { main } from '../../src/cli/main.ts';
import { ConfigError } from '../../src/errors.ts';

const BASE = {
  SQS_QUEUE_URL: 'http://localhost:4566/000000000000/jobs',
  REDIS_URLS: 'redis://a:6379,redis://b:6379,redis://c:6379',
};

function configWith(extra: Record<string, string | undefined>) {
  return parseConfig({ ...BASE, ...extra });
}

/** The ConfigError parseConfig throws for `extra`: its option, and its message. */
function errorFor(extra: Record<string, string | undefined>): ConfigError {
  try {
    configWith(extra);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`no error for ${JSON.stringify(extra)}`);
}

describe('parseConfig', () => {
  it('applies the defaults to a minimal environment', () => {
    expect(parseConfig(BASE)).toEqual({
      queueUrl: BASE.SQS_QUEUE_URL,
      redisUrls: ['redis://a:6379', 'redis://b:6379', 'redis://c:6379'],
      region: undefined,
      sqsEndpoint: undefined,
      lockTtlMs: 30_000,
      batchSize: 10,
      concurrency: 1,
      visibilityTimeoutSec: 30,
      extendVisibility: true,
      completionWindowMs: 50,
      shutdownTimeoutMs: 25_000,
      deadLetterQueueUrl: undefined,
      logLevel: 'info',
      metricsPort: undefined,
    });
  });

  it('reads every variable', () => {
    expect(
      configWith({
        AWS_REGION: 'eu-west-1',
        AWS_ENDPOINT_URL_SQS: 'http://localhost:4566',
        LOCK_TTL_MS: '5000',
        BATCH_SIZE: '5',
        CONCURRENCY: '4',
        VISIBILITY_TIMEOUT_SEC: '120',
        EXTEND_VISIBILITY: 'false',
        COMPLETION_WINDOW_MS: '100',
        SHUTDOWN_TIMEOUT_MS: '20000',
        DLQ_URL: 'https://sqs.eu-west-1.amazonaws.com/1/jobs-dlq',
        LOG_LEVEL: 'debug',
        METRICS_PORT: '9464',
      }),
    ).toEqual({
      queueUrl: BASE.SQS_QUEUE_URL,
      redisUrls: ['redis://a:6379', 'redis://b:6379', 'redis://c:6379'],
      region: 'eu-west-1',
      sqsEndpoint: 'http://localhost:4566',
      lockTtlMs: 5_000,
      batchSize: 5,
      concurrency: 4,
      visibilityTimeoutSec: 120,
      extendVisibility: false,
      completionWindowMs: 100,
      shutdownTimeoutMs: 20_000,
      deadLetterQueueUrl: 'https://sqs.eu-west-1.amazonaws.com/1/jobs-dlq',
      logLevel: 'debug',
      metricsPort: 9464,
    });
  });

  it('treats blank values as unset and trims values', () => {
    const config = configWith({
      BATCH_SIZE: '  ',
      LOG_LEVEL: '',
      METRICS_PORT: ' ',
      CONCURRENCY: ' 3 ',
      VISIBILITY_TIMEOUT_SEC: ' ',
      EXTEND_VISIBILITY: '',
    });
    expect(config).toMatchObject({
      batchSize: 10,
      logLevel: 'info',
      metricsPort: undefined,
      concurrency: 3,
      visibilityTimeoutSec: 30,
      extendVisibility: true,
    });
  });

  describe('SQS_QUEUE_URL', () => {
    it('is required', () => {
      const error = errorFor({ SQS_QUEUE_URL: undefined });
      expect(error.option).toBe('SQS_QUEUE_URL');
      expect(error.message).toBe(
        'SQS_QUEUE_URL must be set to the URL of the queue to consume. Received: undefined',
      );
      expect(errorFor({ SQS_QUEUE_URL: '  ' }).message).toContain('Received: "  "');
    });

    it.each(['jobs', 'ftp://host/q', 'sqs.us-east-1.amazonaws.com/1/q'])('rejects %j', (value) => {
      const error = errorFor({ SQS_QUEUE_URL: value });
      expect(error.option).toBe('SQS_QUEUE_URL');
      expect(error.message).toBe(
        `SQS_QUEUE_URL must be an SQS queue URL (http:// or https://). Received: ${JSON.stringify(value)}`,
      );
    });
  });

  describe('REDIS_URLS', () => {
    it('is required', () => {
      const error = errorFor({ REDIS_URLS: undefined });
      expect(error.option).toBe('REDIS_URLS');
      expect(error.message).toMatch(/^REDIS_URLS must list redis:\/\/ or rediss:\/\/ URLs.*required/);
    });

    it('takes one URL per node, redis:// or rediss://, trimmed', () => {
      expect(
        configWith({ REDIS_URLS: ' redis://a:6379 , rediss://user:pw@b.example.com:6380/2,redis://c ' })
          .redisUrls,
      ).toEqual(['redis://a:6379', 'rediss://user:pw@b.example.com:6380/2', 'redis://c']);
      expect(configWith({ REDIS_URLS: 'redis://solo:6379' }).redisUrls).toEqual(['redis://solo:6379']);
    });

    it.each([
      ['http://a:6379', 'redis://b', 1],
      ['redis://a', 'localhost:6379', 2],
      ['redis://a', '', 2],
      ['redis://a', 'not a url', 2],
    ])('rejects %j,%j naming the entry', (first, second, bad) => {
      const error = errorFor({ REDIS_URLS: `${first},${second}` });
      expect(error.option).toBe('REDIS_URLS');
      expect(error.message).toContain(`entry ${bad} is not one`);
      expect(error.message).toContain(`Received: ${JSON.stringify(bad === 1 ? first : second)}`);
    });

    it('rejects the same node twice', () => {
      const error = errorFor({ REDIS_URLS: 'redis://a:6379,redis://b,redis://a' });
      expect(error.option).toBe('REDIS_URLS');
      expect(error.message).toContain('must not list the same node twice (a:6379)');
    });

    it('never shows a password in the error', () => {
      const error = errorFor({ REDIS_URLS: 'redis://:s3cret@a:6379,http://user:hunter2@b:6379' });
      expect(error.message).toContain('http://user:***@b:6379');
      expect(error.message).not.toContain('hunter2');
      const dup = errorFor({ REDIS_URLS: 'redis://:s3cret@a:6379,redis://:s3cret@a' });
      expect(dup.message).not.toContain('s3cret');
      expect(redactUrl('redis://:pw@a,rediss://u:p@b:1/0')).toBe('redis://:***@a,rediss://u:***@b:1/0');
    });
  });

  describe('AWS_REGION', () => {
    it('is read, or taken from an AWS queue URL, or left to the SDK', () => {
      expect(configWith({ AWS_REGION: 'ap-southeast-2' }).region).toBe('ap-southeast-2');
      expect(
        parseConfig({ ...BASE, SQS_QUEUE_URL: 'https://sqs.eu-central-1.amazonaws.com/123456789012/jobs' })
          .region,
      ).toBe('eu-central-1');
      expect(
        parseConfig({
          ...BASE,
          SQS_QUEUE_URL: 'https://sqs.eu-central-1.amazonaws.com/123456789012/jobs',
          AWS_REGION: 'us-east-1',
        }).region,
      ).toBe('us-east-1');
      expect(configWith({}).region).toBeUndefined();
    });

    it.each(['US East', 'us_east_1', 'us-east-1 '.repeat(2)])('rejects %j', (value) => {
      const error = errorFor({ AWS_REGION: value });
      expect(error.option).toBe('AWS_REGION');
      expect(error.message).toContain('AWS_REGION must be an AWS region name');
    });
  });

  describe('AWS_ENDPOINT_URL_SQS', () => {
    it('accepts an http(s) URL and rejects anything else', () => {
      expect(configWith({ AWS_ENDPOINT_URL_SQS: 'http://127.0.0.1:4566' }).sqsEndpoint).toBe(
        'http://127.0.0.1:4566',
      );
      const error = errorFor({ AWS_ENDPOINT_URL_SQS: 'localhost:4566' });
      expect(error.option).toBe('AWS_ENDPOINT_URL_SQS');
      expect(error.message).toBe(
        'AWS_ENDPOINT_URL_SQS must be an http:// or https:// URL. Received: "localhost:4566"',
      );
    });
  });

  describe('COMPLETION_WINDOW_MS', () => {
    it('accepts 0 to a third of LOCK_TTL_MS', () => {
      expect(configWith({ COMPLETION_WINDOW_MS: '0' }).completionWindowMs).toBe(0);
      expect(configWith({ LOCK_TTL_MS: '6000', COMPLETION_WINDOW_MS: '2000' }).completionWindowMs).toBe(
        2_000,
      );
    });

    it.each(['abc', '1.5', '-1'])('rejects %j', (value) => {
      const error = errorFor({ COMPLETION_WINDOW_MS: value });
      expect(error.option).toBe('COMPLETION_WINDOW_MS');
      expect(error.message).toBe(
        `COMPLETION_WINDOW_MS must be an integer between 0 and 1200000. Received: ${JSON.stringify(value)}`,
      );
    });

    it('rejects more than a third of LOCK_TTL_MS, naming both', () => {
      const error = errorFor({ LOCK_TTL_MS: '6000', COMPLETION_WINDOW_MS: '2001' });
      expect(error.option).toBe('COMPLETION_WINDOW_MS');
      expect(error.value).toBe('2001');
      expect(error.message).toBe(
        'COMPLETION_WINDOW_MS must be at most a third of LOCK_TTL_MS (6000). Received: "2001"',
      );
    });
  });

  describe.each([
    ['LOCK_TTL_MS', 2_000, 3_600_000, 'lockTtlMs'],
    ['BATCH_SIZE', 1, 10, 'batchSize'],
    ['CONCURRENCY', 1, 100, 'concurrency'],
    ['VISIBILITY_TIMEOUT_SEC', 1, 43_200, 'visibilityTimeoutSec'],
    ['SHUTDOWN_TIMEOUT_MS', 0, 3_600_000, 'shutdownTimeoutMs'],
    ['METRICS_PORT', 0, 65_535, 'metricsPort'],
  ] as const)('%s', (name, min, max, field) => {
    it('accepts its bounds', () => {
      expect(configWith({ [name]: String(min) })[field]).toBe(min);
      expect(configWith({ [name]: String(max) })[field]).toBe(max);
    });

    it.each(['abc', '1.5', '1e3', '-1', String(max + 1), '0x10', '12abc'])('rejects %j', (value) => {
      const error = errorFor({ [name]: value });
      expect(error.option).toBe(name);
      expect(error.value).toBe(value);
      expect(error.message).toBe(
        `${name} must be an integer between ${min} and ${max}. Received: ${JSON.stringify(value)}`,
      );
    });

    it('rejects below its lower bound', () => {
      if (min === 0) return;
      expect(errorFor({ [name]: String(min - 1) }).option).toBe(name);
    });
  });

  it('BATCH_SIZE names the variable and the value', () => {
    expect(errorFor({ BATCH_SIZE: 'abc' }).message).toBe(
      'BATCH_SIZE must be an integer between 1 and 10. Received: "abc"',
    );
  });

  describe('EXTEND_VISIBILITY', () => {
    it("is 'true' or 'false', case-insensitive and trimmed", () => {
      expect(configWith({ EXTEND_VISIBILITY: 'true' }).extendVisibility).toBe(true);
      expect(configWith({ EXTEND_VISIBILITY: 'false' }).extendVisibility).toBe(false);
      expect(configWith({ EXTEND_VISIBILITY: ' FALSE ' }).extendVisibility).toBe(false);
      expect(configWith({ EXTEND_VISIBILITY: 'True' }).extendVisibility).toBe(true);
    });

    it.each(['yes', '0', '1', 'off', 'truee'])('rejects %j, naming the variable and the value', (value) => {
      const error = errorFor({ EXTEND_VISIBILITY: value });
      expect(error.option).toBe('EXTEND_VISIBILITY');
      expect(error.value).toBe(value);
      expect(error.message).toBe(
        `EXTEND_VISIBILITY must be 'true' or 'false'. Received: ${JSON.stringify(value)}`,
      );
    });
  });

  describe('DLQ_URL', () => {
    it("is a URL, or 'none' for no dead-letter queue", () => {
      expect(configWith({ DLQ_URL: 'http://localhost:4566/000000000000/dlq' }).deadLetterQueueUrl).toBe(
        'http://localhost:4566/000000000000/dlq',
      );
      expect(configWith({ DLQ_URL: 'none' }).deadLetterQueueUrl).toBe(false);
      expect(configWith({ DLQ_URL: 'NONE' }).deadLetterQueueUrl).toBe(false);
      expect(configWith({ DLQ_URL: 'false' }).deadLetterQueueUrl).toBe(false);
      const error = errorFor({ DLQ_URL: 'my-dlq' });
      expect(error.option).toBe('DLQ_URL');
      expect(error.message).toBe(
        `DLQ_URL must be a queue URL (http:// or https://) or 'none'. Received: "my-dlq"`,
      );
    });
  });

  describe('LOG_LEVEL', () => {
    it.each(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly', 'silent'])(
      'accepts %s',
      (level) => {
        expect(configWith({ LOG_LEVEL: level }).logLevel).toBe(level);
      },
    );

    it('is case-insensitive and rejects unknown levels', () => {
      expect(configWith({ LOG_LEVEL: 'DEBUG' }).logLevel).toBe('debug');
      const error = errorFor({ LOG_LEVEL: 'loud' });
      expect(error.option).toBe('LOG_LEVEL');
      expect(error.message).toBe(
        'LOG_LEVEL must be one of error, warn, info, http, verbose, debug, silly, silent. Received: "loud"',
      );
    });
  });
});

describe('helpText', () => {
  it('lists every variable with its default', () => {
    const text = helpText();
    const names = [
      'SQS_QUEUE_URL',
      'REDIS_URLS',
      'AWS_REGION',
      'AWS_ENDPOINT_URL_SQS',
      'LOCK_TTL_MS',
      'BATCH_SIZE',
      'CONCURRENCY',
      'VISIBILITY_TIMEOUT_SEC',
      'EXTEND_VISIBILITY',
      'COMPLETION_WINDOW_MS',
      'SHUTDOWN_TIMEOUT_MS',
      'DLQ_URL',
      'HANDOFF_SECRET',
      'LOG_LEVEL',
      'METRICS_PORT',
      'METRICS_HOST',
    ];
    expect(CLI_VARIABLES.map((v) => v.name)).toEqual(names);
    for (const v of CLI_VARIABLES) {
      expect(text).toMatch(new RegExp(`^  ${v.name} `, 'm'));
      expect(text).toContain(`Default: ${v.default}`);
    }
    for (const [name, value] of Object.entries(CLI_DEFAULTS)) {
      expect(CLI_VARIABLES.find((v) => v.name === name)?.default).toBe(String(value));
    }
    expect(text).toContain('Usage: sqs-redlock-worker run <handler-module>');
    for (const line of text.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
  });
});

describe('loadHandler', () => {
  let dir: string;
  const write = async (name: string, source: string): Promise<string> => {
    await writeFile(path.join(dir, name), source);
    return `./${name}`;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cli-handler-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('instantiates a default-exported class (duck-typed: hydrate and handle)', async () => {
    const file = await write(
      'class.mjs',
      `export default class H { constructor() { this.made = true; } hydrate(m) { return m; } async handle() {} }`,
    );
    const handler = await loadHandler(file, dir);
    expect(typeof handler.hydrate).toBe('function');
    expect((handler as unknown as { made: boolean }).made).toBe(true);
  });

  it('takes a default-exported instance as is', async () => {
    const file = await write(
      'instance.mjs',
      `export default { tag: 'instance', hydrate(m) { return m; }, async handle() {} };`,
    );
    const handler = await loadHandler(file, dir);
    expect((handler as unknown as { tag: string }).tag).toBe('instance');
  });

  it('resolves relative to the given directory, and takes absolute paths', async () => {
    await write('abs.mjs', `export default { hydrate() { return 1; }, async handle() {} };`);
    await expect(loadHandler(path.join(dir, 'abs.mjs'), '/')).resolves.toBeDefined();
  });

  it('loads the TypeScript fixture of the integration tests', async () => {
    const handler = await loadHandler('test/fixtures/cli-handler.ts', process.cwd());
    expect(handler.hydrate({ MessageId: 'm', Body: '{"id":"x"}' })).toEqual({ id: 'x' });
  });

  it.each([
    ['no-default.mjs', 'export const handler = {};', /must have a default export.*Received: undefined/],
    ['wrong-shape.mjs', 'export default { handle() {} };', /must have a default export.*Received: an object/],
    ['function.mjs', 'export default function () {}', /must have a default export.*Received: a function/],
    [
      'throws.mjs',
      'export default class { constructor() { throw new Error("needs a db"); } hydrate() {} async handle() {} }',
      /threw when instantiated with no arguments \(needs a db\)/,
    ],
  ])('rejects %s, naming the module', async (name, source, message) => {
    const file = await write(name, source);
    const error = await loadHandler(file, dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).option).toBe(`handler module "./${name}"`);
    expect((error as Error).message).toMatch(message);
  });

  it('rejects a module that cannot be imported, naming the path', async () => {
    const error = (await loadHandler('./missing.js', dir).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('handler module "./missing.js" could not be imported');
    expect(error.message).toContain(path.join(dir, 'missing.js'));
  });
});

describe('main', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      io: { stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t) },
    };
  };

  it('--help and -h print the help and answer 0', async () => {
    for (const flag of ['--help', '-h']) {
      const { out, io: streams } = io();
      await expect(main([flag], {}, streams)).resolves.toBe(0);
      expect(out.join('')).toBe(helpText());
    }
    const { out, io: streams } = io();
    await expect(main(['run', './x.js', '--help'], {}, streams)).resolves.toBe(0);
    expect(out.join('')).toContain('SHUTDOWN_TIMEOUT_MS');
  });

  it.each([[[]], [['start', './x.js']], [['run']], [['run', 'a.js', 'b.js']]])(
    'answers 2 to the usage error %j',
    async (argv) => {
      const { err, io: streams } = io();
      await expect(main(argv, {}, streams)).resolves.toBe(2);
      expect(err.join('')).toContain('Usage: sqs-redlock-worker run <handler-module>');
    },
  );

  it('answers 1 to an invalid environment, naming the variable and the value', async () => {
    const { err, io: streams } = io();
    const code = await main(['run', './x.js'], { ...BASE, BATCH_SIZE: 'abc', LOG_LEVEL: 'silent' }, streams);
    expect(code).toBe(1);
    expect(err.join('')).toContain('BATCH_SIZE must be an integer between 1 and 10. Received: "abc"');
  });

  it('answers 1 to a handler module that does not load, naming it', async () => {
    const { err, io: streams } = io();
    const code = await main(['run', './nowhere.js'], { ...BASE, LOG_LEVEL: 'silent' }, streams);
    expect(code).toBe(1);
    expect(err.join('')).toContain('handler module "./nowhere.js" could not be imported');
  });
});
