/**
 * There is no Docker engine here: examples/orders/Dockerfile is checked statically, instruction by
 * instruction, for what a production image needs (stages, dependencies, user, what the last stage holds),
 * and against the repository (what it copies exists and is not left out of the build context). Its
 * HEALTHCHECK script is run with this Node.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const DOCKERFILE = 'examples/orders/Dockerfile';
const IGNORE_FILE = `${DOCKERFILE}.dockerignore`;

interface Instruction {
  readonly op: string;
  /** The arguments as written, continuation lines joined. */
  readonly args: string;
}

interface Stage {
  readonly name: string | undefined;
  readonly from: string;
  readonly instructions: readonly Instruction[];
}

/** Instructions in order: comments and blank lines dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (pending === '' && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  return logical.map((line) => {
    const match = /^\s*(\S+)\s*(.*)$/.exec(line);
    return { op: (match?.[1] ?? '').toUpperCase(), args: (match?.[2] ?? '').replace(/\s+/g, ' ').trim() };
  });
}

function stages(all: readonly Instruction[]): Stage[] {
  const result: { name: string | undefined; from: string; instructions: Instruction[] }[] = [];
  for (const instruction of all) {
    if (instruction.op === 'FROM') {
      const [from = '', as, name] = instruction.args.split(' ');
      result.push({ name: as?.toUpperCase() === 'AS' ? name : undefined, from, instructions: [] });
    } else {
      result.at(-1)?.instructions.push(instruction);
    }
  }
  return result;
}

/** A COPY's flags, sources and destination. */
function copyOf(instruction: Instruction): { from: string | undefined; sources: string[]; dest: string } {
  const words = instruction.args.split(' ');
  const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
  const paths = words.filter((w) => !w.startsWith('--'));
  return { from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' };
}

/** An exec-form instruction's JSON array. */
function execForm(instruction: Instruction | undefined): string[] {
  return JSON.parse(instruction?.args ?? 'null') as string[];
}

/** Whether the context keeps `file`: the last pattern that matches it (or a parent folder) wins. */
function keptInContext(file: string, patterns: readonly string[]): boolean {
  let kept = true;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).replace(/\/$/, '');
    if (pattern === '*' || file === pattern || file.startsWith(`${pattern}/`)) kept = negated;
  }
  return kept;
}

