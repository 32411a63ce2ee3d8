// What the rootfs sync costs, on the local test hosts: a counter container whose rootfs
// carries ROOTFS_MB (default 1024) MiB in 256 KiB files. Each run starts with an empty
// destination rootfs (the presync copies everything), pauses the tool after the presync
// (RUNC_MIGRATE_PAUSE_AT), rewrites CHANGE MiB of the files on the source, and lets it go
// on: the final delta then carries exactly that change in the freeze. Also the same
// migration with --no-sync-rootfs (the destination holding an identical copy) as the
// baseline. Records the presync, the final delta, the downtime and the total time; checks
// the changed files arrived (their sha256) and the counter went on.
//
//   node dist/bench/files.js                (as root; make build first)
// Environment: CHANGES (MiB changed after the presync, default "0 10 100"), RUNS (default
// 5), ROOTFS_MB (default 1024), OUT (default bench/results), TAG (default "files").
// TREES="1000 10000 100000": instead, rootfs of that many 1 KiB files (100 per
// directory), nothing changed after the presync: the final delta against the tree's size.
// RM_MIGRATE_BIN: another build's bin/migrate (before-and-after runs; LABEL names it).
// TMP_TMPFS=1: the container has a tmpfs on /tmp, where CRIU's dump makes and removes its
// own directory (cr-tmpfs.*): the rootfs is then untouched by the freeze.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import {
  type Hosts,
  baseArgs,
  migrate,
  readCounter,
  removeEverywhere,
  setupHosts,
  sh,
  startExample,
  waitFor,
} from '../test/e2e/hosts.js';
import { cell, ratio, rotation } from './lib/stats.js';

const FILE = 256 << 10;
const RUNS = Number(process.env.RUNS ?? 5);
const ROOTFS_MB = Number(process.env.ROOTFS_MB ?? 1024);
const CHANGES = (process.env.CHANGES ?? '0 10 100').split(/\s+/).filter(Boolean).map(Number);
const OUT = process.env.OUT ?? path.resolve('bench/results');
const TAG = process.env.TAG ?? 'files';
const TREES = (process.env.TREES ?? '').split(/\s+/).filter(Boolean).map(Number);
const LABEL = process.env.LABEL ?? 'this build';
const TMP_TMPFS = process.env.TMP_TMPFS === '1';

interface Run {
  method: string;
  changeMb: number;
  rep: number;
  presyncMs?: number;
  presyncBytes?: number;
  finalMs?: number;
  finalFiles?: number;
  finalBytes?: number;
  marked?: number;
  /** The final delta's way: the change log's list, or a walk of the trees (builds before the log: walk). */
  how?: string;
  treeFiles?: number;
  downtimeMs: number;
  totalMs: number;
  ok: boolean;
  note?: string;
}

const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

/** The bulk of the rootfs: ROOTFS_MB MiB in FILE-sized files under /payload; or TREE files of 1 KiB, 100 per directory. */
function fillRootfs(rootfs: string, tree?: number): string[] {
  if (tree) {
    const blob = crypto.randomBytes(1024);
    for (let i = 0; i < tree; i++) {
      const d = path.join(rootfs, 'tree', `d${Math.floor(i / 100)}`);
      if (i % 100 === 0) fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, `f${i % 100}`), blob);
    }
    return [];
  }
  const dir = path.join(rootfs, 'payload');
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const n = Math.round((ROOTFS_MB << 20) / FILE);
  for (let i = 0; i < n; i++) {
    const f = path.join(dir, `f${String(i).padStart(5, '0')}`);
    fs.writeFileSync(f, crypto.randomBytes(FILE));
    files.push(f);
  }
  return files;
}

