// Downtime against the alternatives, on the local test hosts (network namespaces, this
// machine's kernel: one-shot only). For each workload and size, each run tries every
// method once, in an order rotated run by run:
//   naive         runc checkpoint to disk, scp -r of the images, runc restore (new SSH
//                 connections as a by-hand script makes them)
//   raw-stream    the same runc/CRIU commands as ours with --transport stream, by hand:
//                 images in tmpfs, tar over one SSH connection opened before the freeze
//   raw-direct    ditto with --transport direct: criu page-server on the destination,
//                 pages over plain TCP, the rest by tar
//   raw-tls       raw-direct with CRIU's TLS (certificates made before the freeze)
//   raw-direct-held  raw-direct with the source held frozen, its memory kept, until the
//                 restore returned (an action script at post-dump, as the tool's hold)
//   ours-tls, ours-tunnel, ours-direct, ours-stream, ours-auto
//                 migrate --one-shot --transport ... --no-sync-rootfs (the scripts move no
//                 files either; the sync's own cost is in files.md)
// Every method moves the service address with the container (by hand in the scripts), so
// the same client can follow it. Per run it records the client's longest gap between
// answers (a Redis PING every 10 ms from another namespace), freeze-to-running (ours: the
// tool's report; scripts: checkpoint start to restore exit), total wall time and bytes
// moved, and checks the state moved: the destination's DBSIZE (or counter) continued.
// Also the start-up cost: CLI invoked to first remote command.
//
//   node dist/bench/compare.js            (as root; make build first)
// Environment: SIZES (MB of Redis values, default "16 256 1024"), RUNS (default 5),
// METHODS (default: naive raw-direct raw-tls ours-tls ours-tunnel ours-direct; also
// raw-stream raw-direct-held ours-stream ours-auto), COUNTER=0 skips the counter, STARTUP=0 skips start-up, OUT (results
// directory, default bench/results), TAG (file name stem, default "compare"), ECHO=1 adds
// the echo server (tiny, a line every 10 ms from the client, which must keep its
// connection; SIZES= with it runs no Redis).
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeCriuLockRules } from '../src/migration/network/netlock.js';
import {
  type Hosts,
  ROOT,
  baseArgs,
  clientProcess,
  migrate,
  ns,
  readCounter,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
} from '../test/e2e/hosts.js';
import { plot } from './lib/plot.js';
import { cell, mib, ratio, rotation, summarize } from './lib/stats.js';

const METHODS = [
  'naive',
  'raw-stream',
  'raw-direct',
  'raw-direct-held',
  'raw-tls',
  'ours-tls',
  'ours-tunnel',
  'ours-direct',
  'ours-stream',
  'ours-auto',
] as const;
type Method = (typeof METHODS)[number];
const DEFAULT_METHODS: Method[] = ['naive', 'raw-direct', 'raw-tls', 'ours-tls', 'ours-tunnel', 'ours-direct'];

interface Run {
  workload: string;
  sizeMb: number;
  method: Method;
  rep: number;
  clientGapMs?: number;
  clientReconnects?: number;
  downtimeMs: number;
  /** Freeze to the dump written (ours: the dump phase; scripts: until runc checkpoint returned). */
  dumpMs?: number;
  /** Ours: the tool's phases, ms. */
  phases?: Record<string, number>;
  /** Ours: the downtime's parts as the report gives them (dump: its frozen part only). */
  parts?: Record<string, number>;
  /** Ours: CRIU's figures for the final dump (stats-dump). */
  finalDump?: { frozenTimeUs: number; memdumpTimeUs: number; memwriteTimeUs: number; pagesWritten: number };
  /** Ours: the transport the tool used (ours-auto's choice). */
  transport?: string;
  totalMs: number;
  bytes?: number;
  memoryBytes?: number;
  ok: boolean;
  note?: string;
}

