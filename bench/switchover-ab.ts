// The switchover's own cost, one build against another: the counter (a tiny container)
// moved between the namespace hosts with `--transport stream --one-shot`, alternating
// the two builds run by run (A first in even runs, B first in odd ones), RUNS (default
// 6) runs each. Figures: the tool's downtime (freeze to the destination's commit
// acknowledged) and its restore and commit phases. Every run checks the counter went on
// from where it was on the destination.
//
//   BEFORE=/path/to/other/checkout node dist/bench/switchover-ab.js
//
// BEFORE is a checkout of the other build with its dist/ built (`make build` there).
// Output: bench/results/switchover-ab.md and .jsonl (every run).
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import {
  baseArgs,
  ns,
  readCounter,
  removeEverywhere,
  ROOT,
  setupHosts,
  startExample,
  waitFor,
} from '../test/e2e/hosts.js';
import { cell } from './lib/stats.js';

const RUNS = Number(process.env.RUNS ?? 6);
const BEFORE = process.env.BEFORE;
const OUT = process.env.OUT ?? path.join(ROOT, 'bench/results');
const TAG = process.env.TAG ?? 'switchover-ab';
if (!BEFORE || !fs.existsSync(path.join(BEFORE, 'bin/migrate'))) {
  console.error('switchover-ab: set BEFORE to a checkout of the other build, with its dist/ built');
  process.exit(2);
}
const builds = { before: path.resolve(BEFORE), after: ROOT } as const;
type Build = keyof typeof builds;

interface Run {
  build: Build;
  rep: number;
  downtimeMs: number;
  restoreMs?: number;
  commitMs?: number;
  /** The counter on the source just before, and on the destination right after: it went on. */
  counterBefore: number;
  counterAfter: number;
}

const h = await setupHosts();
const runs: Run[] = [];
for (let rep = 0; rep < RUNS; rep++) {
  const order: Build[] = rep % 2 ? ['after', 'before'] : ['before', 'after'];
  for (const build of order) {
    const name = 'ab';
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const counterBefore = await readCounter(b.src);
    const r = await execa(
      ns('src')[0],
      [
        ...ns('src').slice(1),
        'node',
        path.join(builds[build], 'bin/migrate'),
        ...baseArgs(h, name, b.dst),
        '--transport',
        'stream',
        '--one-shot',
        '--json',
      ],
      {
        reject: false,
        stdin: 'ignore',
        env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' },
      },
    );
    const j = JSON.parse(String(r.stdout));
    if (r.exitCode !== 0) throw new Error(`${build} run ${rep}: exit ${r.exitCode}: ${r.stderr}`);
    await waitFor('the counter to go on on the destination', async () => (await readCounter(b.dst)) >= counterBefore);
    const phase = (n: string) => j.phases?.find((p: { name: string }) => p.name === n)?.ms as number | undefined;
    const run: Run = {
      build,
      rep,
      downtimeMs: j.downtimeMs,
      restoreMs: phase('restore'),
      commitMs: phase('commit'),
      counterBefore,
      counterAfter: await readCounter(b.dst),
    };
    runs.push(run);
    console.log(JSON.stringify(run));
    await removeEverywhere(h, name);
  }
}

fs.mkdirSync(OUT, { recursive: true });
fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
const col = (b: Build, k: 'downtimeMs' | 'restoreMs' | 'commitMs') =>
  cell(runs.filter((r) => r.build === b).map((r) => r[k] ?? NaN));
const md = `# The switchover's cost: ${path.basename(builds.before)} (before) against this build (after)

Counter, \`--transport stream --one-shot\`, namespace hosts, ${RUNS} runs of each build,
alternating (median (min-max), ms). Run ${new Date().toISOString().slice(0, 10)} with
\`BEFORE=${builds.before} node dist/bench/switchover-ab.js\`.

| build | downtime | restore phase | commit phase |
|---|---|---|---|
| before | ${col('before', 'downtimeMs')} | ${col('before', 'restoreMs')} | ${col('before', 'commitMs')} |
| after | ${col('after', 'downtimeMs')} | ${col('after', 'restoreMs')} | ${col('after', 'commitMs')} |
`;
fs.writeFileSync(path.join(OUT, `${TAG}.md`), md);
console.log(md);
