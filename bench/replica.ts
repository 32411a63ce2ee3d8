// Replication's costs and failover's downtime, on the local test hosts (network
// namespaces; this kernel has no soft-dirty tracking, so every checkpoint is a full dump).
//   1. checkpoints: `migrate replicate` of the counter and of Redis populated with 64 and
//      256 MB, at intervals of 1 and 5 s, for CHECKPOINTS checkpoints each: the images'
//      size per checkpoint, the replica's size on the standby's disk (hard-linked trees
//      counted once: du), and the freeze each checkpoint cost the container (CRIU's
//      frozen time, the files' sync inside it).
//   2. the cost to the running container: redis-benchmark (SET and GET, 10 clients, from
//      the source's namespace) on Redis 64 MB with no replication and with replication
//      every 1, 5 and 10 s.
//   3. failover: Redis 64 MB replicated every 1 s (lease 5 s), a client PINGing the service
//      address every 10 ms from a third namespace; the source dies (the tool, its fence and
//      the container killed, the address gone), and `failover --watch --move-ip` runs from
//      the client's namespace. The client's gap runs from the source's last answer to the
//      standby's first (it includes the lease's expiry: detection); also the RTO (from the
//      failover call to the container running) and the RPO (the checkpoint's age) the tool
//      reports, and the keys the restored Redis holds.
//   4. planned: `migrate` of Redis 64 MB with 64 MB of files in its rootfs to the standby,
//      with no replica there (the whole tree and memory move), and with replicate running
//      to it (migrate stops it and starts the tree from its latest checkpoint): downtime,
//      image bytes, the files' bytes that crossed (pre-sync and final delta), the time in all.
//
//   node dist/bench/replica.js            (as root; make build first)
// Environment: RUNS (failover runs, default 5), CHECKPOINTS (per workload and interval,
// default 5), PARTS ("checkpoints throughput failover planned", default all), OUT
// (default bench/results), TAG (default "replica"; PARTS=planned TAG=replica-planned
// keeps the other parts' file).
import crypto from 'node:crypto';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  baseArgs,
  type Hosts,
  migrate,
  ROOT,
  type Replicating,
  clientProcess,
  replicating,
  ns,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
} from '../test/e2e/hosts.js';
import { cell } from './lib/stats.js';

const OUT = process.env.OUT ?? path.join(ROOT, 'bench/results');
const TAG = process.env.TAG ?? 'replica';
const RUNS = Number(process.env.RUNS ?? 5);
const CHECKPOINTS = Number(process.env.CHECKPOINTS ?? 5);
const PARTS = (process.env.PARTS ?? 'checkpoints throughput failover planned').split(/\s+/);
const REPLICAS = '/var/tmp/runc-migrate-bench-replicas';
const BIN = path.join(ROOT, 'bin/migrate');
const PROBE = path.join(ROOT, 'dist/bench/probe.js');
const NAME = 'bench-rep';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(`${s}\n`);
const jsonl = path.join(OUT, `${TAG}.jsonl`);
const record = (x: object) => fs.appendFileSync(jsonl, `${JSON.stringify({ at: new Date().toISOString(), ...x })}\n`);

let h: Hosts;

function connection(): string[] {
  return ['-i', h.key, '--known-hosts', h.knownHosts, '--remote-runc-root', h.dstRoot, '--replica-dir', REPLICAS];
}

function replicate(extra: string[]): Replicating {
  return replicating(h, NAME, REPLICAS, extra);
}

const redis = async (where: 'src' | 'dst', ...args: string[]) =>
  (await sh([...ns(where), 'redis-cli', '-h', '127.0.0.1', ...args], { reject: false })).stdout.trim();

/** The workload, started on the source: the counter (0) or Redis with MB of values. */
async function start(mb: number): Promise<void> {
  await removeEverywhere(h, NAME);
  fs.rmSync(path.join(REPLICAS, NAME), { recursive: true, force: true });
  await startExample(h, mb === 0 ? 'counter' : 'redis', NAME, { dstRootfs: false });
  if (mb > 0) {
    await waitFor('redis', async () => (await redis('src', 'ping')) === 'PONG');
    await redis('src', 'debug', 'populate', String(mb * 1000), 'k', '1000');
  }
}

async function stopReplicating(rep: Replicating): Promise<void> {
  rep.proc.kill('SIGINT');
  await Promise.race([rep.proc, sleep(30_000)]);
  rep.proc.kill('SIGKILL');
}

