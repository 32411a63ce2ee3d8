// The first migration after the hosts are set up, against the next one: the echo server
// moved with --move-ip while a client in a third namespace sends a line every 10 ms over
// one connection, on freshly built namespace hosts. Per setup two migrations: "first"
// (the destination has never talked to the client: no cached TCP metrics for it) and
// "second" (a new echo server and client, the same hosts, after the first copy was
// removed there). Figures: the client's longest gap between answers, the tool's
// downtime and its parts, and what the destination's kernel held for the client
// connection right after the tool returned (ss -ti: rto, retransmissions, backoff) and
// for the client's address (ip tcp_metrics).
//
//   [BEFORE=/path/to/other/checkout] RUNS=3 node dist/bench/first-migration.js
//
// With BEFORE (a checkout of the other build, its dist/ built), both builds, alternating
// which goes first in each run. Every run checks the client kept its connection and got
// every answer in order. Output: bench/results/first-migration.md and .jsonl (every run).
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import {
  baseArgs,
  echoClient,
  ns,
  readEnv,
  removeEverywhere,
  ROOT,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  stopClient,
  type Hosts,
} from '../test/e2e/hosts.js';
import { cell } from './lib/stats.js';

const RUNS = Number(process.env.RUNS ?? 3);
const OUT = process.env.OUT ?? path.join(ROOT, 'bench/results');
const TAG = process.env.TAG ?? 'first-migration';
const builds: Record<string, string> = { after: ROOT };
if (process.env.BEFORE) builds.before = path.resolve(process.env.BEFORE);
for (const dir of Object.values(builds))
  if (!fs.existsSync(path.join(dir, 'dist/src/cli.js'))) throw new Error(`${dir}: no dist/ (make build there)`);

interface Run {
  build: string;
  rep: number;
  which: 'first' | 'second';
  gapMs: number;
  downtimeMs: number;
  downtimeParts?: Record<string, number>;
  /** ss -tin on the destination for the connection, right after the tool returned. */
  ssAfter: string;
  /** ip tcp_metrics on the destination for the client's address, before the migration. */
  metricsBefore: string;
  sent: number;
  answered: number;
}

async function oneMigration(h: Hosts, build: string, rep: number, which: Run['which']): Promise<Run> {
  const name = 'fm';
  await serviceAddressOnSource(h);
  const b = await startExample(h, 'echo', name);
  const client = echoClient(h, 10);
  await client.connected;
  await new Promise((r) => setTimeout(r, 1000));
  const metrics = await sh([...ns('dst'), 'ip', 'tcp_metrics', 'show', readEnv().RM_CLIENT_ADDR], { reject: false });
  const r = await execa(
    ns('src')[0],
    [
      ...ns('src').slice(1),
      'node',
      path.join(builds[build], 'bin/migrate'),
      ...baseArgs(h, name, b.dst),
      '--move-ip',
      `${h.serviceAddr}/32`,
      '--json',
    ],
    { reject: false, stdin: 'ignore', env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' } },
  );
  const ss = await sh([...ns('dst'), 'ss', '-tin', 'state', 'established', '( sport = :7777 )'], { reject: false });
  if (r.exitCode !== 0) throw new Error(`${build} ${which} run ${rep}: exit ${r.exitCode}: ${r.stderr}`);
  const j = JSON.parse(String(r.stdout)) as { downtimeMs: number; downtimeParts?: Record<string, number> };
  // Long enough for any retransmission timer to have fired (3 s without cached metrics).
  await new Promise((res) => setTimeout(res, 5000));
  const seen = await stopClient(client);
  if ((await status(h.dstRoot, name)) !== 'running') throw new Error('the echo server does not run on the destination');
  await removeEverywhere(h, name);
  return {
    build,
    rep,
    which,
    gapMs: seen.maxGapMs,
    downtimeMs: j.downtimeMs,
    downtimeParts: j.downtimeParts,
    ssAfter: String(ss.stdout).replace(/\s+/g, ' ').trim(),
    metricsBefore: String(metrics.stdout).trim(),
    sent: seen.sent,
    answered: seen.answered,
  };
}

const runs: Run[] = [];
const names = Object.keys(builds);
for (let rep = 0; rep < RUNS; rep++) {
  const order = rep % 2 ? [...names].reverse() : names;
  for (const build of order) {
    await execa('bash', [path.join(ROOT, 'test/hosts/teardown.sh')], { stdin: 'ignore' });
    const h = await setupHosts();
    for (const which of ['first', 'second'] as const) {
      const run = await oneMigration(h, build, rep, which);
      runs.push(run);
      console.log(JSON.stringify(run));
    }
  }
}

fs.mkdirSync(OUT, { recursive: true });
fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
const rows = names
  .flatMap((b) =>
    (['first', 'second'] as const).map((w) => {
      const rs = runs.filter((r) => r.build === b && r.which === w);
      const rto = rs.map((r) => r.ssAfter.match(/\brto:(\d+)/)?.[1] ?? '-').join(', ');
      return `| ${b} | ${w} | ${cell(rs.map((r) => r.gapMs))} | ${cell(rs.map((r) => r.downtimeMs))} | ${rto} |`;
    }),
  )
  .join('\n');
// The downtime's parts, medians per build and migration (a part a build does not report: -).
const partNames = [...new Set(runs.flatMap((r) => Object.keys(r.downtimeParts ?? {})))];
const partRows = names
  .flatMap((b) =>
    (['first', 'second'] as const).map((w) => {
      const rs = runs.filter((r) => r.build === b && r.which === w);
      const med = (k: string) => {
        const v = rs.map((r) => r.downtimeParts?.[k]).filter((x): x is number => x !== undefined);
        return v.length ? cell(v) : '-';
      };
      return `| ${b} | ${w} | ${partNames.map(med).join(' | ')} |`;
    }),
  )
  .join('\n');
const md = `# The first migration after host setup, against the second

Echo server with \`--move-ip\`, a client sending a line every 10 ms from a third
namespace; fresh namespace hosts for each run, two migrations on them (the second with a
new server and client after the first copy was removed). ${RUNS} runs${names.length > 1 ? ' of each build, alternating which goes first' : ''};
median (min-max), ms. Run ${new Date().toISOString().slice(0, 10)} with
\`${process.env.BEFORE ? `BEFORE=${process.env.BEFORE} ` : ''}RUNS=${RUNS} node dist/bench/first-migration.js\`.
"rto" is the destination's retransmission timeout for the client's connection right after
the tool returned (\`ss -ti\`), per run.

| build | migration | client gap | reported downtime | rto (ms) |
|---|---|---|---|---|
${rows}

The reported downtime's parts (\`downtimeParts\`), median (min-max), ms:

| build | migration | ${partNames.join(' | ')} |
|---|---|${partNames.map(() => '---|').join('')}
${partRows}
`;
fs.writeFileSync(path.join(OUT, `${TAG}.md`), md);
console.log(md);
