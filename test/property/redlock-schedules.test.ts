/**
 * Property: under any schedule of calls and faults (see lock-schedule.ts), the lock engine keeps its
 * promises, as checked over the recorded history (see checkHistory in lock-history.ts).
 *
 * A short run is part of `npm test`; `npm run fuzz -- --runs N` runs N schedules (see fuzz/run.ts).
 * A failing schedule shrinks and prints its seed and path: replay it with
 * `npm run fuzz -- --seed=S --path=P` (with `=`: seeds can be negative). Environment: PROPERTY_RUNS, PROPERTY_SEED, PROPERTY_PATH,
 * PROPERTY_SHRINK_MS, PROPERTY_VERBOSE, PROPERTY_REPORT (see run-property.ts), and PROPERTY_SABOTAGE_MS
 * (actors overstate their validity: every contended run must then fail, a check of the checker).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxies } from '../helpers/fault-proxy.ts';
import { useRedisNodes } from '../helpers/redis-nodes.ts';
import { checkHistory, describeHistory, type History } from './lock-history.ts';
import {
  ACTORS,
  type Actor,
  type Environment,
  NODES,
  type Plan,
  planArbitrary,
  runPlan,
  spawnActor,
} from './lock-schedule.ts';
import {
  describeTally,
  propertySettings,
  propertyTimeoutMs,
  runProperty,
  type Tally,
} from './run-property.ts';

const SETTINGS = propertySettings(5);
/** A self-check of the whole loop: actors overstate their validity by this much, so runs must fail and shrink. */
const SABOTAGE_MS = Number(process.env.PROPERTY_SABOTAGE_MS ?? 0);
/** A schedule takes about 1 to 5 s; shrinking reruns it many times. */
const PER_RUN_MS = 8_000;

describe('Redlock under random fault schedules', () => {
  // Nodes keep their data across a kill (AOF, fsync always): a node that comes back empty may grant
  // a lock another holder still has, as with every Redlock (README, Guarantees).
  const redis = useRedisNodes(NODES, { appendonly: true });
  let proxies: FaultProxy[] = [];
  let actors: Actor[] = [];
  let runs = 0;

  beforeAll(async () => {
    proxies = await startFaultProxies(redis.nodes.map((n) => n.port));
    actors = Array.from({ length: ACTORS }, () => spawnActor());
  });
  afterAll(async () => {
    for (const a of actors) {
      a.child.kill('SIGCONT');
      a.child.kill('SIGKILL');
    }
    await Promise.all(proxies.map((p) => p.close()));
  });

  /** Runs one plan and throws, with the whole trail, if the history breaks a rule. */
  async function check(plan: Plan): Promise<Tally> {
    const env: Environment = { redis, proxies, actors };
    const history = await runPlan(env, plan, `run${runs++}`, { overstateValidityMs: SABOTAGE_MS });
    const violations = checkHistory(history, { clockSlackMs: 1, boundSlackMs: 400 });
    const tally = tallyHistory(history);
    if (SETTINGS.verbose) process.stderr.write(`${describeTally(tally)}, violations ${violations.length}\n`);
    if (violations.length > 0) {
      throw new Error(
        `${violations.length} violation(s):\n${violations.map((v) => `  [${v.rule}] ${v.detail}`).join('\n')}\n` +
          `history:\n${describeHistory(history)}`,
      );
    }
    return tally;
  }

  it('catches a holder that claims more validity than it has (a sabotaged actor, one fixed schedule)', async () => {
    // Actor 0 holds k0 and is stopped past its TTL; actor 1 is then granted k0. With actor 0 recording
    // its deadline a second late, the two holds overlap in the history: the checker must say so.
    const plan: Plan = {
      resend: true,
      maxRetriesPerRequest: 1,
      steps: [
        { kind: 'acquire', actor: 0, key: 0, op: 0, retryCount: 0, afterWork: null, gapMs: 100 },
        { kind: 'stall', actor: 0, durationMs: 900, gapMs: 600 },
        { kind: 'acquire', actor: 1, key: 0, op: 1, retryCount: 1, afterWork: null, gapMs: 400 },
      ],
    };
    const env: Environment = { redis, proxies, actors };
    const honest = await runPlan(env, plan, `run${runs++}`);
    expect(checkHistory(honest, { clockSlackMs: 1, boundSlackMs: 400 })).toEqual([]);
    expect(honest.locks.map((l) => l.actor)).toEqual([0, 1]);
    const sabotaged = await runPlan(env, plan, `run${runs++}`, { overstateValidityMs: 1_000 });
    const violations = checkHistory(sabotaged, { clockSlackMs: 1, boundSlackMs: 400 });
    expect(violations.map((v) => v.rule)).toContain('two-valid-holders');
  });

  it(
    `keeps its promises over ${SETTINGS.runs} random schedules of calls, partitions, pauses, kills and stalls`,
    () => runProperty('lock', planArbitrary, check, SETTINGS, PER_RUN_MS),
    propertyTimeoutMs(SETTINGS, PER_RUN_MS),
  );
});

/** What a schedule exercised of the engine. */
function tallyHistory(history: History): Tally {
  const count = (op: string, outcome?: string): number =>
    history.calls.filter((c) => c.op === op && (outcome === undefined || c.outcome === outcome)).length;
  const late = history.calls.filter((c) => c.op === 'complete' && c.heldAtCall === false);
  return {
    acquires: count('acquire'),
    granted: count('acquire', 'granted'),
    held: count('acquire', 'held'),
    done: count('acquire', 'done'),
    quorum: count('acquire', 'quorum'),
    completes: count('complete'),
    'completes ok': count('complete', 'ok'),
    'late completes': late.length,
    'late completes ok': late.filter((c) => c.outcome === 'ok').length,
    'locks lost': history.locks.filter((l) => l.abortedAt !== undefined).length,
    stops: history.stops.length,
    'script flushes': (history.notes ?? []).filter((n) => n.text.endsWith('SCRIPT FLUSH')).length,
  };
}
