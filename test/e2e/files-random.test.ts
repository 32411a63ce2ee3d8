// Every change between the pre-sync and the freeze arrives: a writer inside the container
// and one outside it (a deploy on the host) apply a random sequence of file operations
// while the tool waits after the pre-sync; after the migration the destination's tree
// equals the source's (which nothing touched after the freeze), contents and metadata, by
// the comparison --verify-files runs. Fixed seeds; RM_FILES_SEED=N runs one other.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { rsyncCmd, comparedDifferences } from '../../src/rsync.js';
import {
  baseArgs,
  migrate,
  pausedMigration,
  readCounter,
  removeEverywhere,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

const SEEDS = process.env.RM_FILES_SEED ? [Number(process.env.RM_FILES_SEED)] : [7, 1213];
const OPS = 60;

let h: Hosts;
before(async () => {
  h = await setupHosts();
});

/** mulberry32: a small seeded generator, so that a seed replays the same sequence. */
function generator(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}

const NAMES = ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'd0', 'd1', 'd0/g0', 'd0/g1', 'd1/g2', 'd1/e/g3', 'l0', 'p0'];
const OLD = 1577836800; // 2020-01-01

/** The tree both writers start from, made before the migration. */
function seedTree(play: string): void {
  fs.mkdirSync(path.join(play, 'd0'), { recursive: true });
  fs.mkdirSync(path.join(play, 'd1/e'), { recursive: true });
  for (const [i, n] of ['f0', 'f1', 'f2', 'd0/g0', 'd1/g2', 'd1/e/g3'].entries()) {
    fs.writeFileSync(path.join(play, n), crypto.randomBytes(100 + i * 997));
    fs.utimesSync(path.join(play, n), OLD, OLD);
  }
  fs.linkSync(path.join(play, 'f0'), path.join(play, 'd0/g1'));
  fs.symlinkSync('f1', path.join(play, 'l0'));
  execFileSync('mkfifo', [path.join(play, 'p0')]);
  // A sparse file: 4 MiB, one written block at its end.
  const fd = fs.openSync(path.join(play, 'f3'), 'w');
  fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, (4 << 20) - 4096);
  fs.closeSync(fd);
  execFileSync('setfattr', ['-n', 'user.origin', '-v', 'seed', path.join(play, 'f1')]);
  execFileSync('setfacl', ['-m', 'u:1234:r', path.join(play, 'f2')]);
}

