/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by group (our lock engine, our
 * pipeline / runtime, AWS SDK middleware, ioredis, winston, timers, ...) and the top functions, in µs
 * per message when the message count is given, and the difference against a baseline profile.
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/worker.ts --only=pipeline --pollers=2
 *   node bench/profile-summary.ts /tmp/prof/CPU.*.cpuprofile --messages=15400
 *   node bench/profile-summary.ts pipeline.cpuprofile --messages=15400 --base=nolock.cpuprofile --base-messages=15400
 *
 * Self time of a builtin or native frame (no script URL: JSON.parse, Array.prototype.map, a Map lookup)
 * is charged to the nearest caller that has one, so "ioredis" includes the builtins ioredis calls.
 * (garbage collector), (program) and (idle) stay on their own.
 */
import { readFileSync } from 'node:fs';
import { flagValue, fmt, markdownTable } from './shared.ts';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: number[];
}

interface CpuProfile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
  readonly startTime: number;
  readonly endTime: number;
}

/** Groups, first match wins (on the frame's script URL). */
const GROUPS: readonly (readonly [string, RegExp])[] = [
  ['our lock engine (src/lock)', /\/src\/lock\//],
  ['our pipeline / handler (src/handler)', /\/src\/handler\//],
  ['our runtime (src/runtime)', /\/src\/runtime\//],
  ['our observability (src/observability)', /\/src\/observability\//],
  ['our other src', /\/src\//],
  ['bench harness (bench/, test/helpers)', /\/bench\/|\/test\/helpers\//],
  ['fauxqs (in-process SQS emulator)', /node_modules\/fauxqs\//],
  ['sqs-consumer', /node_modules\/sqs-consumer\//],
  ['AWS SDK / smithy middleware', /node_modules\/@(aws-sdk|smithy|aws-crypto)\//],
  [
    'ioredis (encoding, parsing, commands)',
    /node_modules\/(ioredis|@ioredis|redis-parser|redis-errors|denque|cluster-key-slot|standard-as-callback)\//,
  ],
  ['redis-semaphore / sesame', /node_modules\/(redis-semaphore|@sesamecare-oss)\//],
  [
    'winston / logform',
    /node_modules\/(winston|winston-transport|logform|triple-beam|@colors|safe-stable-stringify|readable-stream)\//,
  ],
  ['other node_modules', /node_modules\//],
  ['timers (node:internal/timers)', /^node:internal\/timers|^node:timers/],
  ['events / AbortController (node)', /^node:(internal\/)?(events|abort_controller|event_target)/],
  [
    'net / streams / http (node)',
    /^node:(internal\/)?(net|stream|streams|http|_http|https|dns|tls|buffer|url|internal\/stream_base_commons|internal\/js_stream_socket)/,
  ],
  ['promises / async hooks (node)', /^node:internal\/(process\/task_queues|async_hooks|promise)/],
  ['crypto (node)', /^node:(internal\/)?crypto/],
  ['other node internals', /^node:/],
];

function groupOf(url: string): string {
  for (const [name, pattern] of GROUPS) if (pattern.test(url)) return name;
  return url === '' ? '(no script)' : `other: ${url}`;
}

interface Summary {
  /** µs of self time by group. */
  readonly groups: Map<string, number>;
  /** µs of self time by function ("name url:line"). */
  readonly functions: Map<string, { us: number; group: string }>;
  readonly totalUs: number;
}

export function summarise(profile: CpuProfile): Summary {
  const byId = new Map<number, ProfileNode>();
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parentOf.set(child, node.id);
  }
  const SPECIAL = new Set(['(garbage collector)', '(program)', '(idle)', '(root)']);
  // The frame a node's self time is charged to: itself, or its nearest caller with a script URL.
  const chargedTo = new Map<number, ProfileNode>();
  const charge = (id: number): ProfileNode => {
    const cached = chargedTo.get(id);
    if (cached) return cached;
    const node = byId.get(id) as ProfileNode;
    let target = node;
    if (node.callFrame.url === '' && !SPECIAL.has(node.callFrame.functionName)) {
      const parent = parentOf.get(id);
      if (parent !== undefined) {
        const up = charge(parent);
        if (up.callFrame.functionName !== '(root)') target = up;
      }
    }
    chargedTo.set(id, target);
    return target;
  };
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    // timeDeltas[i] is the time before sample i; the sample stands for the interval that follows it.
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  });
  const groups = new Map<string, number>();
  const functions = new Map<string, { us: number; group: string }>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const frame = charge(id).callFrame;
    const special = SPECIAL.has(frame.functionName);
    if (frame.functionName === '(idle)') continue;
    const group = special ? frame.functionName : groupOf(frame.url);
    totalUs += us;
    groups.set(group, (groups.get(group) ?? 0) + us);
    const where = frame.url.replace(/^file:\/\/.*?\/(node_modules|src|bench|test)\//, '$1/');
    const name = special
      ? frame.functionName
      : `${frame.functionName || '(anonymous)'} ${where}:${frame.lineNumber + 1}`;
    const entry = functions.get(name) ?? { us: 0, group };
    entry.us += us;
    functions.set(name, entry);
  }
  return { groups, functions, totalUs };
}

function load(path: string): CpuProfile {
  return JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
}

const flag = (argv: readonly string[], name: string): string | undefined => flagValue(name, argv);

function main(): void {
  const argv = process.argv.slice(2);
  const paths = argv.filter((a) => !a.startsWith('--'));
  if (paths.length === 0)
    throw new Error(
      'usage: profile-summary.ts PROFILE... [--messages=N] [--base=PROFILE --base-messages=N] [--top=N] [--group=TEXT --group-top=N]',
    );
  const messages = Number(flag(argv, 'messages') ?? 1);
  const top = Number(flag(argv, 'top') ?? 25);
  const basePath = flag(argv, 'base');
  const baseMessages = Number(flag(argv, 'base-messages') ?? messages);
  const merge = (summaries: Summary[]): Summary => {
    const groups = new Map<string, number>();
    const functions = new Map<string, { us: number; group: string }>();
    let totalUs = 0;
    for (const s of summaries) {
      totalUs += s.totalUs;
      for (const [g, us] of s.groups) groups.set(g, (groups.get(g) ?? 0) + us);
      for (const [f, e] of s.functions) {
        const entry = functions.get(f) ?? { us: 0, group: e.group };
        entry.us += e.us;
        functions.set(f, entry);
      }
    }
    return { groups, functions, totalUs };
  };
  const s = merge(paths.map((p) => summarise(load(p))));
  const base = basePath ? summarise(load(basePath)) : undefined;
  const unit = messages > 1 ? 'µs/msg' : 'µs';
  const per = (us: number): number => us / messages;
  const basePer = (us: number): number => us / baseMessages;
  const groupNames = [...new Set([...s.groups.keys(), ...(base?.groups.keys() ?? [])])].sort(
    (a, b) => (s.groups.get(b) ?? 0) - (s.groups.get(a) ?? 0),
  );
  const groupRows = groupNames.map((g) => {
    const us = per(s.groups.get(g) ?? 0);
    const row = [g, fmt(us, 1), `${fmt(((s.groups.get(g) ?? 0) / s.totalUs) * 100, 1)}%`];
    if (base) {
      const b = basePer(base.groups.get(g) ?? 0);
      row.push(fmt(b, 1), fmt(us - b, 1));
    }
    return row;
  });
  const headers = ['group (self time, builtins charged to their caller)', unit, 'share'];
  if (base) headers.push(`base ${unit}`, `added ${unit}`);
  const totalRow = ['total (idle left out)', fmt(per(s.totalUs), 1), '100%'];
  if (base) totalRow.push(fmt(basePer(base.totalUs), 1), fmt(per(s.totalUs) - basePer(base.totalUs), 1));
  console.log(markdownTable(headers, [...groupRows, totalRow], ['left', 'right', 'right', 'right', 'right']));
  console.log('');
  const fnRows = [...s.functions.entries()]
    .sort(([, a], [, b]) => b.us - a.us)
    .slice(0, top)
    .map(([name, e]) => [name, e.group, fmt(per(e.us), 2), `${fmt((e.us / s.totalUs) * 100, 1)}%`]);
  console.log(
    markdownTable(['function', 'group', unit, 'share'], fnRows, ['left', 'left', 'right', 'right']),
  );
  const groupFilter = flag(argv, 'group');
  if (groupFilter) {
    console.log('');
    const rows = [...s.functions.entries()]
      .filter(([, e]) => e.group.includes(groupFilter))
      .sort(([, a], [, b]) => b.us - a.us)
      .slice(0, Number(flag(argv, 'group-top') ?? 25))
      .map(([name, e]) => [name, fmt(per(e.us), 2), `${fmt((e.us / s.totalUs) * 100, 1)}%`]);
    console.log(
      markdownTable([`function in "${groupFilter}"`, unit, 'share'], rows, ['left', 'right', 'right']),
    );
  }
}

main();
