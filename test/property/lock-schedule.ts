/**
 * Random fault schedules against the real lock engine: what a schedule is (fast-check arbitraries),
 * and how one is run. Actors are Redlock instances in their own processes (lock-actor.ts), talking to
 * real redis-server nodes through one FaultProxy per node; the schedule issues their calls without
 * waiting for them (so calls overlap), and meanwhile delays, black-holes, resets and refuses proxies,
 * pauses and kills nodes (restarted, keeping their data: `appendonly yes`), flushes a live node's script
 * cache (every caller then meets NOSCRIPT and falls back to EVAL a round trip later, out of order with
 * what it wrote meanwhile), and stops actors past their locks' validity. Every fault heals after its duration, and all of them at the end of the run.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import type { FaultProxy } from '../helpers/fault-proxy.ts';
import { sleep } from '../helpers/lock.ts';
import type { RedisNodes } from '../helpers/redis-nodes.ts';
import type { ActorCommand, ActorInit, ActorReply, AfterWork } from './lock-actor.ts';
import { type ActorHistory, type History, sharedNow } from './lock-history.ts';

export const ACTORS = 3;
export const NODES = 3;
export const KEYS = 2;
/** Operations per lock key, each with its own idempotency key (so a completed one does not end the key's contention). */
export const OPS = 4;

/** Short TTLs so that stalls and faults outlast validity within a run of a second or two. */
export const ENGINE: ActorInit['redlock'] = {
  ttlMs: 450,
  commandTimeoutMs: 50,
  connectTimeoutMs: 200,
  retryDelayMs: 30,
  retryJitterMs: 20,
};

export type Step = (
  | {
      readonly kind: 'acquire';
      readonly actor: number;
      readonly key: number;
      /** Which operation under the lock key: its own idempotency key. */
      readonly op: number;
      readonly retryCount: number;
      /** What the holder does once granted, after its work (none: a later step ends it). */
      readonly afterWork: AfterWork | null;
    }
  | { readonly kind: 'release'; readonly actor: number }
  | { readonly kind: 'complete'; readonly actor: number; readonly claimExpired: boolean }
  | { readonly kind: 'extend'; readonly actor: number }
  | {
      readonly kind: 'proxy';
      readonly node: number;
      readonly fault: 'blackhole' | 'refuse' | 'delay';
      readonly delayMs: number;
      readonly durationMs: number;
    }
  | { readonly kind: 'reset'; readonly node: number }
  | { readonly kind: 'flush-scripts'; readonly node: number }
  | {
      readonly kind: 'node';
      readonly node: number;
      readonly fault: 'pause' | 'kill';
      readonly durationMs: number;
    }
  | { readonly kind: 'stall'; readonly actor: number; readonly durationMs: number }
) & {
  /** How long the schedule waits before its next step. */
  readonly gapMs: number;
};

export interface Plan {
  /** ioredis' autoResendUnfulfilledCommands in every actor. */
  readonly resend: boolean;
  readonly maxRetriesPerRequest: number | null;
  readonly steps: readonly Step[];
}

const actor = fc.integer({ min: 0, max: ACTORS - 1 });
const node = fc.integer({ min: 0, max: NODES - 1 });
const gapMs = fc.integer({ min: 0, max: 120 });
/** Faults from a blip to well past a lock's validity (450 ms TTL). */
const durationMs = fc.integer({ min: 30, max: 1_100 });

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('acquire' as const),
      actor,
      key: fc.integer({ min: 0, max: KEYS - 1 }),
      op: fc.integer({ min: 0, max: OPS - 1 }),
      retryCount: fc.integer({ min: 0, max: 1 }),
      afterWork: fc.option(
        fc.record({
          action: fc.constantFrom('complete' as const, 'release' as const),
          afterMs: fc.integer({ min: 0, max: 700 }),
          claimExpired: fc.boolean(),
        }),
        { freq: 4, nil: null },
      ),
      gapMs,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('release' as const), actor, gapMs }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('complete' as const),
      actor,
      claimExpired: fc.boolean(),
      gapMs,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), actor, gapMs }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('proxy' as const),
      node,
      fault: fc.constantFrom('blackhole' as const, 'refuse' as const, 'delay' as const),
      delayMs: fc.integer({ min: 5, max: 200 }),
      durationMs,
      gapMs,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), node, gapMs }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flush-scripts' as const), node, gapMs }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('node' as const),
      node,
      fault: fc.constantFrom('pause' as const, 'kill' as const),
      durationMs,
      gapMs,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('stall' as const), actor, durationMs, gapMs }) },
);

