/**
 * The package as users install it: `npm pack` (whose prepack builds dist/), the tarball installed into a
 * fresh temporary project, and there: `import` and `require` of the package and of
 * `sqs-redlock-worker/testing`, a strict TypeScript file type-checked against the installed declarations,
 * and the installed bin's `--help`. Nothing here reads src/ at run time but to compare export names.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/processes.ts';

const run = promisify(execFile);
const NAME = 'sqs-redlock-worker';
/** The repository's package.json, as packed. */
const manifest = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
  devDependencies: Record<string, string>;
};

/**
 * Node 24 first on PATH (the system's may be older): the one running vitest, for npm, the prepack build,
 * the installed bin's `#!/usr/bin/env node`. NODE_OPTIONS and NODE_ENV are vitest's, not a user's.
 */
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: [path.dirname(process.execPath), path.join(ROOT, 'node_modules/.bin'), process.env.PATH].join(
    path.delimiter,
  ),
  NODE_OPTIONS: '',
  NODE_ENV: '',
};

/** Runs a command to its end; rejects with its output when it exits non-zero. */
async function sh(
  file: string,
  args: readonly string[],
  cwd: string,
  timeout = 120_000,
): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(file, args, { cwd, env, timeout, maxBuffer: 64 * 1024 * 1024 });
  } catch (error) {
    const { stdout, stderr, message } = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${message}\n${stdout ?? ''}\n${stderr ?? ''}`);
  }
}

/** What `npm pack --json` reports of one tarball. */
interface Packed {
  filename: string;
  entryCount: number;
  files: { path: string; size: number; mode: number }[];
}

/**
 * The same checks from ESM and from CommonJS: the export names, a tiny BaseHandler and a
 * defineHandler with a hand-written Standard Schema run through the installed testing kit.
 */
const PROBE = `
async function probe(lib, testing) {
  class Echo extends lib.BaseHandler {
    hydrate(message) {
      const body = JSON.parse(message.Body ?? '');
      return typeof body.id === 'string' ? body : null;
    }
    lockKey(input) { return 'echo:' + input.id; }
    async handle(input, ctx) { ctx.logger.info('echoed', { id: input.id }); }
  }
  const schema = { '~standard': { version: 1, vendor: 'probe', validate: (value) =>
    typeof value?.id === 'string' ? { value } : { issues: [{ message: 'must be a string', path: ['id'] }] } } };
  const defined = lib.defineHandler({ schema, handle: async () => {} });
  const processed = await testing.testHandler(new Echo(), testing.sqsMessage({ body: { id: '7' } }));
  const poison = await testing.testHandler(new Echo(), testing.sqsMessage({ body: { id: 7 } }));
  const invalid = await testing.testHandler(defined, testing.sqsMessage({ body: { id: 7 } }));
  return JSON.stringify({
    names: Object.keys(lib).sort(),
    testing: Object.keys(testing).sort(),
    processed: { kind: processed.kind, lockKey: processed.lockKey, logs: processed.logs.map((l) => l.message) },
    poison: poison.kind,
    invalid: { kind: invalid.kind, reason: invalid.reason },
  });
}
`;

const FILES: Record<string, string> = {
  'package.json': `${JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2)}\n`,
  'esm.js': `${PROBE}
console.log(await probe(await import('${NAME}'), await import('${NAME}/testing')));
`,
  // require(esm): the same module instances as import() (one BaseHandler class, not two copies).
  'cjs.cjs': `${PROBE}
const lib = require('${NAME}');
import('${NAME}').then(async (viaImport) => {
  if (viaImport.BaseHandler !== lib.BaseHandler) throw new Error('require and import load two copies');
  console.log(await probe(lib, require('${NAME}/testing')));
});
`,
  // Strict, nodenext, and skipLibCheck off: the installed .d.ts files are checked too. The check
  // files' expect-error directives fail it if the types resolved to `any` (an unused one is an error).
  'tsconfig.json': `${JSON.stringify(
    {
      compilerOptions: {
        strict: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2023',
        lib: ['es2023'],
        types: ['node'],
        noEmit: true,
        skipLibCheck: false,
        verbatimModuleSyntax: true,
        noUncheckedIndexedAccess: true,
      },
      include: ['check.ts', 'check.cts'],
    },
    null,
    2,
  )}\n`,
  'check.ts': `import {
  BaseHandler,
  ConfigError,
  createLambdaHandler,
  defineHandler,
  type HandlerContext,
  type Message,
  Publisher,
  Redlock,
  SchemaHandler,
  Worker,
  type WorkerOptions,
} from '${NAME}';
import { sqsMessage, type TestHandlerResult, testHandler } from '${NAME}/testing';
// @ts-expect-error: not an export of the package
import { NoSuchExport } from '${NAME}';

