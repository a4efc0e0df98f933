/**
 * Server-side time of each lock script, this tree's against a baseline tree's, robust to a loaded
 * machine: one redis-server, calls of BATCH fresh keys sent one at a time, each call's own time read
 * from `INFO commandstats` (the EVALSHA usec delta), and the minimum and median over CALLS calls per
 * script, old and new interleaved call by call. The minimum is the script's cost with the least
 * interference from other processes; a ratio of minima is the figure to read on a shared machine.
 *
 *   node bench/lua-min.ts --baseline=/tmp/wt-perf [--batch=10] [--calls=300]
 *
 * The sequence per call mirrors a batch: acquire (fresh keys), extend, complete; and acquire + release
 * of other fresh keys. Both trees run the same sequence on their own keys.
 */
import type { Redis } from 'ioredis';
import { startRedisNodes } from '../test/helpers/redis-nodes.ts';
import { median } from './rows.ts';
import { flagValue, fmt, fmtRatio, markdownTable, runMain } from './shared.ts';

const flag = (name: string): string | undefined => flagValue(name);

const BATCH = Number(flag('batch') ?? 10);
const CALLS = Number(flag('calls') ?? 300);
const BASELINE = flag('baseline');

interface Script {
  readonly name: string;
  readonly lua: string;
  readonly sha: string;
}

interface Tree {
  readonly name: string;
  readonly acquire: Script;
  readonly complete: Script;
  readonly release: Script;
  readonly extend: Script;
}

async function loadTree(dir: string, name: string): Promise<Tree> {
  const [a, c, r, e] = await Promise.all([
    import(`${dir}/src/lock/acquire.ts`),
    import(`${dir}/src/lock/complete.ts`),
    import(`${dir}/src/lock/release.ts`),
    import(`${dir}/src/lock/extend.ts`),
  ]);
  return {
    name,
    acquire: a.ACQUIRE_SCRIPT,
    complete: c.COMPLETE_SCRIPT,
    release: r.RELEASE_SCRIPT,
    extend: e.EXTEND_SCRIPT,
  };
}

async function evalUsec(admin: Redis): Promise<number> {
  const info = await admin.info('commandstats');
  return Number(/^cmdstat_evalsha:calls=\d+,usec=(\d+)/m.exec(info)?.[1] ?? 0);
}

let seq = 0;

/** Runs `script` once on `client`, answering the call's server-side usec. */
async function timed(client: Redis, admin: Redis, script: Script, keys: string[], args: (string | number)[]) {
  const before = await evalUsec(admin);
  await client.evalsha(script.sha, keys.length, ...keys, ...args);
  return (await evalUsec(admin)) - before;
}

async function oneBatch(tree: Tree, client: Redis, admin: Redis, out: Map<string, number[]>): Promise<void> {
  const ids = Array.from({ length: BATCH }, () => `${tree.name}-${++seq}-5f0c3c1e-8b7a-4c1d-9d2e`);
  const values = ids.map((_, i) => `0b4f6f0e-7c39-4a5b-a0de-2f8c1b9e7d55.${i}`);
  const lockKey = (id: string) => `{${id}}:lock`;
  const record = (name: string, usec: number) => out.set(name, [...(out.get(name) ?? []), usec]);
  const first = String(Date.now() * 1000 + 1);
  const acquire = (of: string[]) =>
    timed(
      client,
      admin,
      tree.acquire,
      of.flatMap((id) => [lockKey(id), `{${id}}:fence`, `{${id}}:done`]),
      [30_000, 86_400_000, first, ...values],
    );
  record('acquire', await acquire(ids));
  record(
    'extend',
    await timed(
      client,
      admin,
      tree.extend,
      ids.map(lockKey),
      values.flatMap((v) => [v, 30_000]),
    ),
  );
  record(
    'complete',
    await timed(
      client,
      admin,
      tree.complete,
      ids.flatMap((id) => [lockKey(id), `{${id}}:done`]),
      [86_400_000, ...values.flatMap((v) => [v, first])],
    ),
  );
  // A second acquire of the same keys: every marker exists now (the 'done' path).
  record('acquire (all done)', await acquire(ids));
  const other = ids.map((id) => `${id}-r`);
  await acquire(other);
  record('release', await timed(client, admin, tree.release, other.map(lockKey), values));
}

async function main(): Promise<void> {
  if (!BASELINE) throw new Error('--baseline=DIR is required');
  const redis = await startRedisNodes(1);
  try {
    const [client, admin] = [redis.clients()[0] as Redis, redis.clients()[0] as Redis];
    const trees = [
      await loadTree(new URL('..', import.meta.url).pathname, 'this'),
      await loadTree(BASELINE, 'base'),
    ];
    for (const t of trees)
      for (const s of [t.acquire, t.complete, t.release, t.extend]) await client.script('LOAD', s.lua);
    const results = new Map<string, Map<string, number[]>>(trees.map((t) => [t.name, new Map()]));
    const warm = new Map<string, number[]>();
    for (let i = 0; i < 20; i++) for (const t of trees) await oneBatch(t, client, admin, warm);
    for (let i = 0; i < CALLS; i++) {
      const order = i % 2 === 0 ? trees : [...trees].reverse();
      for (const t of order) await oneBatch(t, client, admin, results.get(t.name) as Map<string, number[]>);
      if (i % 50 === 49) await redis.nodes[0]?.flushAll();
    }
    const names = ['acquire', 'extend', 'complete', 'acquire (all done)', 'release'];
    const of = (tree: string, name: string): number[] => results.get(tree)?.get(name) ?? [];
    const rows = names.map((name) => {
      const ours = of('this', name);
      const base = of('base', name);
      return [
        name,
        fmt(Math.min(...base), 0),
        fmt(Math.min(...ours), 0),
        fmtRatio(Math.min(...ours) / Math.min(...base)),
        fmt(median(base), 0),
        fmt(median(ours), 0),
        fmtRatio(median(ours) / median(base)),
      ];
    });
    console.log(
      markdownTable(
        [
          `script, ${BATCH} keys per call, ${CALLS} calls each`,
          'baseline min usec',
          'this tree min usec',
          'min ratio',
          'baseline median usec',
          'this tree median usec',
          'median ratio',
        ],
        rows,
        ['left', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
    );
    const load = (await import('node:os'))
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' / ');
    console.log(`\nBaseline: ${BASELINE}/src/lock. Load average at end (1 / 5 / 15 min): ${load}`);
  } finally {
    await redis.stop();
  }
}

await runMain(main);