const env = process.env;
const SIZES = (env.SIZES ?? '16 256 1024').split(/\s+/).filter(Boolean).map(Number);
const RUNS = Number(env.RUNS ?? 5);
const methods = (env.METHODS ? env.METHODS.split(/\s+/) : DEFAULT_METHODS) as Method[];
for (const m of methods) if (!METHODS.includes(m)) throw new Error(`unknown method ${m}: one of ${METHODS.join(' ')}`);
const OUT = path.resolve(env.OUT ?? path.join(ROOT, 'bench/results'));
const TAG = env.TAG ?? 'compare';
const NAME = 'bench-redis';
const PROBE = path.join(ROOT, 'dist/bench/probe.js');
const SCRIPTS = path.join(ROOT, 'bench/scripts');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(s + '\n');

let h: Hosts;
const svc = () => `${h.serviceAddr}/32`;

/** The scripts leave CRIU's lock rules on the source (ours removes them at commit). */
const clearLockRules = () =>
  removeCriuLockRules(async (argv) => {
    const r = await sh([...ns('src'), ...argv], { reject: false });
    return { code: r.exitCode ?? null, stdout: String(r.stdout) };
  });

async function redisCli(side: 'src' | 'dst', ...args: string[]): Promise<string> {
  return (await sh([...ns(side), 'redis-cli', '-h', '127.0.0.1', ...args])).stdout.trim();
}

interface Probe {
  stop(): Promise<{ maxGapMs: number; reconnects: number; answered: number }>;
}

type Workload = 'redis' | 'counter' | 'echo';

/** The client's requests: a Redis PING, or a line to the echo server. */
async function startProbe(workload: Workload): Promise<Probe> {
  const target =
    workload === 'echo' ? ['7777', '--every', '10', '--cmd', 'echo'] : ['6379', '--every', '10', '--cmd', 'ping'];
  const { proc, connected } = clientProcess(PROBE, ['watch', h.serviceAddr, ...target]);
  await connected;
  return {
    async stop() {
      proc.kill('SIGTERM');
      const r = await proc;
      return JSON.parse(String(r.stdout).trim().split('\n').pop()!);
    },
  };
}

/** A workload ready on the source: the container running, Redis filled, the address there. */
async function prepare(workload: Workload, sizeMb: number): Promise<{ dstBundle: string; keys: number }> {
  await removeEverywhere(h, NAME);
  await clearLockRules();
  await serviceAddressOnSource(h);
  const b = await startExample(h, workload, NAME);
  if (workload === 'counter') {
    await waitFor('the counter', async () => (await readCounter(b.src)) > 1);
    return { dstBundle: b.dst, keys: 0 };
  }
  if (workload === 'echo') {
    await waitFor('the echo server', async () =>
      (await sh([...ns('src'), 'ss', '-Hltn', 'sport', '=', ':7777'], { reject: false })).stdout.includes('7777'),
    );
    return { dstBundle: b.dst, keys: 0 };
  }
  await waitFor('redis', async () =>
    (await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'ping'], { reject: false })).stdout.includes('PONG'),
  );
  const keys = sizeMb * 1000;
  await redisCli('src', 'debug', 'populate', String(keys), 'k', '1000');
  return { dstBundle: b.dst, keys };
}

function scriptEnv(dstBundle: string, tcp: boolean): Record<string, string> {
  return {
    NAME,
    DST: h.dstAddr,
    KEY: h.key,
    KNOWN_HOSTS: h.knownHosts,
    SRC_ROOT: h.srcRoot,
    DST_ROOT: h.dstRoot,
    BUNDLE: dstBundle,
    SVC: tcp ? svc() : '',
    TCP: tcp ? '--tcp-established' : '',
  };
}

async function runMethod(
  method: Method,
  dstBundle: string,
  tcp: boolean,
): Promise<
  Pick<
    Run,
    | 'downtimeMs'
    | 'dumpMs'
    | 'phases'
    | 'parts'
    | 'finalDump'
    | 'transport'
    | 'totalMs'
    | 'bytes'
    | 'memoryBytes'
    | 'ok'
    | 'note'
  >
