// The tool itself dies mid-switchover (RUNC_MIGRATE_KILL_AT makes it kill itself at a
// named point, as SIGKILL from outside or a closed terminal would): the container must
// never run on both hosts, and after `migrate recover` it runs on exactly one, its counter
// never gone back, nothing left on either host (work directories, processes, mounts,
// the intent record, iptables rules, CRIU lock rules, arp_ignore).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  baseArgs,
  echoClient,
  hostState,
  INTENT_DIR,
  keyMaterial,
  leftovers,
  stopClient,
  migrate,
  readCounter,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  whereRunning,
  type Hosts,
} from './hosts.js';

let h: Hosts;
before(async () => {
  h = await setupHosts();
});

describe('the tool killed during the switchover', () => {
  const points: Array<[string, string]> = [
    ['after-dump', 'source'],
    ['copy', 'source'],
    ['restoring', 'source'],
    ['restored', 'source'],
    ['before-prepare', 'source'],
    ['prepared', 'source'],
    ['destination-committed', 'destination'],
    ['committed', 'destination'],
  ];
  for (const [point, expected] of points) {
    test(`SIGKILL at ${point}: never on both hosts; after migrate recover on the ${expected} only, counter intact, nothing left`, async () => {
      const name = 'crash';
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const atStart = await readCounter(b.src);
      const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
        RUNC_MIGRATE_KILL_AT: `${point}:SIGKILL`,
      });
      assert.equal(r.code, -1, `the tool should have died at ${point}: exit ${r.code}\n${r.stderr}`);
      // The last value the source showed (it is gone once the source committed).
      const seenNow = await readCounter(b.src);
      const lastSeen = Number.isFinite(seenNow) ? seenNow : atStart;
      // The participants act alone: never both running, whatever the point.
      const alone = await whereRunning(name, b);
      assert.ok(alone.length <= 1, `running on ${alone.join(' and ')} after the tool died at ${point}`);
      const rec = await migrate(['recover', ...baseArgs(h, name, b.dst), '--json']);
      assert.equal(rec.code, 0, rec.stderr + rec.stdout);
      const j = JSON.parse(rec.stdout);
      assert.equal(j.outcome, 'recovered', rec.stdout);
      assert.equal(j.runningOn, expected);
      const on = await whereRunning(name, b);
      assert.deepEqual(on, [expected], `died at ${point}, recovered: ${rec.stderr}`);
      const now = await readCounter(expected === 'source' ? b.src : b.dst);
      assert.ok(now >= lastSeen, `the counter went back: ${now} < ${lastSeen}`);
      assert.equal(await status(expected === 'source' ? h.dstRoot : h.srcRoot, name), 'absent');
      assert.deepEqual(await hostState(), []);
      await removeEverywhere(h, name);
    });
  }

  test('in doubt, and the destination unreachable: recover changes nothing and says so; reachable again, it settles', async () => {
    const name = 'doubt';
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
      RUNC_MIGRATE_KILL_AT: 'prepared',
    });
    assert.equal(r.code, -1);
    // The destination's guard lost its channel before the word commit: it removed its copy.
    await waitFor('the destination copy to go', async () => (await status(h.dstRoot, name)) === 'absent');
    // The source is prepared: frozen, waiting for a final verdict it must not guess.
    assert.deepEqual(await whereRunning(name, b), []);
    const away = baseArgs(h, name, b.dst);
    away[1] = `root@${h.deadAddr}`;
    const doubt = await migrate(['recover', ...away, '--connect-timeout', '2', '--json']);
    assert.equal(doubt.code, 5, doubt.stderr + doubt.stdout);
    assert.equal(JSON.parse(doubt.stdout).outcome, 'in-doubt');
    assert.deepEqual(await whereRunning(name, b), [], 'recover must not decide without the destination');
    // The next migrate of that container settles it first (as recover does), then migrates.
    const again = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json']);
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.match(again.stderr, /did not finish \(prepared\): settling it first/);
    assert.deepEqual(await whereRunning(name, b), ['destination']);
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  });

  // A closing terminal (SIGHUP) is a request to stop, as SIGTERM: once frozen, the tool
  // finishes the switchover (silently) rather than leave it half-way.
  for (const [point] of points) {
    test(`SIGHUP at ${point}: the switchover finishes, on the destination only, nothing left`, async () => {
      const name = 'hup';
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const atStart = await readCounter(b.src);
      const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
        RUNC_MIGRATE_KILL_AT: `${point}:SIGHUP`,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await whereRunning(name, b), ['destination']);
      assert.ok((await readCounter(b.dst)) >= atStart, 'the counter went back');
      assert.deepEqual(await hostState(), []);
      await removeEverywhere(h, name);
    });
  }

  test('SIGKILL with --move-ip after the restore: the address, its DROP rule and arp_ignore return; the client goes on with the source', async () => {
    await serviceAddressOnSource(h);
    const b = await startExample(h, 'echo', 'echo-crash');
    await new Promise((r) => setTimeout(r, 500));
    const client = echoClient(h);
    await client.connected;
    const r = await migrate([...baseArgs(h, 'echo-crash', b.dst), '--move-ip', `${h.serviceAddr}/32`], {
      RUNC_MIGRATE_KILL_AT: 'restored:SIGKILL',
    });
    assert.equal(r.code, -1, r.stderr);
    await waitFor('the source to run again', async () => (await status(h.srcRoot, 'echo-crash')) === 'running');
    const rec = await migrate(['recover', ...baseArgs(h, 'echo-crash', b.dst)]);
    assert.equal(rec.code, 0, rec.stderr);
    await new Promise((res) => setTimeout(res, 2000));
    const out = await stopClient(client);
    assert.ok(out.sent > 50, JSON.stringify(out));
    const onSrc = await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    const onDst = await sh(['ip', '-n', 'rm-dst', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    assert.match(onSrc.stdout, /inet /);
    assert.equal(onDst.stdout.trim(), '');
    assert.equal(await status(h.dstRoot, 'echo-crash'), 'absent');
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, 'echo-crash');
  });

  // The tool dies as its release of the address starts, and that release (now an orphan)
  // runs 1 s late: after the hold, seeing the tool gone, gave the address back.
  test('SIGKILL as the source releases the address, which runs late: the address stays on the source', async (t) => {
    await serviceAddressOnSource(h);
    const b = await startExample(h, 'echo', 'echo-late');
    await new Promise((r) => setTimeout(r, 500));
    const client = echoClient(h);
    await client.connected;
    // A failed assertion must not leave the client running (the test run would never end).
    let stopped = false;
    t.after(() => {
      if (!stopped) client.proc.kill('SIGKILL');
    });
    const r = await migrate([...baseArgs(h, 'echo-late', b.dst), '--move-ip', `${h.serviceAddr}/32`], {
      RUNC_MIGRATE_FAIL_AT: 'release-late',
      RUNC_MIGRATE_KILL_AT: 'releasing:SIGKILL',
    });
    assert.equal(r.code, -1, r.stderr);
    await waitFor('the source to run again', async () => (await status(h.srcRoot, 'echo-late')) === 'running');
    await waitFor(
      'the late release to end',
      async () => (await sh(['pgrep', '-f', 'address.lock'], { reject: false })).exitCode === 1,
    );
    const rec = await migrate(['recover', ...baseArgs(h, 'echo-late', b.dst)]);
    assert.equal(rec.code, 0, rec.stderr);
    const onSrc = await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    assert.match(onSrc.stdout, /inet /, 'the late release took the address away');
    // The client is answered through the address for 2 s more (stopClient checks each answer came).
    await new Promise((res) => setTimeout(res, 2000));
    stopped = true;
    const out = await stopClient(client);
    assert.ok(out.sent > 50, JSON.stringify(out));
    assert.equal(await status(h.dstRoot, 'echo-late'), 'absent');
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, 'echo-late');
  });
});