interface Job {
  id: string;
}

class JobHandler extends BaseHandler<Job> {
  hydrate(message: Message): Job | null {
    const body: unknown = JSON.parse(message.Body ?? '');
    return typeof body === 'object' && body !== null && 'id' in body && typeof body.id === 'string'
      ? { id: body.id }
      : null;
  }
  override lockKey(job: Job): string {
    return \`job:\${job.id}\`;
  }
  async handle(job: Job, ctx: HandlerContext): Promise<void> {
    ctx.signal.throwIfAborted();
    ctx.logger.info('job', { id: job.id, fencingToken: ctx.fencingToken satisfies number });
  }
}

const result: TestHandlerResult<Job> = await testHandler(new JobHandler(), sqsMessage({ body: { id: '1' } }));
if (result.kind === 'processed') console.log(result.input.id.toUpperCase(), result.lockKey);
if (result.kind === 'poison') console.log(result.reason.length);
// @ts-expect-error: the input type is the handler's
const wrong: TestHandlerResult<number> = result;
// @ts-expect-error: BaseHandler is abstract
new BaseHandler<Job>();

// The input type of defineHandler is inferred from the schema's output.
const schema = {
  '~standard': {
    version: 1,
    vendor: 'check',
    validate: (value: unknown) => ({ value: value as Job }),
    types: undefined as unknown as { input: unknown; output: Job },
  },
} as const;
const defined: SchemaHandler<typeof schema> = defineHandler({
  schema,
  handle: async (job) => {
    job.id satisfies string;
    // @ts-expect-error: Job has no cents
    job.cents;
  },
});

// Never called: the constructors' option types.
function worker(redlock: Redlock): Worker<Job> {
  const options: WorkerOptions<Job> = { queueUrl: 'https://sqs.us-east-1.amazonaws.com/1/q', handler: new JobHandler(), redlock };
  // @ts-expect-error: the handler's input type must match the Worker's
  const mismatched: WorkerOptions<number> = options;
  console.log(mismatched);
  return new Worker(options);
}
console.log(wrong, defined, worker, Publisher, createLambdaHandler, ConfigError, NoSuchExport);
`,
  // require of the ESM package from CommonJS, as TypeScript's nodenext allows on Node >= 22.
  'check.cts': `import lib = require('${NAME}');
import testing = require('${NAME}/testing');

const message: lib.Message = testing.sqsMessage({ body: 'x' });
const Handler: typeof lib.BaseHandler = lib.BaseHandler;
// @ts-expect-error: not an export of the package
lib.NoSuchExport;
console.log(message, Handler);
`,
};

describe('the packed package, installed into a fresh project', () => {
  let temp: string;
  let consumer: string;
  let packed: Packed;
  let installed: string;

  beforeAll(async () => {
    temp = await mkdtemp(path.join(os.tmpdir(), 'srw-package-'));
    consumer = path.join(temp, 'consumer');
    // The prepack script builds dist/ first; --json prints the tarball's file list (the build's
    // output goes to stderr as npm runs lifecycle scripts).
    const { stdout } = await sh(
      'npm',
      ['pack', '--json', '--pack-destination', temp, '--loglevel', 'error'],
      ROOT,
    );
    const reports = JSON.parse(stdout.slice(stdout.indexOf('['))) as Packed[];
    expect(reports).toHaveLength(1);
    packed = reports[0] as Packed;
    await mkdir(consumer);
    for (const [file, text] of Object.entries(FILES)) await writeFile(path.join(consumer, file), text);
    // @types/node as a TypeScript user has it, in the range the repository develops against.
    await sh(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        '--loglevel',
        'error',
        path.join(temp, packed.filename),
        `@types/node@${manifest.devDependencies['@types/node']}`,
      ],
      consumer,
      180_000,
    );
    installed = path.join(consumer, 'node_modules', NAME);
  }, 240_000);

  afterAll(async () => {
    if (temp) await rm(temp, { recursive: true, force: true });
  });

  it('packs dist/ (built, .d.ts included), README, LICENSE and package.json: no sources, tests or Node binary', () => {
    const files = packed.files.map((f) => f.path).sort();
    for (const file of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/cli.js',
      'dist/testing/index.js',
      'dist/testing/index.d.ts',
    ]) {
      expect(files, file).toContain(file);
    }
    const stray = files.filter(
      (file) =>
        !['LICENSE', 'README.md', 'package.json'].includes(file) &&
        !/^dist\/.+\.(js|d\.ts|js\.map)$/.test(file),
    );
    expect(stray, 'files besides dist/*.{js,d.ts,js.map}').toEqual([]);
    expect(files.filter((file) => /(^|\/)(test|bench|examples)\/|\.test\./.test(file))).toEqual([]);
    const largest = Math.max(...packed.files.map((f) => f.size));
    expect(largest, 'a file of several MB (a Node binary?)').toBeLessThan(1024 * 1024);
    expect(packed.filename).toBe(`${NAME}-${manifest.version}.tgz`);
  });