> {
  const t0 = performance.now();
  if (method.startsWith('ours-')) {
    const args = [
      ...baseArgs(h, NAME, dstBundle),
      '--one-shot',
      '--transport',
      method.slice(5),
      '--no-sync-rootfs',
      '--json',
    ];
    if (tcp) args.push('--move-ip', svc());
    const r = await migrate(args, {}, 600_000);
    const totalMs = performance.now() - t0;
    const rep = r.stdout ? JSON.parse(r.stdout) : {};
    const phases: Record<string, number> = {};
    for (const p of rep.phases ?? []) if (!p.name.startsWith('preflight:')) phases[p.name] = p.ms;
    return {
      downtimeMs: rep.downtimeMs,
      dumpMs: phases.dump,
      phases,
      parts: rep.downtimeParts,
      finalDump: rep.finalDump,
      transport: rep.transport,
      totalMs,
      bytes: rep.bytesMoved,
      memoryBytes: rep.memoryBytes,
      ok: r.code === 0,
      note: r.code ? `exit ${r.code}: ${r.stderr.slice(-300)}` : undefined,
    };
  }
  const r = await execa(ns('src')[0], [...ns('src').slice(1), 'bash', path.join(SCRIPTS, `${method}.sh`)], {
    reject: false,
    stdin: 'ignore',
    env: scriptEnv(dstBundle, tcp),
    timeout: 600_000,
  });
  const totalMs = performance.now() - t0;
  const mark = (k: string) => Number(String(r.stdout).match(new RegExp(`^${k} (\\d+)`, 'm'))?.[1]) / 1e6;
  const bytes = Number(String(r.stdout).match(/^BYTES (\d+)/m)?.[1]);
  return {
    downtimeMs: mark('T_RUNNING') - mark('T_FREEZE'),
    dumpMs: mark('T_DUMPED') - mark('T_FREEZE'),
    totalMs,
    bytes: Number.isFinite(bytes) ? bytes : undefined,
    ok: r.exitCode === 0,
    note: r.exitCode ? `exit ${r.exitCode}: ${String(r.stderr).slice(-300)}` : undefined,
  };
}

async function oneRun(workload: Workload, sizeMb: number, method: Method, rep: number): Promise<Run> {
  const { dstBundle, keys } = await prepare(workload, sizeMb);
  const tcp = workload !== 'counter';
  const before = workload === 'counter' ? await readCounter(path.join(h.srcBundles, NAME)) : 0;
  const probe = tcp ? await startProbe(workload) : undefined;
  if (probe) await sleep(500);
  const r = await runMethod(method, dstBundle, tcp);
  if (probe) await sleep(1000);
  const seen = probe ? await probe.stop() : undefined;
  // What moved: the data set whole, or the counter going on from where it was.
  let ok = r.ok && (await status(h.srcRoot, NAME)) === 'absent' && (await status(h.dstRoot, NAME)) === 'running';
  let note = r.note;
  if (ok && workload === 'redis') {
    const n = Number(await redisCli('dst', 'dbsize'));
    if (n !== keys) (ok = false), (note = `destination DBSIZE ${n}, expected ${keys}`);
  }
  // The echo client kept its one connection and was answered through the move.
  if (ok && workload === 'echo' && !(seen && seen.reconnects === 0 && seen.answered > 0))
    (ok = false), (note = `echo client: ${seen?.reconnects} reconnects, ${seen?.answered} answers`);
  if (ok && workload === 'counter') {
    const c = await readCounter(dstBundle);
    if (!(c >= before)) (ok = false), (note = `counter ${before} -> ${c}`);
  }
  const run: Run = {
    workload,
    sizeMb,
    method,
    rep,
    clientGapMs: seen?.maxGapMs,
    clientReconnects: seen?.reconnects,
    ...r,
    ok,
    note,
  };
  log(
    `${workload} ${sizeMb} MB ${method} #${rep + 1}: ${ok ? 'ok' : 'FAILED ' + note} client gap ${seen?.maxGapMs ?? '-'} ms` +
      ` (reconnects ${seen?.reconnects ?? '-'}), freeze-to-running ${Math.round(r.downtimeMs)} ms, total ${Math.round(r.totalMs)} ms, ${mib(r.bytes)} MiB`,
  );
  return run;
}