/** One operation by the writer outside the container (node on the host, in the source's rootfs). */
function outsideOp(play: string, r: ReturnType<typeof generator>): string {
  const p = (n: string) => path.join(play, n);
  const a = r.pick(NAMES);
  const b = r.pick(NAMES);
  const kind = r.int(17);
  const desc = `outside ${kind} ${a} ${b}`;
  // Writing to a FIFO (or through a symlink to one) would wait for a reader for ever.
  const fifo = (n: string) => {
    try {
      return fs.statSync(p(n)).isFIFO();
    } catch {
      return false;
    }
  };
  if ([0, 1, 2, 3, 4].includes(kind) && fifo(a)) return `${desc} (a FIFO: skipped)`;
  try {
    switch (kind) {
      case 0:
        fs.mkdirSync(path.dirname(p(a)), { recursive: true });
        fs.writeFileSync(p(a), crypto.randomBytes(1 + r.int(9000)));
        break;
      case 1:
        fs.appendFileSync(p(a), crypto.randomBytes(1 + r.int(300)));
        break;
      case 2: {
        // Same size, and the time stamps set back to what they were.
        const st = fs.statSync(p(a));
        if (!st.isFile()) break;
        fs.writeFileSync(p(a), crypto.randomBytes(st.size));
        fs.utimesSync(p(a), st.atime, st.mtime);
        break;
      }
      case 3:
        fs.truncateSync(p(a), r.int(2000));
        break;
      case 4: {
        if (!fs.statSync(p(a)).isFile()) break;
        fs.writeFileSync(p(a), crypto.randomBytes(64 << 10), { flag: 'r+' });
        execFileSync('fallocate', ['-p', '-o', String(4096 * (1 + r.int(8))), '-l', '8192', p(a)]);
        break;
      }
      case 5:
        fs.renameSync(p(a), p(b));
        break;
      case 6:
        fs.linkSync(p(a), p(b));
        if (r.int(2)) fs.unlinkSync(p(a));
        break;
      case 7: {
        fs.symlinkSync(r.pick(NAMES), p('.swap'));
        fs.renameSync(p('.swap'), p(a));
        break;
      }
      case 8:
        fs.chmodSync(p(a), r.pick([0o600, 0o644, 0o755, 0o640, 0o4755]));
        break;
      case 9:
        fs.lchownSync(p(a), 1000 + r.int(5), 1000 + r.int(5));
        break;
      case 10:
        execFileSync('setfattr', ['-h', '-n', `user.k${r.int(3)}`, '-v', String(r.int(1e6)), p(a)], {
          stdio: 'ignore',
        });
        break;
      case 11:
        execFileSync('mkfifo', [p(a)], { stdio: 'ignore' });
        break;
      case 12:
        fs.rmSync(p(a), { recursive: true, force: true });
        break;
      case 13:
        // A directory replaced by a file.
        if (!fs.lstatSync(p(a)).isDirectory()) break;
        fs.rmSync(p(a), { recursive: true });
        fs.writeFileSync(p(a), 'was a directory\n');
        break;
      case 14:
        // A file replaced by a directory, with something in it.
        fs.rmSync(p(a), { recursive: true, force: true });
        fs.mkdirSync(path.join(p(a), 'in'), { recursive: true });
        fs.writeFileSync(path.join(p(a), 'in/x'), crypto.randomBytes(50));
        break;
      case 15:
        execFileSync('setfacl', ['-m', `u:${1000 + r.int(9)}:rw`, p(a)], { stdio: 'ignore' });
        break;
      case 16: {
        // A directory moved, then written inside under its new name.
        fs.renameSync(p(a), p(b));
        if (fs.lstatSync(p(b)).isDirectory()) fs.writeFileSync(path.join(p(b), 'moved-in'), crypto.randomBytes(77));
        break;
      }
    }
  } catch {
    /* the name was not there, or of the wrong kind: the operation does nothing */
  }
  return desc;
}

/** One operation by the writer inside the container (busybox sh, in /play). */
function insideOp(r: ReturnType<typeof generator>): string {
  const a = r.pick(NAMES);
  const b = r.pick(NAMES);
  const B = 'busybox';
  // Writing to a FIFO (or through a symlink to one) would wait for a reader for ever.
  const nf = `[ ! -p ${a} ] &&`;
  switch (r.int(12)) {
    case 0:
      return `${nf} ${B} mkdir -p $(${B} dirname ${a}) && ${B} dd if=/dev/urandom of=${a} bs=${1 + r.int(5000)} count=1`;
    case 1:
      return `${nf} echo ${r.int(1e6)} >> ${a}`;
    case 2:
      return `${nf} [ -f ${a} ] && t=$(${B} stat -c %Y ${a}) && ${B} dd if=/dev/urandom of=${a} bs=1 count=$(${B} stat -c %s ${a}) conv=notrunc && ${B} touch -d @$t ${a}`;
    case 3:
      return `${nf} ${B} truncate -s ${r.int(3000)} ${a}`;
    case 4:
      return `${B} mv -f ${a} ${b}`;
    case 5:
      return `${B} ln ${a} ${b} && ${B} rm -f ${a}`;
    case 6:
      return `${B} ln -sfn ${r.pick(NAMES)} ${a}`;
    case 7:
      return `${B} chmod ${r.pick(['600', '644', '755', '711'])} ${a}`;
    case 8:
      return `${B} mkfifo ${a}`;
    case 9:
      return `${B} rm -rf ${a}`;
    case 10:
      return `[ -d ${a} ] && ${B} rm -rf ${a} && echo was-a-dir > ${a}`;
    default:
      return `${B} mkdir -p ${a}/n/m && echo deep > ${a}/n/m/z`;
  }
}

/** The differences between two trees on this machine, by the comparison --verify-files runs. */
async function differences(a: string, b: string): Promise<string[]> {
  const argv = rsyncCmd.compareLocal({ a, b });
  const r = await sh(argv, { reject: false });
  assert.equal(r.exitCode, 0, r.stderr);
  return comparedDifferences(r.stdout);
}

