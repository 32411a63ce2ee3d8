// Replication and failover on the namespace hosts (issue 25): `migrate replicate` keeps
// checkpoints of a running counter on the destination host (the standby) and a lease
// there; the source is then killed hard, torn mid-checkpoint, or cut off by a silent
// partition (iptables DROP), and `migrate failover` (run from the client's namespace)
// restores the newest complete checkpoint. What is asserted is the state that moved (the
// count goes on from no less than its value at that checkpoint) and that the counter never
// runs on both hosts (sampled every 100 ms through the partition). This kernel has no
// soft-dirty tracking: every checkpoint is a full dump.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  INTENT_DIR,
  migrate,
  ns,
  readCounter,
  readEnv,
  type Replicating,
  replicating,
  ROOT,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let srcAddr: string;
const REPLICAS = '/var/tmp/runc-migrate-hosts-replicas';

before(async () => {
  h = await setupHosts();
  srcAddr = readEnv().RM_SRC_ADDR;
  fs.rmSync(REPLICAS, { recursive: true, force: true });
});
after(() => fs.rmSync(REPLICAS, { recursive: true, force: true }));

const BIN = path.join(ROOT, 'bin/migrate');
/** The standby's lease clock (its /proc/uptime, ms): the test hosts share this machine's kernel. */
const uptimeMs = () => Math.round(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000);

function connection(): string[] {
  return ['-i', h.key, '--known-hosts', h.knownHosts, '--remote-runc-root', h.dstRoot, '--replica-dir', REPLICAS];
}

/** Starts `migrate replicate` in the source's namespace, --json; its events as they come. */
function replicate(name: string, extra: string[]): Replicating {
  return replicating(h, name, REPLICAS, extra);
}

/** `migrate failover` from the client's namespace (a third machine that reaches the standby). */
async function failover(name: string, extra: string[] = []) {
  const r = await execa(
    ns('client')[0],
    [...ns('client').slice(1), 'node', BIN, 'failover', name, `root@${h.dstAddr}`, ...connection(), '--json', ...extra],
    { reject: false, stdin: 'ignore', env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' }, timeout: 120_000 },
  );
  let report: Record<string, unknown> = {};
  try {
    report = JSON.parse(String(r.stdout)) as Record<string, unknown>;
  } catch {
    /* asserted below */
  }
  return { code: r.exitCode ?? -1, report, stderr: String(r.stderr) };
}

/** The count of the copy on the standby (its bundle is in the replica), NaN when it does not run. */
async function standbyCounter(name: string): Promise<number> {
  const r = await sh(['runc', '--root', h.dstRoot, 'state', name], { reject: false });
  if (r.exitCode !== 0) return NaN;
  try {
    return Number(fs.readFileSync(`/proc/${JSON.parse(r.stdout).pid}/root/dev/shm/count`, 'utf8').trim());
  } catch {
    return NaN;
  }
}

/** The source host dies: the tool and its fence killed, the container killed and deleted. */
async function killSource(name: string, rep: Replicating): Promise<void> {
  rep.proc.kill('SIGKILL');
  await rep.ended;
  await sh(['pkill', '-KILL', '-f', `runc-migrate-fence .*${h.srcRoot}`], { reject: false });
  await sh(['runc', '--root', h.srcRoot, 'kill', name, 'KILL'], { reject: false });
  await waitFor('the source copy to stop', async () => (await status(h.srcRoot, name)) !== 'running');
  await sh(['runc', '--root', h.srcRoot, 'delete', '--force', name], { reject: false });
}

async function cleanup(name: string): Promise<void> {
  for (const root of [h.srcRoot, h.dstRoot])
    await sh(['runc', '--root', root, 'delete', '--force', name], { reject: false });
  fs.rmSync(path.join(REPLICAS, name), { recursive: true, force: true });
  // The work directories of tools the test killed (a dead host's tmpfs would be gone).
  for (const d of fs.readdirSync('/dev/shm').filter((f) => f.startsWith('runc-migrate-replica.'))) {
    const owner = fs.existsSync(`/dev/shm/${d}/owner`) ? fs.readFileSync(`/dev/shm/${d}/owner`, 'utf8') : '';
    if (owner.includes(`"container":"${name}"`)) fs.rmSync(`/dev/shm/${d}`, { recursive: true, force: true });
  }
  // Nothing of any replicate may outlive its container: no fence, no dump held, no listener.
  await waitFor('no replicate process left', () => replicaProcesses().length === 0, 10_000).catch(() =>
    assert.fail(`left running: ${replicaProcesses().join('; ')}`),
  );
  // A tool killed with SIGKILL leaves its lock (the next run on this container takes a dead
  // one over); a lock whose owner lives is a leak. The crash tests count every file there.
  const lock = path.join(INTENT_DIR, `${name}.lock`);
  if (fs.existsSync(lock)) {
    const pid = Number(fs.readFileSync(lock, 'utf8').split('\n')[0]);
    assert.ok(!fs.existsSync(`/proc/${pid}`), `${lock} is held by pid ${pid}, still alive`);
    fs.rmSync(lock, { force: true });
  }
}

function replicaProcesses(): string[] {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return `${p} ${fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ')}`;
      } catch {
        return '';
      }
    })
    .filter((c) => c.includes('runc-migrate-replica.') || c.includes('trigger.sock'));
}