/** CLI invoked to its first remote command (--dry-run --verbose prints each as it runs). */
async function startup(dstBundle: string): Promise<{ firstRemote: number[]; nodeBare: number[]; ssh: number[] }> {
  const out = { firstRemote: [] as number[], nodeBare: [] as number[], ssh: [] as number[] };
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const p = execa(
      ns('src')[0],
      [
        ...ns('src').slice(1),
        'node',
        path.join(ROOT, 'bin/migrate'),
        ...baseArgs(h, NAME, dstBundle),
        '--dry-run',
        '--verbose',
        '--one-shot',
      ],
      {
        reject: false,
        stdin: 'ignore',
        env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' },
      },
    );
    let first = NaN;
    let buf = '';
    p.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (Number.isNaN(first) && /\[dst\] \$/.test(buf)) first = performance.now() - t0;
    });
    await p;
    out.firstRemote.push(first);
    const t1 = performance.now();
    await sh([...ns('src'), 'node', '-e', '0']);
    out.nodeBare.push(performance.now() - t1);
    const t2 = performance.now();
    await sh([
      ...ns('src'),
      'ssh',
      '-i',
      h.key,
      '-o',
      `UserKnownHostsFile=${h.knownHosts}`,
      '-o',
      'BatchMode=yes',
      `root@${h.dstAddr}`,
      'true',
    ]);
    out.ssh.push(performance.now() - t2);
  }
  return out;
}

