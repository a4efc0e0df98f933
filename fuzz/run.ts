/**
 * The long run of the lock engine's property test (test/property/redlock-schedules.test.ts), or with
 * `--suite worker`, of the Workers' one with SQS in the loop (test/property/worker-schedules.test.ts):
 *
 *   npm run fuzz -- --runs 200                 200 random schedules
 *   npm run fuzz -- --seed S --path P          replays (and shrinks) a failing schedule fast-check printed
 *   npm run fuzz -- --runs 50 --shrink-ms 600000
 *   npm run fuzz -- --suite worker --runs 500  500 Worker schedules (a few seconds each)
 *
 * Runs vitest on that one file, with the schedule count and seed in its environment.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '100' },
    seed: { type: 'string' },
    path: { type: 'string' },
    'shrink-ms': { type: 'string', default: '300000' },
    verbose: { type: 'boolean', default: false },
    suite: { type: 'string', default: 'lock' },
  },
});
const SUITES: Record<string, string> = {
  lock: 'test/property/redlock-schedules.test.ts',
  worker: 'test/property/worker-schedules.test.ts',
};
const suiteFile = SUITES[values.suite];
if (suiteFile === undefined) {
  process.stderr.write(
    `--suite must be one of ${Object.keys(SUITES).join(', ')}. Received: ${values.suite}\n`,
  );
  process.exit(2);
}
const runs = Number(values.runs);
if (!Number.isSafeInteger(runs) || runs < 1) {
  process.stderr.write(`--runs must be a positive integer. Received: ${values.runs}\n`);
  process.exit(2);
}
const env: NodeJS.ProcessEnv = {
  ...process.env,
  PROPERTY_RUNS: String(runs),
  PROPERTY_SHRINK_MS: values['shrink-ms'],
};
if (values.seed !== undefined) env.PROPERTY_SEED = values.seed;
if (values.path !== undefined) env.PROPERTY_PATH = values.path;
if (values.verbose) env.PROPERTY_VERBOSE = '1';
const result = spawnSync('npx', ['vitest', 'run', suiteFile], {
  env,
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