/** The fences running (their command lines, one each). */
function fences(): string[] {
  const r = fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        return '';
      }
    });
  // One per fence: a subshell the fence forks for a moment (its $(...)) has the same
  // command line, and is not a second fence.
  return [...new Set(r.filter((c) => c.includes('runc-migrate-fence') && c.includes(h.srcRoot)))];
}

/** A silent partition between the source and the standby: the standby's iptables DROP both ways (no FIN, no reset), or its removal. */
async function partition(how: 'cut' | 'heal'): Promise<void> {
  for (const [chain, way] of [
    ['INPUT', '-s'],
    ['OUTPUT', '-d'],
  ]) {
    const op = how === 'cut' ? '-I' : '-D';
    await sh(['nsenter', '--net=/run/netns/rm-dst', 'iptables', '-w', op, chain, way, srcAddr, '-j', 'DROP'], {
      reject: how === 'cut',
    });
  }
}

/** Samples both hosts every 100 ms until stopped; stop() returns the moments the counter ran on both. */
function watchBoth(name: string) {
  const both: string[] = [];
  let sampling = true;
  const sampled = (async () => {
    while (sampling) {
      const [s, d] = [await status(h.srcRoot, name), await status(h.dstRoot, name)];
      if (s === 'running' && d === 'running') both.push(`${new Date().toISOString()}: running on both`);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      sampling = false;
      await sampled;
      return both;
    },
  };
}

/** Samples the counter's count every 100 ms with the time (the source's). */
function sampler(name: string) {
  const samples: Array<{ t: number; n: number }> = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      const n = await readCounter(path.join(h.srcBundles, name));
      if (Number.isFinite(n)) samples.push({ t: Date.now(), n });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    samples,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

describe('replicate and failover (namespace hosts)', { concurrency: false }, () => {
  test('the source killed hard: failover restores the newest complete checkpoint and the count goes on from it', async () => {
    const name = 'rep-kill';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const counts = sampler(name);
    const rep = replicate(name, ['--interval', '1s']);
    try {
      await waitFor('three checkpoints', () => rep.checkpoints().length >= 3, 60_000);
      await killSource(name, rep);
      await counts.stop();
      const last = rep.events.filter((e) => e.event === 'checkpoint').at(-1) as { seq: number; frozenAt: number };
      // Too early: the lease (3 intervals) is still fresh.
      const early = await failover(name);
      assert.equal(early.code, 3, `failover before the lease expired: ${early.stderr}`);
      assert.match(String((early.report.error as { message: string }).message), /fresh/);
      const r = await failover(name, ['--watch']);
      assert.equal(r.code, 0, `failover: ${JSON.stringify(r.report)} ${r.stderr}`);
      const restored = r.report.restored as { seq: number; rpoMs: number; rtoMs: number };
      assert.equal(restored.seq, last.seq, 'the newest complete checkpoint');
      const atCheckpoint = counts.samples.filter((s) => s.t <= last.frozenAt).at(-1)?.n ?? 0;
      const atKill = counts.samples.at(-1)?.n ?? Infinity;
      const first = await standbyCounter(name);
      assert.ok(
        first >= atCheckpoint && first <= atKill + 10,
        `restored ${first}; at the checkpoint ${atCheckpoint}, at the kill ${atKill}`,
      );
      await waitFor('the restored count to advance', async () => (await standbyCounter(name)) > first, 5000);
      assert.ok(restored.rpoMs > 0 && restored.rtoMs > 0);
      assert.deepEqual(
        fs.readdirSync('/dev/shm').filter((f) => f.startsWith('runc-migrate-failover')),
        [],
        "failover's work directory is removed",
      );
    } finally {
      rep.proc.kill('SIGKILL');
      await counts.stop();
      await cleanup(name);
    }
  });

  test("Redis: after the source dies, failover restores the newest checkpoint's keys (64 MB populated)", async () => {
    const name = 'rep-redis';
    await startExample(h, 'redis', name, { dstRootfs: false });
    const redis = (where: 'src' | 'dst', args: string[]) =>
      sh([...ns(where), 'redis-cli', '-h', '127.0.0.1', ...args], { reject: false });
    await waitFor('redis', async () => (await redis('src', ['ping'])).stdout.includes('PONG'));
    await redis('src', ['debug', 'populate', '64000', 'k', '1000']);
    const rep = replicate(name, ['--interval', '1s']);
    try {
      await waitFor('a first checkpoint', () => rep.checkpoints().length >= 1, 60_000);
      await redis('src', ['set', 'before', 'yes']);
      const setAt = Date.now();
      await waitFor(
        'a checkpoint after the SET',
        () => rep.events.some((e) => e.event === 'checkpoint' && (e.frozenAt as number) > setAt),
        60_000,
      );
      await killSource(name, rep);
      const r = await failover(name, ['--watch']);
      assert.equal(r.code, 0, `failover: ${JSON.stringify(r.report)} ${r.stderr}`);
      await waitFor('redis on the standby', async () => (await redis('dst', ['ping'])).stdout.includes('PONG'));
      assert.equal((await redis('dst', ['get', 'before'])).stdout.trim(), 'yes');
      assert.equal((await redis('dst', ['dbsize'])).stdout.trim(), '64001');
      const bytes = rep.events.filter((e) => e.event === 'checkpoint').map((e) => e.bytes as number);
      assert.ok(Math.min(...bytes) > 64e6, `full dumps: ${bytes.join(', ')} bytes`);
    } finally {
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });

  test("a checkpoint torn by the tool's death is never restored: the previous one is", async () => {
    const name = 'rep-torn';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const rep = replicate(name, ['--interval', '1s']);
    const store = path.join(REPLICAS, name, 'checkpoints');
    try {
      await waitFor('two checkpoints', () => rep.checkpoints().length >= 2, 60_000);
      // Killed once the next checkpoint's partial directory is there (its tree being copied).
      await waitFor(
        'a checkpoint being written',
        () => fs.existsSync(store) && fs.readdirSync(store).some((d) => /^\.\d+\.partial$/.test(d)),
        30_000,
      );
      const torn = Number(
        fs
          .readdirSync(store)
          .find((d) => d.endsWith('.partial'))
          ?.match(/\d+/)?.[0],
      );
      await killSource(name, rep);
      const complete = rep.events.filter((e) => e.event === 'checkpoint').map((e) => e.seq as number);
      assert.ok(!complete.includes(torn), `checkpoint ${torn} was torn, not published`);
      const r = await failover(name, ['--watch']);
      assert.equal(r.code, 0, `failover: ${JSON.stringify(r.report)} ${r.stderr}`);
      assert.equal((r.report.restored as { seq: number }).seq, Math.max(...complete));
      assert.ok(Number.isFinite(await standbyCounter(name)));
    } finally {
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });

  test('a silent partition: the source pauses before its lease expires, failover restores after, and healing leaves one copy', async () => {
    const name = 'rep-part';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const rep = replicate(name, ['--interval', '1s', '--lease', '4s']);
    // Both copies, every 100 ms, from the start of the partition to the end.
    const watch = watchBoth(name);
    let both: string[] = [];
    try {
      await waitFor('two checkpoints', () => rep.checkpoints().length >= 2, 60_000);
      await partition('cut');
      const lease = JSON.parse(fs.readFileSync(path.join(REPLICAS, name, 'lease'), 'utf8')) as { expiresAt: number };
      await waitFor('the source to pause itself', async () => (await status(h.srcRoot, name)) === 'paused', 10_000);
      const pausedAt = uptimeMs();
      const current = JSON.parse(fs.readFileSync(path.join(REPLICAS, name, 'lease'), 'utf8')) as { expiresAt: number };
      assert.ok(
        pausedAt < current.expiresAt,
        `paused at ${pausedAt}, the lease on the standby expires at ${current.expiresAt} (at the partition: ${lease.expiresAt})`,
      );
      const r = await failover(name, ['--watch']);
      assert.equal(r.code, 0, `failover: ${JSON.stringify(r.report)} ${r.stderr}`);
      assert.equal(await status(h.dstRoot, name), 'running');
      // Healing: the source hears of the failover at its next renewal and stays paused.
      await partition('heal');
      const end = await Promise.race([rep.ended, new Promise<undefined>((res) => setTimeout(res, 30_000))]);
      assert.ok(end, 'replicate ended once it heard of the failover');
      assert.equal(end.code, 5, end.stderr);
      assert.ok(rep.events.some((e) => e.event === 'failed-over'));
      assert.ok(rep.events.some((e) => e.event === 'fenced'));
      assert.equal(await status(h.srcRoot, name), 'paused');
      assert.deepEqual(fences(), [], 'the fence ended');
      await new Promise((res) => setTimeout(res, 500));
    } finally {
      both = await watch.stop();
      await partition('heal');
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
    assert.deepEqual(both, [], 'never two running copies');
  });

  test('--fence none: the source serves through the partition; failover refuses without --source, and with it stops the source first', async () => {
    const name = 'rep-nofence';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const rep = replicate(name, ['--interval', '1s', '--lease', '4s', '--fence', 'none']);
    const watch = watchBoth(name);
    let both: string[] = [];
    try {
      await waitFor('two checkpoints', () => rep.checkpoints().length >= 2, 60_000);
      await partition('cut');
      const lease = JSON.parse(fs.readFileSync(path.join(REPLICAS, name, 'lease'), 'utf8')) as { expiresAt: number };
      await waitFor('the lease to expire', () => uptimeMs() > lease.expiresAt + 500, 10_000);
      assert.equal(await status(h.srcRoot, name), 'running', 'the source went on serving');
      const refused = await failover(name);
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(String((refused.report.error as { message: string }).message), /does not fence itself/);
      const r = await failover(name, ['--source', `root@${srcAddr}`, '--runc-root', h.srcRoot]);
      assert.equal(r.code, 0, `failover: ${JSON.stringify(r.report)} ${r.stderr}`);
      assert.equal(r.report.source, 'stopped-now');
      assert.equal(await status(h.srcRoot, name), 'absent');
      assert.equal(await status(h.dstRoot, name), 'running');
      await partition('heal');
      const end = await Promise.race([rep.ended, new Promise<undefined>((res) => setTimeout(res, 30_000))]);
      assert.ok(end, 'replicate ended once it heard of the failover');
      assert.equal(end.code, 5, end.stderr);
    } finally {
      both = await watch.stop();
      await partition('heal');
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
    assert.deepEqual(both, [], 'never two running copies');
  });

  test('the trigger socket: CHECKPOINT from inside the container makes a checkpoint; MIGRATE moves it to the standby', async () => {
    const name = 'rep-trig';
    const trigDir = path.join(h.dir, 'trigger', name);
    fs.rmSync(trigDir, { recursive: true, force: true });
    for (const [side, root] of [
      ['src', h.srcBundles],
      ['dst', h.dstBundles],
    ] as const) {
      await execa(
        'bash',
        [path.join(ROOT, 'examples/make-bundle.sh'), 'counter', path.join(root, name), `/rm-${side}/${name}`],
        {
          env: { TRIGGER_DIR: trigDir },
          stdout: 'ignore',
        },
      );
    }
    fs.rmSync(path.join(h.dstBundles, name, 'rootfs'), { recursive: true, force: true });
    await sh([
      'sh',
      '-c',
      `exec ${ns('src').join(' ')} runc --root ${h.srcRoot} run -d --bundle ${path.join(h.srcBundles, name)} ${name} </dev/null >/dev/null 2>&1`,
    ]);
    const sock = path.join(trigDir, 'trigger.sock');
    // A long interval: checkpoints after the first come only when asked.
    const rep = replicate(name, ['--interval', '60s', '--trigger-socket', sock]);
    const ask = (word: string) =>
      sh(['runc', '--root', h.srcRoot, 'exec', name, '/bin/trigger', '/run/migrate/trigger.sock', word]);
    try {
      await waitFor('the first checkpoint', () => rep.checkpoints().length >= 1, 60_000);
      await ask('CHECKPOINT');
      await waitFor('the asked-for checkpoint', () => rep.checkpoints().length >= 2, 10_000);
      await ask('HELLO');
      await waitFor('the unknown word logged', () =>
        rep.events.some((e) => e.event === 'trigger' && e.text === 'HELLO' && e.action === 'ignored'),
      );
      const before = await readCounter(path.join(h.srcBundles, name));
      await ask('MIGRATE');
      const end = await Promise.race([rep.ended, new Promise<undefined>((res) => setTimeout(res, 120_000))]);
      assert.ok(end, 'replicate ended with the migration');
      assert.equal(end.code, 0, end.stderr);
      const migrated = rep.events.find((e) => e.event === 'migrated') as
        | { report: { exitCode: number; replica?: { seq: number; removed?: boolean } } }
        | undefined;
      assert.equal(migrated?.report.exitCode, 0);
      assert.equal(await status(h.srcRoot, name), 'absent');
      assert.equal(await status(h.dstRoot, name), 'running');
      const after = await readCounter(path.join(h.dstBundles, name));
      assert.ok(after >= before, `the count went on: ${before} -> ${after}`);
      assert.equal(fs.existsSync(sock), false, 'the socket is removed');
      // The migration started from the replica, which it removed once committed.
      const replica = migrated?.report.replica;
      assert.ok(replica && replica.seq >= 2 && replica.removed, JSON.stringify(replica));
      assert.equal(fs.existsSync(path.join(REPLICAS, name)), false, 'the replica is removed after the commit');
    } finally {
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });

  test('a planned migration to the standby stops replicate and starts from its replica: fewer bytes move, and a same-size rewrite with an old time since the checkpoint still arrives', async () => {
    const name = 'rep-plan';
    const b = await startExample(h, 'counter', name, { dstRootfs: false });
    // 24 MB of files the container does not change, and one it will have rewritten since.
    const bulk = path.join(b.src, 'rootfs', 'var', 'bulk');
    fs.mkdirSync(bulk, { recursive: true });
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(bulk, `blob${i}`), crypto.randomBytes(4 << 20));
    const kept = path.join(b.src, 'rootfs', 'var', 'kept.txt');
    fs.writeFileSync(kept, 'A'.repeat(4096));
    const old = new Date('2020-01-01T00:00:00Z');
    fs.utimesSync(kept, old, old);
    // A long interval: no checkpoint after the first, which the rewrite then follows.
    const rep = replicate(name, ['--interval', '60s']);
    try {
      await waitFor('a checkpoint', () => rep.checkpoints().length >= 1, 60_000);
      // After that checkpoint: the same size, the same old time, other bytes.
      fs.writeFileSync(kept, 'B'.repeat(4096));
      fs.utimesSync(kept, old, old);
      const before = await readCounter(b.src);
      const r = await migrate([...baseArgs(h, name, b.dst), '--replica-dir', REPLICAS, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as {
        replica?: { seq: number; stoppedReplicate?: number; removed?: boolean };
        files: {
          presync: Array<{ figures: { wireBytes: number; totalFileBytes: number } }>;
          basis?: { marked: number };
        };
      };
      const end = await Promise.race([rep.ended, new Promise<undefined>((res) => setTimeout(res, 5_000))]);
      assert.ok(end, 'replicate was stopped by the migration');
      assert.equal(end.code, 0, end.stderr);
      assert.equal(report.replica?.stoppedReplicate, rep.proc.pid);
      assert.equal(report.replica?.seq, rep.checkpoints()[0].seq, JSON.stringify(report.replica));
      // Without the replica the pre-sync sends the whole tree (24 MB and more); from it, a few hundred KB.
      const first = report.files.presync[0].figures;
      assert.ok(first.totalFileBytes > 24 << 20, JSON.stringify(first));
      assert.ok(first.wireBytes < first.totalFileBytes / 20, `sent ${first.wireBytes} of ${first.totalFileBytes}`);
      assert.ok((report.files.basis?.marked ?? 0) >= 1, JSON.stringify(report.files.basis));
      assert.equal(fs.readFileSync(path.join(b.dst, 'rootfs', 'var', 'kept.txt'), 'utf8'), 'B'.repeat(4096));
      assert.equal(await status(h.srcRoot, name), 'absent');
      assert.equal(await status(h.dstRoot, name), 'running');
      const after = await readCounter(b.dst);
      assert.ok(after >= before, `the count went on: ${before} -> ${after}`);
      assert.equal(report.replica?.removed, true);
      assert.equal(fs.existsSync(path.join(REPLICAS, name)), false);
    } finally {
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });

  test('replicate restarted after its tool was killed: the earlier fence is stopped, the container runs on past its deadline', async () => {
    const name = 'rep-restart';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const first = replicate(name, ['--interval', '1s']);
    let second: Replicating | undefined;
    try {
      await waitFor('two checkpoints', () => first.checkpoints().length >= 2, 60_000);
      first.proc.kill('SIGKILL');
      await first.ended;
      assert.equal(fences().length, 1, "the killed tool's fence watches on");
      second = replicate(name, ['--interval', '1s']);
      await waitFor('a checkpoint of the second run', () => (second?.checkpoints().length ?? 0) >= 1, 60_000);
      assert.equal(fences().length, 1, 'one fence: the earlier one stopped');
      // The first run's lease (5 s) would have run out by now.
      await new Promise((r) => setTimeout(r, 6000));
      assert.equal(await status(h.srcRoot, name), 'running');
      second.proc.kill('SIGINT');
      const end = await second.ended;
      assert.equal(end.code, 0, end.stderr);
      assert.deepEqual(fences(), []);
    } finally {
      first.proc.kill('SIGKILL');
      second?.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });

  test('SIGINT: replicate stops, releases the lease and removes what it added; failover then refuses', async () => {
    const name = 'rep-int';
    await startExample(h, 'counter', name, { dstRootfs: false });
    const before = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('runc-migrate-replica'));
    const rep = replicate(name, ['--interval', '1s']);
    try {
      await waitFor('two checkpoints', () => rep.checkpoints().length >= 2, 60_000);
      rep.proc.kill('SIGINT');
      const end = await rep.ended;
      assert.equal(end.code, 0, end.stderr);
      assert.equal(await status(h.srcRoot, name), 'running');
      assert.deepEqual(fences(), []);
      assert.deepEqual(
        fs.readdirSync('/dev/shm').filter((f) => f.startsWith('runc-migrate-replica') && !before.includes(f)),
        [],
      );
      const lease = JSON.parse(fs.readFileSync(path.join(REPLICAS, name, 'lease'), 'utf8')) as { released?: boolean };
      assert.equal(lease.released, true);
      const r = await failover(name);
      assert.equal(r.code, 3);
      assert.match(String((r.report.error as { message: string }).message), /ended cleanly/);
      assert.equal(await status(h.dstRoot, name), 'absent');
    } finally {
      rep.proc.kill('SIGKILL');
      await cleanup(name);
    }
  });
});