/** The random sequence, applied while the tool waits; returns the operations, for the failure message. */
async function applyOps(name: string, play: string, seed: number): Promise<string[]> {
  const r = generator(seed);
  const done: string[] = [];
  let batch: string[] = [];
  const flush = async () => {
    if (!batch.length) return;
    const script = `cd /play && { ${batch.map((c) => `{ ${c}; } 2>/dev/null`).join('; ')}; }; true`;
    await sh(['runc', '--root', h.srcRoot, 'exec', name, '/bin/busybox', 'sh', '-c', script]);
    done.push(...batch.map((c) => `inside: ${c}`));
    batch = [];
  };
  for (let i = 0; i < OPS; i++) {
    if (r.int(2)) batch.push(insideOp(r));
    else {
      await flush();
      done.push(outsideOp(play, r));
    }
  }
  await flush();
  return done;
}

describe('rootfs sync: a random sequence of file operations between the pre-sync and the freeze', () => {
  for (const seed of SEEDS) {
    test(`seed ${seed}: the destination's tree equals the source's at the freeze`, async () => {
      const name = `frand${seed}`;
      const b = await startExample(h, 'counter', name);
      const play = path.join(b.src, 'rootfs/play');
      seedTree(play);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const { run, release } = await pausedMigration([...baseArgs(h, name, b.dst), '--json', '--verify-files']);
      const ops = await applyOps(name, play, seed);
      release();
      const res = await run;
      const why = `seed ${seed} (RM_FILES_SEED=${seed} replays it); operations:\n${ops.join('\n')}\n${res.stderr}`;
      assert.equal(res.code, 0, `${why}\n${res.stdout}`);
      const j = JSON.parse(res.stdout);
      assert.equal(j.files.final.how, 'log', why);
      assert.equal(j.files.final.verify.differences, 0, why);
      // The tool's comparison said so; this one is the test's own, after the fact.
      assert.deepEqual(await differences(play, path.join(b.dst, 'rootfs/play')), [], why);
      // Holes kept: no file takes more room on the destination than on the source (plus a block).
      for (const f of fs.readdirSync(play, { recursive: true }) as string[]) {
        const s = fs.lstatSync(path.join(play, f));
        if (!s.isFile()) continue;
        const d = fs.lstatSync(path.join(b.dst, 'rootfs/play', f));
        assert.ok(
          d.blocks <= s.blocks + 8,
          `${f}: ${d.blocks} blocks on the destination, ${s.blocks} on the source (${why})`,
        );
      }
      const at = await readCounter(b.dst);
      await waitFor('the counter to go on', async () => (await readCounter(b.dst)) > at);
      assert.equal(await status(h.srcRoot, name), 'absent');
      await removeEverywhere(h, name);
    });
  }

  test('after a rollback the source is untouched, and the source goes on', async () => {
    const seed = 4242;
    const name = 'frandrb';
    const b = await startExample(h, 'counter', name);
    const play = path.join(b.src, 'rootfs/play');
    seedTree(play);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const { run, release } = await pausedMigration([...baseArgs(h, name, b.dst), '--json'], {
      RUNC_MIGRATE_FAIL_AT: 'restore',
    });
    const ops = await applyOps(name, play, seed);
    // The tree as it is at the freeze: nothing writes to it after the operations.
    const snap = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-snap-'));
    await sh(['rsync', '-aHAX', '--sparse', '--numeric-ids', `${play}/`, `${snap}/`]);
    release();
    const res = await run;
    const why = `seed ${seed}; operations:\n${ops.join('\n')}\n${res.stderr}`;
    assert.equal(res.code, 4, `${why}\n${res.stdout}`);
    assert.equal(JSON.parse(res.stdout).runningOn, 'source');
    assert.deepEqual(await differences(play, snap), [], `the source's tree changed in the rollback: ${why}`);
    // The destination's copy was synced to the frozen source: the same tree.
    assert.deepEqual(await differences(play, path.join(b.dst, 'rootfs/play')), [], why);
    const at = await readCounter(b.src);
    await waitFor('the source to go on', async () => (await readCounter(b.src)) > at);
    fs.rmSync(snap, { recursive: true, force: true });
    await removeEverywhere(h, name);
  });
});