export const planArbitrary: fc.Arbitrary<Plan> = fc.record({
  resend: fc.boolean(),
  maxRetriesPerRequest: fc.constantFrom(0, 1, null),
  steps: fc.array(step, { minLength: 12, maxLength: 36 }),
});

const ACTOR_SCRIPT = fileURLToPath(new URL('./lock-actor.ts', import.meta.url));

/** An actor process and what it wrote on stderr (for a failure's diagnostics). */
export interface Actor {
  readonly child: ChildProcess;
  stderr: string;
}

export function spawnActor(): Actor {
  // No inherited execArgv: the vitest worker's flags are not the actor's.
  const child = fork(ACTOR_SCRIPT, [], { execArgv: [], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const actor: Actor = { child, stderr: '' };
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    actor.stderr = (actor.stderr + chunk).slice(-4_000);
  });
  return actor;
}

function ask<R extends ActorReply['reply']>(
  actor: Actor,
  command: ActorCommand,
  reply: R,
  timeoutMs: number,
): Promise<Extract<ActorReply, { reply: R }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ActorReply): void => {
      if (message.reply !== reply) return;
      clearTimeout(timer);
      actor.child.off('message', onMessage);
      resolve(message as Extract<ActorReply, { reply: R }>);
    };
    const timer = setTimeout(() => {
      actor.child.off('message', onMessage);
      reject(
        new Error(`actor pid ${actor.child.pid}: no '${reply}' within ${timeoutMs} ms\n${actor.stderr}`),
      );
    }, timeoutMs);
    actor.child.on('message', onMessage);
    actor.child.send(command);
  });
}

export interface Environment {
  readonly redis: RedisNodes;
  readonly proxies: readonly FaultProxy[];
  readonly actors: readonly Actor[];
}

/** A fault in force, and how to end it. */
interface Fault {
  timer: NodeJS.Timeout | undefined;
  heal: () => Promise<void>;
  healing?: Promise<void>;
}

/** How long the actors get, after the schedule, for their calls in flight to settle. */
const SETTLE_MS = 3_000;