async function once(h: Hosts, method: string, changeMb: number, rep: number, tree?: number): Promise<Run> {
  const name = 'filesbench';
  const b = await startExample(h, 'counter', name);
  await removeEverywhere(h, name);
  const files = fillRootfs(path.join(b.src, 'rootfs'), tree);
  if (TMP_TMPFS) {
    for (const bundle of [b.src, b.dst]) {
      const f = path.join(bundle, 'config.json');
      const c = JSON.parse(fs.readFileSync(f, 'utf8'));
      c.mounts.push({ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] });
      fs.writeFileSync(f, JSON.stringify(c));
    }
  }
  const sync = method === 'sync';
  if (sync) fs.rmSync(path.join(b.dst, 'rootfs'), { recursive: true, force: true });
  else await sh(['rsync', '-a', '--delete', `${b.src}/rootfs/`, `${b.dst}/rootfs/`]);
  // A rootfs written within a second before the presync would be compared by content in
  // the freeze (its time stamps cannot prove it unchanged): a real rootfs is older.
  await new Promise((r) => setTimeout(r, 2000));
  await sh([
    'sh',
    '-c',
    `exec nsenter --net=/run/netns/rm-src runc --root ${h.srcRoot} run -d --bundle ${b.src} ${name} </dev/null >/dev/null 2>&1`,
  ]);
  await waitFor('the counter', async () => (await readCounter(b.src)) >= 3);
  const gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rm-bench-')), 'go');
  const args = [...baseArgs(h, name, b.dst), '--json', ...(sync ? [] : ['--no-sync-rootfs'])];
  const run = migrate(args, sync ? { RUNC_MIGRATE_PAUSE_AT: `presynced:${gate}` } : {}, 600_000);
  const changed: string[] = [];
  if (sync) {
    await waitFor('the presync', () => fs.existsSync(`${gate}.reached`), 600_000);
    const k = Math.round((changeMb << 20) / FILE);
    for (let i = 0; i < k; i++) {
      const f = files[(i * 7919) % files.length];
      fs.writeFileSync(f, crypto.randomBytes(FILE));
      changed.push(f);
    }
    fs.writeFileSync(gate, '');
  }
  const r = await run;
  const rec: Run = { method, changeMb, rep, treeFiles: tree, downtimeMs: NaN, totalMs: NaN, ok: false };
  try {
    const j = JSON.parse(r.stdout);
    rec.downtimeMs = j.downtimeMs;
    rec.totalMs = j.totalMs;
    if (j.files?.presync?.[0]) {
      rec.presyncMs = j.files.presync[0].ms;
      rec.presyncBytes = j.files.presync[0].figures.transferredFileBytes;
    }
    if (j.files?.final) {
      rec.finalMs = j.files.final.ms;
      rec.finalFiles = j.files.final.figures.filesTransferred;
      rec.finalBytes = j.files.final.figures.transferredFileBytes;
      rec.marked = j.files.final.marked;
      rec.how = j.files.final.how ?? 'walk';
    }
    const at = await readCounter(b.dst);
    await waitFor('the counter on the destination', async () => (await readCounter(b.dst)) > at);
    const bad = changed.filter((f) => sha(f) !== sha(f.replace(b.src, b.dst)));
    rec.ok = r.code === 0 && bad.length === 0;
    if (bad.length) rec.note = `${bad.length} changed files differ on the destination`;
  } catch (err) {
    rec.note = `exit ${r.code}: ${(err as Error).message} ${r.stderr.slice(-300)}`;
  }
  await removeEverywhere(h, name);
  for (const d of [b.src, b.dst]) fs.rmSync(d, { recursive: true, force: true });
  process.stderr.write(`${method} ${changeMb} MiB #${rep}: ${JSON.stringify(rec)}\n`);
  return rec;
}