async function checkpoints(md: string[]): Promise<void> {
  md.push(
    '## Checkpoints\n',
    `Per workload and interval, ${CHECKPOINTS} checkpoints (the first, which copies the whole tree, included). *images*: what one checkpoint's dump sends (all of the memory: full dumps). *on disk*: the replica on the standby after them, ${'`du`'} counting the hard-linked trees once (\`--keep 2\`). *freeze*: CRIU's frozen time, the files' sync inside it. Cells: median (min-max).\n`,
    '| workload | interval | images per checkpoint, MB | replica on disk, MB | freeze, ms | checkpoint in all, ms |',
    '|---|---|---|---|---|---|',
  );
  for (const mb of [0, 64, 256]) {
    for (const interval of [1, 5]) {
      await start(mb);
      const rep = replicate(['--interval', `${interval}s`]);
      await waitFor('the checkpoints', () => rep.checkpoints().length >= CHECKPOINTS, 600_000);
      await stopReplicating(rep);
      const cs = rep.checkpoints().slice(0, CHECKPOINTS);
      const du = Number((await sh(['du', '-sb', path.join(REPLICAS, NAME)])).stdout.split('\t')[0]);
      const total = cs.map((c) => Object.values(c.parts as Record<string, number>).reduce((a, b) => a + b, 0));
      const what = mb === 0 ? 'counter' : `Redis ${mb} MB`;
      record({ part: 'checkpoints', workload: what, interval, checkpoints: cs, replicaBytes: du });
      md.push(
        `| ${what} | ${interval} s | ${cell(
          cs.map((c) => (c.bytes as number) / 1e6),
          1,
        )} | ${(du / 1e6).toFixed(1)} | ${cell(cs.map((c) => c.freezeMs as number))} | ${cell(total)} |`,
      );
      log(`${what} every ${interval} s: ${md.at(-1)}`);
      await removeEverywhere(h, NAME);
    }
  }
  md.push('');
}

async function benchmark(): Promise<{ set: number; get: number }> {
  const r = await sh([
    ...ns('src'),
    'redis-benchmark',
    '-h',
    '127.0.0.1',
    '-t',
    'set,get',
    '-n',
    '200000',
    '-c',
    '10',
    '-r',
    '64000',
    '-d',
    '1000',
    '--csv',
  ]);
  const rate = (t: string) => Number(r.stdout.match(new RegExp(`"${t}","([\\d.]+)"`))?.[1]);
  return { set: rate('SET'), get: rate('GET') };
}

async function throughput(md: string[]): Promise<void> {
  md.push(
    '## The cost to the running container\n',
    'redis-benchmark on Redis 64 MB (SET and GET of 1000-byte values over 64,000 keys, 10 clients, 200,000 requests each), in the source namespace, with and without replication running. Each checkpoint freezes Redis (all of its memory dumped: full dumps) and takes CPU on the same 2 cores.\n',
    '| replication | SET, requests/s | GET, requests/s | checkpoints during the run |',
    '|---|---|---|---|',
  );
  for (const interval of [0, 1, 5, 10]) {
    await start(64);
    let rep: Replicating | undefined;
    if (interval) {
      rep = replicate(['--interval', `${interval}s`]);
      await waitFor('a first checkpoint', () => (rep?.checkpoints().length ?? 0) >= 1, 600_000);
    }
    const before = rep?.checkpoints().length ?? 0;
    const r = await benchmark();
    const during = (rep?.checkpoints().length ?? 0) - before;
    if (rep) await stopReplicating(rep);
    record({ part: 'throughput', interval, ...r, checkpointsDuring: during });
    md.push(`| ${interval ? `every ${interval} s` : 'none'} | ${r.set.toFixed(0)} | ${r.get.toFixed(0)} | ${during} |`);
    log(md.at(-1) ?? '');
    await removeEverywhere(h, NAME);
  }
  md.push('');
}