describe('examples/orders/Dockerfile', () => {
  const all = instructions(readFileSync(DOCKERFILE, 'utf8'));
  const parsed = stages(all);
  const final = parsed.at(-1) as Stage;
  const byName = new Map(parsed.map((s) => [s.name, s]));
  const of = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
  const runs = (stage: Stage) => of(stage, 'RUN').map((i) => i.args);
  const workdir = (stage: Stage) => of(stage, 'WORKDIR').at(-1)?.args ?? '/';
  const npmInstalls = (stage: Stage) => runs(stage).filter((r) => /\bnpm (ci|install|i)\b/.test(r));
  const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string> };

  it('is multi-stage on one Node base image, every stage named but the last', () => {
    expect(parsed.length).toBeGreaterThanOrEqual(2);
    expect(new Set(parsed.map((s) => s.from)).size).toBe(1);
    expect(parsed.slice(0, -1).every((s) => s.name !== undefined)).toBe(true);
    expect(all.find((i) => i.op === 'ARG')?.args).toMatch(/^NODE_IMAGE=node:24(\.\d+)*-slim$/);
  });

  it('builds dist/ with npm run build (the prepack script) in a stage that installed every dependency', () => {
    const build = parsed.find((s) => runs(s).includes('npm run build')) as Stage;
    expect(build, 'a stage running npm run build').toBeDefined();
    expect(npmInstalls(build)).toEqual([expect.stringMatching(/^npm ci\b/)]);
    expect(npmInstalls(build)[0]).not.toMatch(/--omit=dev|--production/);
    expect(workdir(build)).toBe('/app');
  });

  it('runs as a non-root user in production mode, with no npm install in the last stage', () => {
    const users = of(final, 'USER').map((i) => i.args);
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/);
    expect(users.at(-1)).toBe('node');
    const userAt = final.instructions.findIndex((i) => i.op === 'USER');
    const entryAt = final.instructions.findIndex((i) => i.op === 'ENTRYPOINT');
    expect(userAt).toBeLessThan(entryAt);
    expect(of(final, 'ENV').map((i) => i.args)).toContain('NODE_ENV=production');
    expect(runs(final)).toEqual([]);
  });

  it('holds production dependencies only: node_modules from a stage that ran npm ci --omit=dev', () => {
    const modules = of(final, 'COPY')
      .map(copyOf)
      .filter((c) => c.sources.some((s) => s.endsWith('node_modules')));
    expect(modules).toHaveLength(1);
    const deps = byName.get(modules[0]?.from) as Stage;
    expect(deps, `stage ${modules[0]?.from}`).toBeDefined();
    expect(npmInstalls(deps)).toEqual([expect.stringMatching(/^npm ci .*--omit=dev\b/)]);
    // The only install script in the lockfile is the `node` devDependency's second Node binary.
    expect(npmInstalls(deps)[0]).toContain('--ignore-scripts');
    expect(of(deps, 'COPY').flatMap((i) => copyOf(i).sources)).toEqual(['package.json', 'package-lock.json']);
  });

  it('copies only dist/ and package.json from the build stage, and nothing from the context, into the last stage', () => {
    const copies = of(final, 'COPY').map(copyOf);
    expect(copies.every((c) => c.from !== undefined)).toBe(true);
    const fromBuild = copies
      .filter((c) => !c.sources.some((s) => s.endsWith('node_modules')))
      .flatMap((c) => c.sources.map((s) => ({ from: c.from, source: s.replace(/^\/app\//, '') })));
    expect(fromBuild.map((c) => c.source).sort()).toEqual(['dist', 'package.json']);
    expect(new Set(fromBuild.map((c) => c.from)).size).toBe(1);
    expect(of(final, 'ADD')).toEqual([]);
  });

  it('runs the installed CLI on the example handler, compiled to dist/ from the TypeScript in examples/', () => {
    const entrypoint = execForm(of(final, 'ENTRYPOINT')[0]);
    expect(entrypoint).toEqual(['node', manifest.bin['sqs-redlock-worker']?.replace(/^\.\//, '')]);
    const [command, handler = ''] = execForm(of(final, 'CMD')[0]);
    expect(command).toBe('run');
    const build = byName.get('build') as Stage;
    const compile = runs(build).find((r) => r.includes(' --outDir ')) ?? '';
    const outDir = / --outDir (\S+)/.exec(compile)?.[1];
    const rootDir = / --rootDir (\S+)/.exec(compile)?.[1];
    expect(handler.startsWith(`${outDir}/`), handler).toBe(true);
    const source = `${rootDir}/${handler.slice(`${outDir}/`.length).replace(/\.js$/, '.ts')}`;
    expect(source).toBe('examples/orders/handler.ts');
    expect(compile).toContain(source);
    expect(compile).toContain('--rewriteRelativeImportExtensions');
    // Every module the handler imports relatively is compiled with it.
    for (const [, imported] of readFileSync(source, 'utf8').matchAll(/from '\.\/([^']+)'/g)) {
      expect(compile, imported).toContain(`examples/orders/${imported}`);
    }
  });

  it('copies from the context only files that exist and that the Dockerfile-specific ignore file keeps', () => {
    const patterns = readFileSync(IGNORE_FILE, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(patterns[0]).toBe('*');
    const sources = parsed
      .flatMap((s) => of(s, 'COPY').map(copyOf))
      .filter((c) => c.from === undefined)
      .flatMap((c) => c.sources);
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(source), source).toBe(true);
      expect(keptInContext(source, patterns), source).toBe(true);
    }
    for (const left of ['node_modules', 'dist', '.git', 'test/unit/dockerfile.test.ts', 'README.md']) {
      expect(keptInContext(left, patterns), left).toBe(false);
    }
  });

  it('has a HEALTHCHECK that asks /healthz on METRICS_PORT and passes when no server is configured', async () => {
    const healthcheck = of(final, 'HEALTHCHECK')[0]?.args ?? '';
    const [node, flag, script = ''] = JSON.parse(
      healthcheck.slice(healthcheck.indexOf('CMD ') + 4),
    ) as string[];
    expect([node, flag]).toEqual(['node', '-e']);
    const run = promisify(execFile);
    const exitCode = (env: Record<string, string>) =>
      run(process.execPath, ['-e', script], {
        env: { PATH: process.env.PATH ?? '', ...env },
        timeout: 10_000,
      })
        .then(() => 0)
        .catch((error: { code?: number }) => error.code ?? -1);
    const server = createServer((req, res) => {
      res.statusCode = req.url === '/healthz' ? 200 : 404;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      expect(await exitCode({})).toBe(0);
      expect(await exitCode({ METRICS_PORT: String(port) })).toBe(0);
      expect(await exitCode({ METRICS_PORT: String(port), METRICS_HOST: '0.0.0.0' })).toBe(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    // The port is closed now: unhealthy.
    expect(await exitCode({ METRICS_PORT: String(port) })).toBe(1);
  });
});
