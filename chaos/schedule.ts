/**
 * Everything the chaos run decides in advance, from its seed alone: the messages (which are poison,
 * which throw on their first deliveries, how long each one works) and the fault schedule (kinds, times,
 * targets, durations). Same seed and profile, same plan; only the interleavings of real processes vary.
 *
 * Imported by the handler (chaos/handler.ts) for `unitHash`: keep it free of test and process code.
 */

/** mulberry32: a tiny, fast, well-mixed 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of a string, 32 bits. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A float in [0, 1) that depends only on the seed and the key: the same run of the same message decides alike. */
export function unitHash(seed: number, key: string): number {
  return mulberry32((fnv1a(key) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0)();
}

/** Parses `--seed`: decimal or 0x-hex, as an unsigned 32-bit integer. */
export function parseSeed(text: string): number {
  const value = /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text.slice(2), 16) : Number(text);
  if (!Number.isSafeInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(
      `--seed must be an integer between 0 and ${0xffffffff} (or 0x-hex), got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

export type ProfileName = 'short' | 'full';

export interface FaultCounts {
  /** Kill (SIGKILL) a minority of Redis nodes, restart them after a while (AOF: they keep their data). */
  readonly redisKill: number;
  /** SIGSTOP a minority of Redis nodes, SIGCONT after a while. */
  readonly redisPause: number;
  /** Take a majority down (some killed, some paused) for a few seconds: no quorum, then it comes back. */
  readonly quorumLoss: number;
  /** SIGKILL a worker process mid-handle; a replacement is started. */
  readonly workerKill: number;
  /** SIGSTOP a worker mid-handle past its lock TTL and visibility (the GC-pause story), then SIGCONT. */
  readonly gcPause: number;
}

export interface Profile {
  readonly name: ProfileName;
  readonly workers: number;
  readonly messages: number;
  readonly nodes: 3 | 5;
  /** Messages are sent at an even pace over this long, so the faults hit a busy system. */
  readonly sendMs: number;
  /** Faults start in [faultStartMs, faultEndMs). */
  readonly faultStartMs: number;
  readonly faultEndMs: number;
  /** The whole run (after start-up) must converge within this, or what is missing counts as lost. */
  readonly durationBudgetMs: number;
  readonly faults: FaultCounts;
  /** Share of messages that are poison (hydrate rejects them: dead-lettered, never handled). */
  readonly poisonRatio: number;
  /** Share of messages whose handler throws on the first delivery (a quarter of them on the second too). */
  readonly throwFirstRatio: number;
  /** Probability that any run (receive count 1 or 2) throws, decided by unitHash(seed, id + receive count). */
  readonly throwP: number;
  /** Share of messages that work long (300 to 1,500 ms) rather than 5 to 80 ms. */
  readonly longWorkRatio: number;
  /**
   * Share of messages that work 2.5 to 5 s, longer than the lock TTL: kept alive by the heartbeat, and
   * what a quorum loss or a lost bare majority catches mid-work (the handler sees its signal abort).
   */
  readonly veryLongWorkRatio: number;
  /** Worker settings. */
  readonly lockTtlMs: number;
  readonly visibilityTimeoutSec: number;
  readonly batchSize: number;
  readonly concurrency: number;
}

export const PROFILES: Readonly<Record<ProfileName, Profile>> = {
  short: {
    name: 'short',
    workers: 3,
    messages: 400,
    nodes: 3,
    sendMs: 12_000,
    faultStartMs: 1_000,
    faultEndMs: 10_000,
    durationBudgetMs: 42_000,
    faults: { redisKill: 1, redisPause: 1, quorumLoss: 1, workerKill: 2, gcPause: 1 },
    poisonRatio: 0.02,
    throwFirstRatio: 0.05,
    throwP: 0.02,
    longWorkRatio: 0.12,
    veryLongWorkRatio: 0.01,
    lockTtlMs: 2_000,
    visibilityTimeoutSec: 3,
    batchSize: 5,
    concurrency: 2,
  },
  full: {
    name: 'full',
    workers: 4,
    messages: 3_000,
    nodes: 5,
    sendMs: 60_000,
    faultStartMs: 2_000,
    faultEndMs: 66_000,
    durationBudgetMs: 150_000,
    faults: { redisKill: 4, redisPause: 4, quorumLoss: 2, workerKill: 6, gcPause: 4 },
    poisonRatio: 0.01,
    throwFirstRatio: 0.05,
    throwP: 0.02,
    longWorkRatio: 0.1,
    veryLongWorkRatio: 0.005,
    lockTtlMs: 2_000,
    visibilityTimeoutSec: 3,
    batchSize: 5,
    concurrency: 2,
  },
};

// ---- messages ----

/** The body of a normal message (the handler's input). */
export interface ChaosJob {
  readonly id: string;
  readonly workMs: number;
  /** Throw on every receive count up to this one (so it succeeds on a later delivery). */
  readonly throwUntil?: number;
}

export interface PlannedMessage {
  /** `m-<i>` for a normal message, `px-<i>` for a poison one. */
  readonly id: string;
  readonly poison: boolean;
  readonly body: string;
}

/**
 * The messages, in sending order. Poison bodies carry their id so the dead-letter queue can be checked:
 * half are JSON without an `id` (hydrate returns null), half are not JSON at all (hydrate throws).
 */
export function planMessages(seed: number, profile: Profile, count = profile.messages): PlannedMessage[] {
  const random = mulberry32(seed ^ 0x5eed0001);
  const poisonCount = Math.max(2, Math.round(count * profile.poisonRatio));
  const poisonAt = new Set(shuffle(random, [...Array(count).keys()]).slice(0, poisonCount));
  const out: PlannedMessage[] = [];
  for (let i = 0; i < count; i++) {
    if (poisonAt.has(i)) {
      const id = `px-${i}`;
      const body =
        out.filter((m) => m.poison).length % 2 === 0 ? JSON.stringify({ poison: id }) : `not json: ${id}`;
      out.push({ id, poison: true, body });
      continue;
    }
    const id = `m-${i}`;
    const kind = random();
    const workMs =
      kind < profile.veryLongWorkRatio
        ? 2_500 + Math.floor(random() * 2_500)
        : kind < profile.veryLongWorkRatio + profile.longWorkRatio
          ? 300 + Math.floor(random() * 1_200)
          : 5 + Math.floor(random() * 75);
    const job: ChaosJob =
      random() < profile.throwFirstRatio
        ? { id, workMs, throwUntil: random() < 0.25 ? 2 : 1 }
        : { id, workMs };
    out.push({ id, poison: false, body: JSON.stringify(job) });
  }
  return out;
}

// ---- faults ----

/** A fault on Redis quorum nodes. */
export interface RedisFault {
  readonly kind: 'redis-kill' | 'redis-pause' | 'quorum-loss';
  /** Planned start, in ms after the run started. */
  readonly atMs: number;
  /** Node indexes, with what happens to each: a quorum loss mixes kills and pauses. */
  readonly targets: readonly { readonly node: number; readonly action: 'kill' | 'pause' }[];
  /** How long the nodes stay down. */
  readonly downMs: number;
}

/** A fault on a worker process. */
export interface WorkerFault {
  readonly kind: 'worker-kill' | 'gc-pause';
  readonly atMs: number;
  /** Worker slot (a replacement takes over the slot of a killed worker). */
  readonly worker: number;
}

export type Fault = RedisFault | WorkerFault;

export function isWorkerFault(fault: Fault): fault is WorkerFault {
  return fault.kind === 'worker-kill' || fault.kind === 'gc-pause';
}

export type FaultKind = Fault['kind'];

export const FAULT_KINDS: readonly FaultKind[] = [
  'redis-kill',
  'redis-pause',
  'quorum-loss',
  'worker-kill',
  'gc-pause',
];

/**
 * Three tracks, each running its faults one after another (a fault that is late starts when the one
 * before it ends), side by side with the others.
 */
export interface Schedule {
  /** Redis faults: so at most a minority is down, except in a quorum-loss window. */
  readonly redis: readonly RedisFault[];
  /** Worker kills. */
  readonly kills: readonly WorkerFault[];
  /** GC pauses (a kill never targets the frozen worker: it takes the next one). */
  readonly pauses: readonly WorkerFault[];
}

/**
 * The fault schedule. Each track's fault window is cut into equal slots, one fault per slot, started in
 * the first half of its slot so it normally ends within it.
 */
export function planFaults(seed: number, profile: Profile): Schedule {
  const random = mulberry32(seed ^ 0x5eed0002);
  const n = profile.nodes;
  const quorum = Math.floor(n / 2) + 1;
  const minority = n - quorum;
  const f = profile.faults;

  const redisKinds = shuffle(random, [
    ...Array<FaultKind>(f.redisKill).fill('redis-kill'),
    ...Array<FaultKind>(f.redisPause).fill('redis-pause'),
    ...Array<FaultKind>(f.quorumLoss).fill('quorum-loss'),
  ]);
  const redis = slots(random, profile, redisKinds.length).map((atMs, i): RedisFault => {
    const kind = redisKinds[i] as 'redis-kill' | 'redis-pause' | 'quorum-loss';
    const nodes = shuffle(random, [...Array(n).keys()]);
    if (kind === 'quorum-loss') {
      // A majority down: at least one killed and one paused, so both kinds of silence are seen at once.
      const targets = nodes
        .slice(0, quorum)
        .map((node, j) => ({ node, action: j % 2 === 0 ? ('kill' as const) : ('pause' as const) }));
      return { kind, atMs, targets, downMs: 2_000 + Math.floor(random() * 1_500) };
    }
    const count = 1 + Math.floor(random() * minority);
    const action = kind === 'redis-kill' ? ('kill' as const) : ('pause' as const);
    const targets = nodes.slice(0, count).map((node) => ({ node, action }));
    const downMs =
      kind === 'redis-kill' ? 1_000 + Math.floor(random() * 2_000) : 800 + Math.floor(random() * 1_700);
    return { kind, atMs, targets, downMs };
  });

  const workerTrack = (kind: WorkerFault['kind'], count: number): WorkerFault[] =>
    slots(random, profile, count).map((atMs) => ({
      kind,
      atMs,
      worker: Math.floor(random() * profile.workers),
    }));
  return {
    redis,
    kills: workerTrack('worker-kill', f.workerKill),
    pauses: workerTrack('gc-pause', f.gcPause),
  };
}

function slots(random: () => number, profile: Profile, count: number): number[] {
  if (count === 0) return [];
  const width = (profile.faultEndMs - profile.faultStartMs) / count;
  return Array.from({ length: count }, (_, i) =>
    Math.round(profile.faultStartMs + i * width + random() * width * 0.5),
  );
}

function shuffle<T>(random: () => number, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

export function allFaults(schedule: Schedule): Fault[] {
  return [...schedule.redis, ...schedule.kills, ...schedule.pauses].sort((a, b) => a.atMs - b.atMs);
}

/** One line per fault, for the printed schedule. */
export function describeFault(fault: Fault): string {
  const at = `${(fault.atMs / 1000).toFixed(1).padStart(5)} s`;
  if (isWorkerFault(fault)) {
    const what =
      fault.kind === 'worker-kill'
        ? 'SIGKILL mid-handle, then start a replacement'
        : 'SIGSTOP mid-handle past the lock TTL and visibility, SIGCONT once its messages were taken over';
    return `${at}  ${fault.kind.padEnd(11)} worker #${fault.worker}: ${what}`;
  }
  const targets = fault.targets.map((t) => `${t.action} node ${t.node}`).join(', ');
  return `${at}  ${fault.kind.padEnd(11)} ${targets} for ${(fault.downMs / 1000).toFixed(1)} s`;
}