function writeResults(
  runs: Run[],
  start: { firstRemote: number[]; nodeBare: number[]; ssh: number[] } | undefined,
  began: Date,
): void {
  const good = runs.filter((r) => r.ok);
  const pick = (w: string, s: number, m: Method, f: (r: Run) => number | undefined) =>
    good
      .filter((r) => r.workload === w && r.sizeMb === s && r.method === m)
      .map(f)
      .filter((x): x is number => x !== undefined && Number.isFinite(x));
  const hostLine =
    `Hosts: the local test hosts (network namespaces on one machine, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, kernel ${os.release()}; ` +
    `runc and CRIU as installed by test/hosts; this kernel has no soft-dirty tracking, so one-shot only). Run ${began.toISOString().slice(0, 16)}Z, ${RUNS} runs per point, methods alternating (rotated each run).`;
  let md = `# Downtime against the alternatives (namespace hosts)\n\n${hostLine}\n\n`;
  md +=
    'Cells: median (min-max) over the runs. *client gap*: the longest time between two answers seen by a client sending a Redis PING every 10 ms from a third namespace. ';
  md +=
    '*freeze-to-running*: ours as the tool reports it (freeze to the restored container running); the scripts: `runc checkpoint` started to `runc restore` returned. ';
  md +=
    '*total*: command start to exit. Every run checked the state that moved (DBSIZE on the destination; the counter continuing).\n\n';
  const failed = runs.filter((r) => !r.ok);
  if (failed.length)
    md += `Failed runs (left out of the figures): ${failed.map((r) => `${r.workload} ${r.sizeMb} MB ${r.method} #${r.rep + 1}: ${r.note}`).join('; ')}\n\n`;
  const sizes = [...new Set(good.filter((r) => r.workload === 'redis').map((r) => r.sizeMb))].sort((a, b) => a - b);
  for (const s of sizes) {
    const mem = summarize(
      pick('redis', s, 'ours-tls', (r) => r.memoryBytes).concat(pick('redis', s, 'ours-direct', (r) => r.memoryBytes)),
    ).median;
    md += `## Redis, DEBUG POPULATE ${s * 1000} keys x 1000 B (${s} MB of values; container memory ${mib(mem)} MiB)\n\n`;
    md +=
      '| method | client gap, ms | freeze-to-running, ms | of which dump, ms | total, ms | moved, MiB |\n|---|---|---|---|---|---|\n';
    for (const m of methods) {
      md += `| ${m} | ${cell(pick('redis', s, m, (r) => r.clientGapMs))} | ${cell(pick('redis', s, m, (r) => r.downtimeMs))} | ${cell(pick('redis', s, m, (r) => r.dumpMs))} | ${cell(pick('redis', s, m, (r) => r.totalMs))} | ${cell(pick('redis', s, m, (r) => (r.bytes ?? NaN) / 1048576))} |\n`;
    }
    md += '\n';
  }
  if (sizes.length) {
    md += '## Ratios of medians, against the targets (below 1: ours is faster)\n\n';
    md +=
      'Page throughput: bytes moved / freeze-to-dumped (ours: the dump phase, until every image is written and the hold holds; the scripts: until `runc checkpoint` returned).\n\n';
    md +=
      '| size | client gap: ours-tls / raw-direct (target 1.1 or less) | ours-tls / naive (0.6 or less from 256 MB) | ours-tls / raw-tls (1.05 or less) | freeze-to-running: ours-tls / raw-tls | page throughput: ours-tls / raw-direct (0.8 or more) | client gap: ours-tunnel / ours-tls | ours-direct / raw-direct |\n|---|---|---|---|---|---|---|---|\n';
    for (const s of sizes) {
      const g = (m: Method) => pick('redis', s, m, (r) => r.clientGapMs);
      const d = (m: Method) => pick('redis', s, m, (r) => r.downtimeMs);
      const tp = (m: Method) =>
        pick('redis', s, m, (r) => (r.bytes !== undefined && r.dumpMs ? r.bytes / r.dumpMs : undefined));
      md += `| ${s} MB | ${ratio(g('ours-tls'), g('raw-direct'))} | ${ratio(g('ours-tls'), g('naive'))} | ${ratio(g('ours-tls'), g('raw-tls'))} | ${ratio(d('ours-tls'), d('raw-tls'))} | ${ratio(tp('ours-tls'), tp('raw-direct'))} | ${ratio(g('ours-tunnel'), g('ours-tls'))} | ${ratio(g('ours-direct'), g('raw-direct'))} |\n`;
    }
    md += '\n## Where the time went (ours-tls, medians)\n\n';
    md +=
      "The tool's switchover phases (*dump* from the checkpoint's start, *frozen dump* its part after the freeze, as the report's downtimeParts give it), and CRIU's own figures for the final dump (stats-dump): *frozen* is the time the tasks were frozen inside CRIU, *memdump* collecting the pages, *memwrite* sending them to the page server.\n\n";
    md +=
      '| size | dump | frozen dump | copy | restore | prepare + commit + finish | CRIU frozen | memdump | memwrite | pages written |\n|---|---|---|---|---|---|---|---|---|---|\n';
    for (const s of sizes) {
      const ph = (n: string) => cell(pick('redis', s, 'ours-tls', (r) => r.phases?.[n]));
      const ph3 = cell(
        pick('redis', s, 'ours-tls', (r) =>
          r.phases ? (r.phases.prepare ?? 0) + (r.phases.commit ?? 0) + (r.phases.finish ?? 0) : undefined,
        ),
      );
      const fd = (k: 'frozenTimeUs' | 'memdumpTimeUs' | 'memwriteTimeUs') =>
        cell(pick('redis', s, 'ours-tls', (r) => (r.finalDump ? r.finalDump[k] / 1000 : undefined)));
      md += `| ${s} MB | ${ph('dump')} | ${cell(pick('redis', s, 'ours-tls', (r) => r.parts?.dump))} | ${ph('copy')} | ${ph('restore')} | ${ph3} | ${fd('frozenTimeUs')} | ${fd('memdumpTimeUs')} | ${fd('memwriteTimeUs')} | ${cell(pick('redis', s, 'ours-tls', (r) => r.finalDump?.pagesWritten))} |\n`;
    }
    if (SIZES.length > 1) md += '\n![client-observed downtime against size](' + `${TAG}-scaling.png)\n\n`;
  }
  if (good.some((r) => r.workload === 'counter')) {
    md +=
      '## Counter (busybox shell loop, no network: no client)\n\n| method | freeze-to-running, ms | total, ms | moved, MiB |\n|---|---|---|---|\n';
    for (const m of methods)
      md += `| ${m} | ${cell(pick('counter', 0, m, (r) => r.downtimeMs))} | ${cell(pick('counter', 0, m, (r) => r.totalMs))} | ${cell(
        pick('counter', 0, m, (r) => (r.bytes ?? NaN) / 1048576),
        2,
      )} |\n`;
    md += '\n';
  }
  if (good.some((r) => r.workload === 'echo')) {
    md +=
      '## Echo server (busybox nc, tiny; the client sends a line every 10 ms and must keep its connection)\n\n| method | client gap, ms | freeze-to-running, ms | total, ms | moved, MiB | client gap / raw-stream (target for ours: 1.0 or less) |\n|---|---|---|---|---|---|\n';
    const gap = (m: Method) => pick('echo', 0, m, (r) => r.clientGapMs);
    for (const m of methods)
      md += `| ${m} | ${cell(gap(m))} | ${cell(pick('echo', 0, m, (r) => r.downtimeMs))} | ${cell(pick('echo', 0, m, (r) => r.totalMs))} | ${cell(
        pick('echo', 0, m, (r) => (r.bytes ?? NaN) / 1048576),
        2,
      )} | ${ratio(gap(m), gap('raw-stream'))} |\n`;
    md += '\n';
  }
  if (start) {
    md += '## Start-up cost\n\n| what | ms |\n|---|---|\n';
    md += `| \`migrate --dry-run\`: invoked to its first remote command | ${cell(start.firstRemote)} |\n`;
    md += `| for scale: \`node -e 0\` | ${cell(start.nodeBare)} |\n`;
    md += `| for scale: OpenSSH \`ssh dst true\` (connect, authenticate, run, close) | ${cell(start.ssh)} |\n\n`;
  }
  md += `Every run: \`${TAG}.jsonl\`.${SIZES.length > 1 ? ` Plot data: \`${TAG}-scaling.dat\`.` : ''}\n`;
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), md);
  fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

async function main(): Promise<void> {
  const began = new Date();
  fs.mkdirSync(OUT, { recursive: true });
  h = await setupHosts();
  const runs: Run[] = [];
  let start;
  try {
    if (env.COUNTER !== '0') {
      for (let rep = 0; rep < RUNS; rep++)
        for (const m of rotation(methods, rep)) runs.push(await oneRun('counter', 0, m, rep));
    }
    if (env.ECHO === '1') {
      for (let rep = 0; rep < RUNS; rep++)
        for (const m of rotation(methods, rep)) runs.push(await oneRun('echo', 0, m, rep));
      writeResults(runs, start, began);
    }
    if (env.STARTUP !== '0') {
      const { dstBundle } = await prepare('counter', 0);
      start = await startup(dstBundle);
      log(
        `start-up: first remote command ${cell(start.firstRemote)} ms; node -e 0 ${cell(start.nodeBare)} ms; ssh true ${cell(start.ssh)} ms`,
      );
    }
    for (const s of SIZES) {
      for (let rep = 0; rep < RUNS; rep++)
        for (const m of rotation(methods, rep)) runs.push(await oneRun('redis', s, m, rep));
      writeResults(runs, start, began);
    }
  } finally {
    await removeEverywhere(h, NAME);
    await clearLockRules();
    for (const n of ['rm-src', 'rm-dst'])
      await sh(['ip', '-n', n, 'addr', 'del', svc(), 'dev', 'eth0'], { reject: false });
  }
  writeResults(runs, start, began);
  const series = methods.map((m) => ({
    title: m,
    points: SIZES.map((s) => ({
      x: s,
      values: runs
        .filter((r) => r.ok && r.workload === 'redis' && r.sizeMb === s && r.method === m)
        .map((r) => r.clientGapMs ?? NaN),
    })),
  }));
  if (SIZES.length > 1) {
    await plot({
      file: path.join(OUT, `${TAG}-scaling.png`),
      title: 'Redis, one-shot, namespace hosts: downtime seen by a client (PING every 10 ms)',
      xlabel: 'Redis values, MB (DEBUG POPULATE)',
      ylabel: 'longest gap between answers, ms',
      series,
      logx: true,
      logy: true,
    });
  }
  log(`results: ${path.join(OUT, `${TAG}.md`)}`);
  if (runs.some((r) => !r.ok)) process.exitCode = 1;
}

main().catch((e) => {
  log(`compare: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