async function main(): Promise<void> {
  const h = await setupHosts();
  if (TREES.length) return trees(h);
  const runs: Run[] = [];
  const points: Array<[string, number]> = [...CHANGES.map((c) => ['sync', c] as [string, number]), ['no-sync', 0]];
  for (let rep = 1; rep <= RUNS; rep++) {
    for (const [m, c] of rotation(points, rep)) runs.push(await once(h, m, c, rep));
  }
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const of = (m: string, c: number) => runs.filter((r) => r.method === m && r.changeMb === c && r.ok);
  const base = of('no-sync', 0).map((r) => r.downtimeMs);
  const lines = [
    `# Rootfs sync: presync and final delta (${ROOTFS_MB} MiB rootfs)`,
    '',
    `Generated by \`node dist/bench/files.js\` on ${new Date().toISOString().slice(0, 10)}; ${RUNS} runs per row, rows rotated each run. Local test hosts (network namespaces, one machine; rsync through the tool's SSH connection). The rootfs: ${Math.round((ROOTFS_MB << 20) / FILE)} files of 256 KiB plus the counter's busybox, written 2 s before the run; each sync run starts from an empty destination rootfs, and CHANGE MiB of the files are rewritten after the presync, before the freeze. Cells: median (min-max), ms. "no-sync": --no-sync-rootfs, the destination holding an identical copy.`,
    '',
    '| method | changed after presync | presync | final delta (frozen) | files in the final delta | downtime | downtime / no-sync | total | ok |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [m, c] of points) {
    const rs = of(m, c);
    const all = runs.filter((r) => r.method === m && r.changeMb === c);
    lines.push(
      `| ${m} | ${m === 'sync' ? `${c} MiB` : '-'} | ${m === 'sync' ? cell(rs.map((r) => r.presyncMs!)) : '-'} | ${m === 'sync' ? cell(rs.map((r) => r.finalMs!)) : '-'} | ${m === 'sync' ? cell(rs.map((r) => r.finalFiles!)) : '-'} | ${cell(rs.map((r) => r.downtimeMs))} | ${ratio(
        rs.map((r) => r.downtimeMs),
        base,
      )} | ${cell(rs.map((r) => r.totalMs))} | ${rs.length}/${all.length} |`,
    );
  }
  const notes = runs.filter((r) => r.note).map((r) => `- ${r.method} ${r.changeMb} MiB #${r.rep}: ${r.note}`);
  if (notes.length) lines.push('', 'Failures:', '', ...notes);
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), lines.join('\n') + '\n');
  process.stdout.write(lines.join('\n') + '\n');
}

/** The final delta against the tree's size, nothing changed after the presync. */
async function trees(h: Hosts): Promise<void> {
  const runs: Run[] = [];
  for (let rep = 1; rep <= RUNS; rep++) {
    for (const n of rotation(TREES, rep)) runs.push(await once(h, 'sync', 0, rep, n));
  }
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, `${TAG}.jsonl`), runs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const lines = [
    `# The final delta against the tree's size (${LABEL})`,
    '',
    `Generated by \`${TMP_TMPFS ? 'TMP_TMPFS=1 ' : ''}TREES="${TREES.join(' ')}" node dist/bench/files.js\` on ${new Date().toISOString().slice(0, 10)}; ${RUNS} runs per row, rows rotated each run; tool: ${process.env.RM_MIGRATE_BIN ?? 'this build'}. Local test hosts. The rootfs: the counter's busybox and N files of 1 KiB, 100 per directory; nothing changes after the presync${TMP_TMPFS ? ', and /tmp is a tmpfs (CRIU makes and removes its cr-tmpfs directory there, not in the rootfs): the tree is untouched' : " but /tmp's time stamps, which CRIU's dump moves (it makes and removes a cr-tmpfs directory there)"}. Cells: median (min-max), ms.`,
    '',
    '| files in the tree | final delta (frozen) | how | downtime | presync | ok |',
    '|---|---|---|---|---|---|',
  ];
  for (const n of TREES) {
    const all = runs.filter((r) => r.treeFiles === n);
    const rs = all.filter((r) => r.ok);
    lines.push(
      `| ${n} | ${cell(rs.map((r) => r.finalMs!))} | ${[...new Set(rs.map((r) => r.how))].join(', ')} | ${cell(rs.map((r) => r.downtimeMs))} | ${cell(rs.map((r) => r.presyncMs!))} | ${rs.length}/${all.length} |`,
    );
  }
  const notes = runs.filter((r) => r.note).map((r) => `- ${r.treeFiles} files #${r.rep}: ${r.note}`);
  if (notes.length) lines.push('', 'Failures:', '', ...notes);
  fs.writeFileSync(path.join(OUT, `${TAG}.md`), lines.join('\n') + '\n');
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