describe('the connection or the destination fails during the switchover', () => {
  async function counter(name: string) {
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    return { b, atStart: await readCounter(b.src) };
  }
  async function endsOn(
    name: string,
    b: { src: string; dst: string },
    atStart: number,
    expected: 'source' | 'destination',
  ) {
    assert.deepEqual(await whereRunning(name, b), [expected]);
    assert.ok((await readCounter(expected === 'source' ? b.src : b.dst)) >= atStart, 'the counter went back');
    assert.equal(await status(expected === 'source' ? h.dstRoot : h.srcRoot, name), 'absent');
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  }

  const drops: Array<[string, 'source' | 'destination', number]> = [
    ['after-dump', 'source', 4], // while the address is claimed and the copy begins
    ['copy', 'source', 4],
    ['restoring', 'source', 4], // the guard finishes its restore, then removes it

    ['restored', 'source', 4],
    ['prepared', 'source', 4], // the guard loses its channel before the word commit
    ['destination-committed', 'destination', 0],
  ];
  for (const [point, expected, code] of drops) {
    test(`SSH dropped at ${point}: ${expected === 'source' ? 'rolled back' : 'migrated'}, on the ${expected} only, nothing left`, async () => {
      const name = 'drop';
      const { b, atStart } = await counter(name);
      const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'tunnel', '--json'], {
        RUNC_MIGRATE_DROP_AT: point,
      });
      assert.equal(r.code, code, r.stderr + r.stdout);
      assert.equal(JSON.parse(r.stdout).runningOn, expected);
      await endsOn(name, b, atStart, expected);
    });
  }

  test('an empty verdict file in the hold: read as rollback, the source resumes, not frozen for ever', async () => {
    const name = 'empty';
    const { b, atStart } = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json'], {
      RUNC_MIGRATE_EMPTY_VERDICT_AT: 'restored',
    });
    assert.equal(r.code, 4, r.stderr + r.stdout);
    assert.match(JSON.parse(r.stdout).error.message, /hold ended by itself/);
    await endsOn(name, b, atStart, 'source');
  });

  test('SIGKILL with the page server transport: the page server goes with the connection', async () => {
    const name = 'pskill';
    const { b, atStart } = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'tls'], {
      RUNC_MIGRATE_KILL_AT: 'after-dump',
    });
    assert.equal(r.code, -1, r.stderr);
    await waitFor(
      'the page server to go',
      async () => !(await leftovers()).some((l) => l.includes('page-server')),
      5000,
    );
    // The work directories stay for recover; the TLS keys and port rules went with the tool.
    await waitFor('the TLS keys to go', () => keyMaterial().length === 0, 5000);
    await waitFor('the port rules to go', async () => !(await leftovers()).some((l) => l.startsWith('rule on')), 5000);
    const rec = await migrate(['recover', ...baseArgs(h, name, b.dst)]);
    assert.equal(rec.code, 0, rec.stderr);
    await endsOn(name, b, atStart, 'source');
  });

  test('a restore that outlives its limit is killed with its process group; the source resumes', async () => {
    const name = 'hang';
    const { b, atStart } = await counter(name);
    const t0 = Date.now();
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--hold-timeout', '15', '--json'], {
      RUNC_MIGRATE_FAIL_AT: 'restore-hang',
    });
    assert.equal(r.code, 4, r.stderr + r.stdout);
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    assert.match(JSON.parse(r.stdout).error.message, /restore/);
    const sleeper = await sh(['pgrep', '-f', 'sleep 3597'], { reject: false });
    assert.equal(sleeper.stdout.trim(), '', 'the hung restore is still running');
    await endsOn(name, b, atStart, 'source');
  });

  // The restore killed inside CRIU: runc and CRIU leave their tasks and mounts (reap.ts).
  for (const [fault, when] of [
    ['restore-stall', 'its root task forked, before runc wrote its state'],
    ['restore-stall-late', "every task restored, runc's state written"],
  ] as const) {
    test(`a restore killed inside CRIU (${when}): its tasks, runc's and CRIU's mounts and runc's directory go; the source resumes`, async () => {
      const name = fault === 'restore-stall' ? 'stall' : 'stall-late';
      const { b, atStart } = await counter(name);
      const r = await migrate(
        [...baseArgs(h, name, b.dst), '--transport', 'stream', '--hold-timeout', '15', '--json'],
        {
          RUNC_MIGRATE_FAIL_AT: fault,
        },
      );
      assert.equal(r.code, 4, r.stderr + r.stdout);
      assert.match(JSON.parse(r.stdout).error.message, /restore/);
      // CRIU was inside the restore when it was killed: its stage script ran.
      const sleeper = await sh(['pgrep', '-f', 'sleep 3596'], { reject: false });
      assert.equal(sleeper.stdout.trim(), '', 'the stalled restore is still running');
      // Nothing of the copy in its cgroups, no directory for the name in the destination's runc root.
      const procs: string[] = [];
      for (const c of fs.readdirSync('/sys/fs/cgroup')) {
        const f = path.join('/sys/fs/cgroup', c, 'rm-dst', name, 'cgroup.procs');
        if (fs.existsSync(f)) procs.push(...fs.readFileSync(f, 'utf8').split('\n').filter(Boolean));
      }
      assert.deepEqual(procs, [], 'tasks of the killed restore are left');
      assert.ok(!fs.existsSync(path.join(h.dstRoot, name)), `runc's directory for ${name} is left on the destination`);
      await endsOn(name, b, atStart, 'source');
    });
  }

  test('a restored copy that dies right after the restore is not committed; the source resumes', async () => {
    const name = 'dies';
    const { b, atStart } = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json'], {
      RUNC_MIGRATE_FAIL_AT: 'restore-dies',
    });
    assert.equal(r.code, 4, r.stderr + r.stdout);
    assert.match(JSON.parse(r.stdout).error.message, /right after the restore/);
    await endsOn(name, b, atStart, 'source');
  });

  test('a full work directory on the source: the verdicts need no room; the migration completes', async () => {
    const name = 'full';
    const { b, atStart } = await counter(name);
    const dir = fs.mkdtempSync('/var/tmp/rm-full-');
    await sh(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    try {
      // Fill the work directory's file system once the images are written: what is left
      // to write on the source is the hold's verdicts.
      const r = await migrate(
        [...baseArgs(h, name, b.dst), '--transport', 'stream', '--work-dir', dir, '--force', '--json'],
        {
          RUNC_MIGRATE_FILL_AT: 'restored',
        },
      );
      assert.equal(r.code, 0, r.stderr + r.stdout);
      await endsOn(name, b, atStart, 'destination');
    } finally {
      await sh(['umount', dir], { reject: false });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a checkpoint that ends without its hold (the source gone): the images are restored on the destination, not deleted', async () => {
    const name = 'nohold';
    const { b, atStart } = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json'], {
      RUNC_MIGRATE_FAIL_AT: 'no-hold',
    });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stderr, /without holding the source/);
    await endsOn(name, b, atStart, 'destination');
  });

  test('stale work directories of a dead run are removed by the next run, on both hosts', async () => {
    const name = 'stale';
    const { b } = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
      RUNC_MIGRATE_KILL_AT: 'after-dump',
    });
    assert.equal(r.code, -1);
    // The record is settled by hand here (as an operator who reads the hold might): only
    // the directories remain, with a dead owner.
    fs.rmSync(INTENT_DIR, { recursive: true, force: true });
    await waitFor('the source to run again', async () => (await status(h.srcRoot, name)) === 'running');
    assert.ok((await leftovers()).length >= 2, 'the dead run left its work directories');
    const again = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, name);
  });
});