async function failoverRun(run: number) {
  await serviceAddressOnSource(h);
  await start(64);
  const { proc, connected } = clientProcess(PROBE, ['watch', h.serviceAddr, '6379', '--every', '10', '--cmd', 'ping']);
  await connected;
  const rep = replicate(['--interval', '1s']);
  await waitFor('three checkpoints', () => rep.checkpoints().length >= 3, 120_000);
  // The source dies: the tool and its fence, the address, the container.
  rep.proc.kill('SIGKILL');
  await rep.proc;
  await sh(['pkill', '-KILL', '-f', `runc-migrate-fence .*${h.srcRoot}`], { reject: false });
  await sh(['ip', '-n', 'rm-src', 'addr', 'del', `${h.serviceAddr}/32`, 'dev', 'eth0'], { reject: false });
  await sh(['runc', '--root', h.srcRoot, 'kill', NAME, 'KILL'], { reject: false });
  const last = rep.checkpoints().at(-1);
  const t0 = performance.now();
  const f = await execa(
    ns('client')[0],
    [
      ...ns('client').slice(1),
      'node',
      BIN,
      'failover',
      NAME,
      `root@${h.dstAddr}`,
      ...connection(),
      '--watch',
      '--move-ip',
      `${h.serviceAddr}/32@eth0`,
      '--json',
    ],
    { reject: false, stdin: 'ignore', env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' }, timeout: 300_000 },
  );
  const callMs = performance.now() - t0;
  const report = JSON.parse(String(f.stdout) || '{}') as {
    exitCode?: number;
    restored?: { rpoMs: number; rtoMs: number; restoreMs: number };
  };
  await waitFor(
    'the client answered by the standby',
    async () => /\bcmd=ping\b/.test(await redis('dst', 'client', 'list')),
    60_000,
  ).catch(() => log('the client was not answered by the standby within 60 s'));
  await sleep(1000);
  proc.kill('SIGTERM');
  const seen = JSON.parse(
    String((await proc).stdout)
      .trim()
      .split('\n')
      .pop() ?? '{}',
  ) as {
    maxGapMs: number;
    reconnects: number;
  };
  const keys = Number(await redis('dst', 'dbsize'));
  const ok = f.exitCode === 0 && keys === 64000 && (await status(h.dstRoot, NAME)) === 'running';
  const r = {
    run,
    ok,
    gapMs: seen.maxGapMs,
    reconnects: seen.reconnects,
    failoverCallMs: Math.round(callMs),
    rtoMs: report.restored?.rtoMs,
    rpoMs: report.restored?.rpoMs,
    restoreMs: report.restored?.restoreMs,
    keys,
    lastCheckpointFreezeMs: last?.freezeMs,
    note: ok ? undefined : `exit ${f.exitCode}: ${String(f.stderr).slice(-300)}`,
  };
  record({ part: 'failover', ...r });
  log(`failover #${run + 1}: ${JSON.stringify(r)}`);
  await removeEverywhere(h, NAME);
  await sh(['ip', '-n', 'rm-dst', 'addr', 'del', `${h.serviceAddr}/32`, 'dev', 'eth0'], { reject: false });
  return r;
}

async function failovers(md: string[]): Promise<void> {
  const runs = [];
  for (let i = 0; i < RUNS; i++) runs.push(await failoverRun(i));
  const good = runs.filter((r) => r.ok);
  md.push(
    '## Failover\n',
    `Redis 64 MB replicated every 1 s (lease 5 s: 3 intervals and 2 s), a client PINGing the service address every 10 ms on one connection from a third namespace. The source dies (the tool, its fence and the container killed, the address removed); \`failover --watch --move-ip\` runs at once from the client's namespace. *client gap*: the source's last answer to the standby's first, the lease's expiry included (the client reconnects: the restored connection is closed). *RTO*: the tool's, from the call to the container running (the wait for the lease included). *restore*: runc restore alone. *RPO*: the restored checkpoint's age. ${good.length} of ${runs.length} runs restored all 64,000 keys; cells: median (min-max) of those.\n`,
    '| client gap, ms | RTO, ms | restore, ms | RPO, ms | reconnects |',
    '|---|---|---|---|---|',
    `| ${cell(good.map((r) => r.gapMs))} | ${cell(good.map((r) => r.rtoMs ?? NaN))} | ${cell(
      good.map((r) => r.restoreMs ?? NaN),
    )} | ${cell(good.map((r) => r.rpoMs ?? NaN))} | ${cell(good.map((r) => r.reconnects))} |`,
    '',
  );
}

interface PlannedReport {
  exitCode: number;
  downtimeMs?: number;
  totalMs: number;
  bytesMoved?: number;
  files?: {
    presync: Array<{ figures: { wireBytes: number; totalFileBytes: number } }>;
    final?: { figures: { wireBytes: number } };
  };
  replica?: { seq: number; stoppedReplicate?: number; removed?: boolean };
  phases?: Array<{ name: string; ms: number }>;
}

async function plannedRun(run: number, withReplica: boolean) {
  await start(64);
  // Files the container does not change: a data set, a cache, installed software.
  const bulk = path.join(h.srcBundles, NAME, 'rootfs', 'var', 'bulk');
  fs.mkdirSync(bulk, { recursive: true });
  for (let i = 0; i < 16; i++) fs.writeFileSync(path.join(bulk, `blob${i}`), crypto.randomBytes(4 << 20));
  let rep: Replicating | undefined;
  if (withReplica) {
    rep = replicate(['--interval', '5s']);
    await waitFor('a checkpoint', () => (rep?.checkpoints().length ?? 0) >= 1, 600_000);
  }
  const r = await migrate(
    [...baseArgs(h, NAME, path.join(h.dstBundles, NAME)), '--replica-dir', REPLICAS, '--json'],
    {},
    600_000,
  );
  if (rep) await Promise.race([rep.proc, sleep(10_000)]);
  rep?.proc.kill('SIGKILL');
  const report = JSON.parse(r.stdout || '{}') as PlannedReport;
  const keys = Number(await redis('dst', 'dbsize'));
  const presync = report.files?.presync ?? [];
  const res = {
    run,
    withReplica,
    ok: r.code === 0 && keys === 64000,
    downtimeMs: report.downtimeMs,
    totalMs: report.totalMs,
    imageBytes: report.bytesMoved,
    filesWireBytes:
      presync.reduce((a, p) => a + p.figures.wireBytes, 0) + (report.files?.final?.figures.wireBytes ?? 0),
    treeBytes: presync[0]?.figures.totalFileBytes,
    replica: report.replica,
    phases: Object.fromEntries((report.phases ?? []).map((p) => [p.name, Math.round(p.ms)])),
    note: r.code === 0 ? undefined : `exit ${r.code}: ${r.stderr.slice(-300)}`,
  };
  record({ part: 'planned', ...res });
  log(`planned #${run + 1} ${withReplica ? 'with' : 'without'} the replica: ${JSON.stringify(res)}`);
  await removeEverywhere(h, NAME);
  fs.rmSync(path.join(REPLICAS, NAME), { recursive: true, force: true });
  return res;
}

async function planned(md: string[]): Promise<void> {
  md.push(
    '## A planned migration to the standby\n',
    `\`migrate\` of Redis 64 MB (64,000 keys) with 64 MB of files in its rootfs to the standby: with no replica there, and with \`replicate --interval 5s\` running to it (migrate stops it, and the rootfs starts from the replica's latest checkpoint). *files sent*: rsync's bytes on the wire, pre-sync and final delta. *images*: the checkpoint images that crossed (the memory moves whole either way: this kernel has no dirty-memory tracking). ${RUNS} runs each; cells: median (min-max) of the runs that moved all 64,000 keys.\n`,
    '| replica | downtime, ms | files sent, MB | images, MB | in all, s | runs ok |',
    '|---|---|---|---|---|---|',
  );
  for (const withReplica of [false, true]) {
    const runs = [];
    for (let i = 0; i < RUNS; i++) runs.push(await plannedRun(i, withReplica));
    const good = runs.filter((r) => r.ok);
    md.push(
      `| ${withReplica ? 'yes' : 'none'} | ${cell(good.map((r) => r.downtimeMs ?? NaN))} | ${cell(
        good.map((r) => r.filesWireBytes / 1e6),
        1,
      )} | ${cell(
        good.map((r) => (r.imageBytes ?? NaN) / 1e6),
        1,
      )} | ${cell(
        good.map((r) => r.totalMs / 1000),
        1,
      )} | ${good.length} of ${runs.length} |`,
    );
    log(md.at(-1) ?? '');
  }
  md.push('');
}

async function main(): Promise<void> {
  h = await setupHosts();
  fs.mkdirSync(OUT, { recursive: true });
  fs.rmSync(jsonl, { force: true });
  const md = [
    `# Replication and failover (bench/replica.ts)\n`,
    `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), namespace hosts, this machine's kernel (no soft-dirty: full dumps). Raw runs: \`${TAG}.jsonl\`.\n`,
  ];
  if (PARTS.includes('checkpoints')) await checkpoints(md);
  if (PARTS.includes('throughput')) await throughput(md);
  if (PARTS.includes('failover')) await failovers(md);
  if (PARTS.includes('planned')) await planned(md);
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), `${md.join('\n')}\n`);
  fs.rmSync(REPLICAS, { recursive: true, force: true });
  log(`written: ${path.join(OUT, `${TAG}.md`)}`);
}

main().catch((err) => {
  log(String(err?.stack ?? err));
  process.exit(1);
});