  it('ships a LICENSE that matches package.json', async () => {
    const installedManifest = JSON.parse(await readFile(path.join(installed, 'package.json'), 'utf8')) as {
      license: string;
    };
    expect(installedManifest.license).toBe('MIT');
    const license = await readFile(path.join(installed, 'LICENSE'), 'utf8');
    expect(license).toMatch(/^MIT License\n\nCopyright \(c\) 2026 sqs-redlock-worker contributors\n/);
  });

  it('has rewritten every relative .ts import of the built JavaScript to .js', async () => {
    const js = (await readdir(path.join(installed, 'dist'), { recursive: true })).filter((f) =>
      f.endsWith('.js'),
    );
    expect(js.length).toBeGreaterThan(10);
    for (const file of js) {
      const text = await readFile(path.join(installed, 'dist', file), 'utf8');
      expect(text, file).not.toMatch(/(from|import\()\s*['"]\.{1,2}\/[^'"]*\.ts['"]/);
    }
  });

  it.each([
    ['import', 'esm.js'],
    ['require', 'cjs.cjs'],
  ])('loads with %s (%s), the testing kit included, with the names of src/index.ts', async (_, script) => {
    const source = Object.keys(await import('../../src/index.ts')).sort();
    const testingSource = Object.keys(await import('../../src/testing/index.ts')).sort();
    const { stdout, stderr } = await sh(process.execPath, [script], consumer);
    expect(stderr).toBe('');
    const out = JSON.parse(stdout) as {
      names: string[];
      testing: string[];
      processed: { kind: string; lockKey: string; logs: string[] };
      poison: string;
      invalid: { kind: string; reason: string };
    };
    expect(out.names).toEqual(source);
    expect(out.names).toEqual(
      expect.arrayContaining([
        'BaseHandler',
        'SchemaHandler',
        'defineHandler',
        'Worker',
        'Redlock',
        'Lock',
        'Publisher',
        'createLambdaHandler',
        'createLogger',
        'createMetrics',
        'startMetricsServer',
        'ConfigError',
        'LockLostError',
        'POISON_ATTRIBUTES',
      ]),
    );
    expect(out.testing).toEqual(testingSource);
    expect(out.testing).toEqual(['sqsMessage', 'testHandler']);
    expect(out.processed).toEqual({ kind: 'processed', lockKey: 'echo:7', logs: ['echoed'] });
    expect(out.poison).toBe('poison');
    expect(out.invalid.kind).toBe('poison');
    expect(out.invalid.reason).toContain('must be a string');
  });

  it('type-checks a strict nodenext TypeScript project (ESM and CommonJS) against the installed types', async () => {
    const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
    const { stdout } = await sh(tsc, ['-p', 'tsconfig.json', '--pretty', 'false'], consumer);
    expect(stdout).toBe('');
  });

  it('runs the installed bin: --help exits 0 and names run, check, dlq inspect and dlq redrive', async () => {
    const bin = path.join(consumer, 'node_modules/.bin', Object.keys(manifest.bin)[0] ?? NAME);
    const { stdout } = await sh(bin, ['--help'], consumer);
    for (const command of ['run <handler-module>', 'check', 'dlq inspect', 'dlq redrive']) {
      expect(stdout).toContain(`${NAME} ${command}`);
    }
    const { stdout: runHelp } = await sh(bin, ['run', '--help'], consumer);
    expect(runHelp).toContain('SQS_QUEUE_URL');
  });
});
