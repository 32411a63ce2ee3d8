// Cold against post-copy on the local test hosts (network namespaces; this kernel has no
// dirty tracking, so no pre-copy or hybrid here: those are in bench/vm.ts). For each
// Redis size each run migrates once by each method, in an order rotated run by run:
//   cold       migrate --one-shot (transport auto: tls above 48 MiB)
//   post-copy  migrate --post-copy --tune-sysctl
// Both move the service address (--move-ip), and a client PINGs Redis on it every 10 ms
// over one connection from a third namespace. Per run: the client's longest gap, the
// tool's freeze-to-running, the lazy window, total time, and the client's request latency
// (p50/p99) for the requests sent during the lazy window (from the end of the client's
// longest gap, when the destination answers, for the window's length). Every run checks
// DBSIZE on the destination.
//
//   node dist/bench/postcopy.js            (as root; make build first)
// Environment: SIZES (MB of Redis values, default "64 256 1024"; the results file keeps
// the runs of other sizes), RUNS (default 5),
// SLOW=1: the hosts' link limited to 100 Mbit/s each way (tbf on both hosts' eth0; this
// kernel has no netem, so no added delay), OUT (default bench/results), TAG (default
// "postcopy", or "postcopy-slow" with SLOW=1).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  type Hosts,
  ROOT,
  baseArgs,
  clientProcess,
  migrate,
  ns,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
} from '../test/e2e/hosts.js';
import { cell, percentile, ratio, rotation, summarize, windowLatencies } from './lib/stats.js';

const METHODS = ['cold', 'post-copy'] as const;
type Method = (typeof METHODS)[number];

interface Run {
  sizeMb: number;
  method: Method;
  rep: number;
  clientGapMs?: number;
  reconnects?: number;
  downtimeMs?: number;
  windowMs?: number;
  pagesOnDemand?: number;
  pagesPushed?: number;
  /** Client request latency during the lazy window, ms. */
  p50Ms?: number;
  p99Ms?: number;
  totalMs: number;
  memoryBytes?: number;
  /** When it ended (ISO). */
  at?: string;
  ok: boolean;
  note?: string;
}