/** Runs `plan` with keys of its own (`run` names them) and answers its recorded history. */
export async function runPlan(
  env: Environment,
  plan: Plan,
  run: string,
  sabotage: Pick<ActorInit, 'overstateValidityMs'> = {},
): Promise<History> {
  const ports = env.proxies.map((p) => p.port);
  await Promise.all(
    env.actors.map((a, i) =>
      ask(
        a,
        {
          cmd: 'init',
          init: {
            actor: i,
            ports,
            redlock: ENGINE,
            resend: plan.resend,
            maxRetriesPerRequest: plan.maxRetriesPerRequest,
            ...sabotage,
          },
        },
        'ready',
        10_000,
      ),
    ),
  );
  const notes: { at: number; text: string }[] = [
    { at: sharedNow(), text: `resend ${plan.resend}, maxRetriesPerRequest ${plan.maxRetriesPerRequest}` },
  ];
  const note = (text: string): void => {
    notes.push({ at: sharedNow(), text });
  };
  const stops: { actor: number; from: number; to: number }[] = [];
  /** Faults in force by what they hold: `proxy:1`, `node:2`, `actor:0`. One at a time on each. */
  const faults = new Map<string, Fault>();
  const endFault = (name: string): Promise<void> => {
    const fault = faults.get(name);
    if (!fault) return Promise.resolve();
    if (fault.timer) clearTimeout(fault.timer);
    fault.timer = undefined;
    fault.healing ??= fault.heal().finally(() => faults.delete(name));
    return fault.healing;
  };
  const startFault = (name: string, ms: number, begin: () => void, heal: () => Promise<void>): void => {
    if (faults.has(name)) return;
    begin();
    const fault: Fault = { timer: undefined, heal };
    fault.timer = setTimeout(() => void endFault(name), ms);
    faults.set(name, fault);
  };
  const keyOf = (k: number): string => `${run}:k${k}`;

  for (const s of plan.steps) {
    switch (s.kind) {
      case 'acquire':
        env.actors[s.actor]?.child.send({
          cmd: 'acquire',
          key: keyOf(s.key),
          idempotencyKey: `${keyOf(s.key)}:op${s.op}`,
          retryCount: s.retryCount,
          afterWork: s.afterWork ?? undefined,
        });
        break;
      case 'release':
        env.actors[s.actor]?.child.send({ cmd: 'release' });
        break;
      case 'complete':
        env.actors[s.actor]?.child.send({ cmd: 'complete', claimExpired: s.claimExpired });
        break;
      case 'extend':
        env.actors[s.actor]?.child.send({ cmd: 'extend' });
        break;
      case 'reset':
        note(`proxy ${s.node}: reset`);
        env.proxies[s.node]?.reset();
        break;
      case 'flush-scripts': {
        const redis = env.redis.nodes[s.node];
        if (!redis?.isRunning || redis.isPaused) break;
        note(`node ${s.node}: SCRIPT FLUSH`);
        // Straight to the node (not through its proxy), on a client of its own, bounded.
        const admin = new Redis(redis.port, {
          maxRetriesPerRequest: 0,
          commandTimeout: 200,
          lazyConnect: true,
        });
        admin.on('error', () => {});
        void admin
          .script('FLUSH')
          .catch(() => {})
          .finally(() => admin.disconnect());
        break;
      }
      case 'proxy': {
        const proxy = env.proxies[s.node] as FaultProxy;
        startFault(
          `proxy:${s.node}`,
          s.durationMs,
          () => {
            note(
              `proxy ${s.node}: ${s.fault}${s.fault === 'delay' ? ` ${s.delayMs} ms` : ''} for ${s.durationMs} ms`,
            );
            proxy.startFault(s.fault, s.delayMs);
          },
          async () => {
            note(`proxy ${s.node}: heal`);
            proxy.heal();
          },
        );
        break;
      }
      case 'node': {
        const redis = env.redis.nodes[s.node];
        if (!redis) break;
        startFault(
          `node:${s.node}`,
          s.durationMs,
          () => {
            note(`node ${s.node}: ${s.fault} for ${s.durationMs} ms`);
            if (s.fault === 'pause') redis.pause();
            else void redis.kill();
          },
          async () => {
            if (s.fault === 'pause') redis.resume();
            else await redis.restart();
            note(`node ${s.node}: ${s.fault === 'pause' ? 'resumed' : 'restarted'}`);
          },
        );
        break;
      }
      case 'stall': {
        const child = env.actors[s.actor]?.child;
        if (!child) break;
        let from = 0;
        startFault(
          `actor:${s.actor}`,
          s.durationMs,
          () => {
            from = sharedNow();
            child.kill('SIGSTOP');
          },
          async () => {
            child.kill('SIGCONT');
            stops.push({ actor: s.actor, from, to: sharedNow() });
          },
        );
        break;
      }
    }
    await sleep(s.gapMs);
  }
  // Everything heals, then the actors settle their calls, release what they hold, and report.
  await Promise.all([...faults.keys()].map(endFault));
  note('all healed');
  const replies = await Promise.all(
    env.actors.map((a) => ask(a, { cmd: 'finish', settleMs: SETTLE_MS }, 'history', 3 * SETTLE_MS)),
  );
  const histories: ActorHistory[] = replies.map((r) => r.history);
  return {
    locks: histories.flatMap((h) => h.locks),
    calls: histories.flatMap((h) => h.calls),
    escaped: histories.flatMap((h) => h.escaped),
    stops,
    notes,
  };
}