const env = process.env;
const SIZES = (env.SIZES ?? '64 256 1024').split(/\s+/).filter(Boolean).map(Number);
const RUNS = Number(env.RUNS ?? 5);
const SLOW = env.SLOW === '1';
const OUT = path.resolve(env.OUT ?? path.join(ROOT, 'bench/results'));
const TAG = env.TAG ?? (SLOW ? 'postcopy-slow' : 'postcopy');
const NAME = 'bench-pc';
const PROBE = path.join(ROOT, 'dist/bench/probe.js');
const log = (s: string) => process.stderr.write(s + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let h: Hosts;

async function redis(side: 'src' | 'dst', ...args: string[]): Promise<string> {
  return (await sh([...ns(side), 'redis-cli', '-h', '127.0.0.1', ...args])).stdout.trim();
}

async function slowLink(on: boolean): Promise<void> {
  for (const n of ['src', 'dst'] as const) {
    await sh([...ns(n), 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root'], { reject: false });
    if (on)
      await sh([
        ...ns(n),
        'tc',
        'qdisc',
        'add',
        'dev',
        'eth0',
        'root',
        'tbf',
        'rate',
        '100mbit',
        'burst',
        '64kb',
        'latency',
        '400ms',
      ]);
  }
}

async function oneRun(sizeMb: number, method: Method, rep: number): Promise<Run> {
  await removeEverywhere(h, NAME);
  await serviceAddressOnSource(h);
  const b = await startExample(h, 'redis', NAME);
  await waitFor('redis', async () =>
    (await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'ping'], { reject: false })).stdout.includes('PONG'),
  );
  const keys = sizeMb * 1000;
  await redis('src', 'debug', 'populate', String(keys), 'k', '1000');
  const { proc, connected } = clientProcess(PROBE, [
    'watch',
    h.serviceAddr,
    '6379',
    '--every',
    '10',
    '--cmd',
    'ping',
    '--samples',
  ]);
  await connected;
  await sleep(500);
  const t0 = performance.now();
  const flags = method === 'cold' ? ['--one-shot'] : ['--post-copy', '--tune-sysctl'];
  const r = await migrate(
    [...baseArgs(h, NAME, b.dst), ...flags, '--no-sync-rootfs', '--move-ip', `${h.serviceAddr}/32`, '--json'],
    {},
    900_000,
  );
  const totalMs = performance.now() - t0;
  // The client's connection resumes at its next retransmission: after a long blackout
  // TCP's backoff puts that up to a minute past the restore (a 100 s cold move at 1 GB).
  // Its gap is known only once it is answered again: wait for it on the destination.
  if (r.code === 0) {
    await waitFor(
      'the client to be answered by the destination',
      async () => /\bidle=0\b.*\bcmd=ping\b/.test(await redis('dst', 'client', 'list').catch(() => '')),
      150_000,
    ).catch(() => log('the client was not answered within 150 s of the end'));
  }
  await sleep(1000);
  proc.kill('SIGTERM');
  const seen = JSON.parse(
    String((await proc).stdout)
      .trim()
      .split('\n')
      .pop()!,
  ) as { maxGapMs: number; gapEndsAtMs: number; reconnects: number; samples: Array<[number, number]> };
  const rep0 = r.stdout ? JSON.parse(r.stdout) : {};
  let ok = r.code === 0 && (await status(h.srcRoot, NAME)) === 'absent';
  let note = r.code ? `exit ${r.code}: ${r.stderr.slice(-300)}` : undefined;
  if (ok) {
    const n = Number(await redis('dst', 'dbsize'));
    if (n !== keys) (ok = false), (note = `destination DBSIZE ${n}, expected ${keys}`);
  }
  const windowMs: number | undefined = rep0.postCopy?.windowMs;
  const inWindow = windowLatencies(seen.samples, seen.gapEndsAtMs, windowMs);
  const run: Run = {
    sizeMb,
    method,
    rep,
    clientGapMs: seen.maxGapMs,
    reconnects: seen.reconnects,
    downtimeMs: rep0.downtimeMs,
    windowMs,
    pagesOnDemand: rep0.postCopy?.pagesOnDemand,
    pagesPushed: rep0.postCopy?.pagesPushed,
    p50Ms: percentile(inWindow, 50),
    p99Ms: percentile(inWindow, 99),
    totalMs,
    memoryBytes: rep0.memoryBytes,
    at: new Date().toISOString(),
    ok,
    note,
  };
  log(
    `${sizeMb} MB ${method} #${rep + 1}: ${ok ? 'ok' : 'FAILED ' + note} gap ${seen.maxGapMs} ms, freeze-to-running ${Math.round(rep0.downtimeMs ?? NaN)} ms, window ${Math.round(windowMs ?? NaN)} ms (p50 ${run.p50Ms ?? '-'} p99 ${run.p99Ms ?? '-'} ms over ${inWindow.length} requests), total ${Math.round(totalMs)} ms`,
  );
  await removeEverywhere(h, NAME);
  return run;
}

function write(runs: Run[], began: Date): void {
  const good = runs.filter((r) => r.ok);
  const sizes = [...new Set(runs.map((r) => r.sizeMb))].sort((a, b) => a - b);
  const pick = (s: number, m: Method, f: (r: Run) => number | undefined) =>
    good
      .filter((r) => r.sizeMb === s && r.method === m)
      .map(f)
      .filter((x): x is number => x !== undefined && Number.isFinite(x));
  let md = `# Cold against post-copy (namespace hosts${SLOW ? ', 100 Mbit/s link' : ''})\n\n`;
  md += `Hosts: the local test hosts (network namespaces on one machine, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, kernel ${os.release()}; runc and CRIU as installed by test/hosts). `;
  md += `${SLOW ? "Link: tbf at 100 Mbit/s on both hosts' eth0 (this kernel has no netem: no delay added). " : ''}${RUNS} runs per point, methods alternating. ${sizes.filter((x) => !SIZES.includes(x)).length ? `Sizes ${SIZES.join(', ')} MB run from ${began.toISOString().slice(0, 16)}Z; the others kept from an earlier run (each run's time, where recorded, is its \`at\` in the jsonl)` : `Run ${began.toISOString().slice(0, 16)}Z`}.\n\n`;
  md +=
    "Cells: median (min-max). *client gap*: longest time between two answers to a PING sent every 10 ms on one connection to the moved service address. *freeze-to-running*: the tool's downtime. ";
  md +=
    '*window*: the lazy window (restore to last page). *p50/p99*: latency of the PINGs sent during the window. *total*: command start to exit. Every run checked DBSIZE on the destination.\n\n';
  const failed = runs.filter((r) => !r.ok);
  if (failed.length)
    md += `Failed runs (left out): ${failed.map((r) => `${r.sizeMb} MB ${r.method} #${r.rep + 1}: ${r.note}`).join('; ')}\n\n`;
  md +=
    '| Redis | method | memory, MiB | client gap, ms | freeze-to-running, ms | window, ms | p50 in window, ms | p99 in window, ms | pages on demand | pages pushed | total, ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n';
  for (const s of sizes) {
    for (const m of METHODS) {
      const mem = summarize(pick(s, m, (r) => (r.memoryBytes ?? NaN) / 1048576)).median;
      md += `| ${s} MB | ${m} | ${Number.isFinite(mem) ? mem.toFixed(0) : '-'} | ${cell(pick(s, m, (r) => r.clientGapMs))} | ${cell(pick(s, m, (r) => r.downtimeMs))} | ${cell(pick(s, m, (r) => r.windowMs))} | ${cell(
        pick(s, m, (r) => r.p50Ms),
        1,
      )} | ${cell(
        pick(s, m, (r) => r.p99Ms),
        1,
      )} | ${cell(pick(s, m, (r) => r.pagesOnDemand))} | ${cell(pick(s, m, (r) => r.pagesPushed))} | ${cell(pick(s, m, (r) => r.totalMs))} |\n`;
    }
  }
  const smallest = Math.min(...sizes);
  const largest = Math.max(...sizes);
  md += `\nPost-copy's client gap at ${largest} MB against ${smallest} MB: ${ratio(
    pick(largest, 'post-copy', (r) => r.clientGapMs),
    pick(smallest, 'post-copy', (r) => r.clientGapMs),
  )} (cold: ${ratio(
    pick(largest, 'cold', (r) => r.clientGapMs),
    pick(smallest, 'cold', (r) => r.clientGapMs),
  )}).\n`;
  md += `Post-copy against cold, client gap: ${sizes
    .map(
      (s) =>
        `${s} MB ${ratio(
          pick(s, 'post-copy', (r) => r.clientGapMs),
          pick(s, 'cold', (r) => r.clientGapMs),
        )}`,
    )
    .join(', ')}.\n`;
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), md);
  fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

async function main(): Promise<void> {
  const began = new Date();
  // The runs of other sizes in the results file are kept (a size can be added later).
  const file = path.join(OUT, `${TAG}.jsonl`);
  const runs: Run[] = fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Run)
        .filter((r) => !SIZES.includes(r.sizeMb))
    : [];
  h = await setupHosts();
  await slowLink(SLOW);
  try {
    for (const s of SIZES) {
      for (let rep = 0; rep < RUNS; rep++) {
        for (const m of rotation(METHODS, rep)) {
          runs.push(await oneRun(s, m, rep));
          write(runs, began);
        }
      }
    }
  } finally {
    await slowLink(false);
    await removeEverywhere(h, NAME);
  }
  write(runs, began);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
