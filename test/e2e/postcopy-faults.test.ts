// Post-copy's failures between the namespace hosts, with real CRIU lazy pages over TLS:
// the lazy transfer reset from either host (`ss -K`, what a flapping link or a firewall
// reload does) or silently dropped (iptables DROP), the tool killed at each step of the
// window, and storage both hosts share. What is checked is what moved: Redis's key count
// and the digest of its whole data set on the host that keeps it, a counter that goes on,
// exactly one host running the container, and nothing left behind.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  lazyDaemonPid,
  leftovers,
  migrate,
  ns,
  readCounter,
  readEnv,
  removeEverywhere,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

const SRC_ADDR = readEnv().RM_SRC_ADDR;

let h: Hosts;
let pipeMax: string;
const PIPE = '/proc/sys/fs/pipe-max-size';
const INTENT_DIR = '/run/runc-migrate';
before(async () => {
  h = await setupHosts();
  pipeMax = fs.readFileSync(PIPE, 'utf8').trim();
  fs.writeFileSync(PIPE, '4194304');
});
after(() => fs.writeFileSync(PIPE, pipeMax));

const pc = ['--post-copy', '--no-sync-rootfs'];

/** Nothing of a post-copy run left, the source's watchdog included. */
async function postCopyLeftovers(): Promise<string[]> {
  const found = await leftovers();
  const ps = await sh(['pgrep', '-af', 'criu lazy-pages|watchdog.sh'], { reject: false });
  for (const l of ps.stdout.split('\n')) if (l.trim() && !l.includes('pgrep')) found.push(`process: ${l.trim()}`);
  return found;
}

const redis = (where: 'src' | 'dst', args: string[]) =>
  sh([...ns(where), 'redis-cli', '-h', '127.0.0.1', ...args], { reject: false });

/** About 140 MiB of keys, and what a whole copy of them must show: the key count and the data set's digest. */
async function bigRedis(name: string): Promise<{ b: { src: string; dst: string }; keys: string; digest: string }> {
  const b = await startExample(h, 'redis', name);
  await waitFor('redis', async () => (await redis('src', ['ping'])).stdout.includes('PONG'));
  await redis('src', ['debug', 'populate', '128000', 'k', '1000']);
  await redis('src', ['set', 'marker', 'before']);
  return {
    b,
    keys: (await redis('src', ['dbsize'])).stdout.trim(),
    digest: (await redis('src', ['debug', 'digest'])).stdout.trim(),
  };
}

/** The source's link slowed to 80 Mbit/s (tc tbf): a lazy window of about 15 s for 140 MiB, long enough to break. */
async function slowLink(on: boolean): Promise<void> {
  await sh([...ns('src'), 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root'], { reject: false });
  if (on)
    await sh([
      ...ns('src'),
      'tc',
      'qdisc',
      'add',
      'dev',
      'eth0',
      'root',
      'tbf',
      'rate',
      '80mbit',
      'burst',
      '64kb',
      'latency',
      '400ms',
    ]);
}

/** Runs a migration paused in the lazy window (RUNC_MIGRATE_PAUSE_AT), does FAULT there, lets it go on. */
async function faultInWindow(
  name: string,
  bundle: string,
  fault: () => Promise<void>,
  env: Record<string, string> = {},
): Promise<{ code: number; json: any; stderr: string }> {
  const gate = `/tmp/${name}-gate-${process.pid}`;
  fs.rmSync(gate, { force: true });
  fs.rmSync(`${gate}.reached`, { force: true });
  const run = migrate(
    [...baseArgs(h, name, bundle), ...pc, '--json'],
    { RUNC_MIGRATE_PAUSE_AT: `lazy-window:${gate}`, ...env },
    300_000,
  );
  try {
    await waitFor('the lazy window', () => fs.existsSync(`${gate}.reached`), 120_000);
    assert.equal(await status(h.dstRoot, name), 'running', 'the copy runs in the window');
    assert.ok(await lazyDaemonPid(), 'the lazy transfer is under way when the fault comes');
    await fault();
  } finally {
    fs.writeFileSync(gate, '');
  }
  const r = await run;
  fs.rmSync(gate, { force: true });
  fs.rmSync(`${gate}.reached`, { force: true });
  return { code: r.code, json: r.stdout ? JSON.parse(r.stdout) : undefined, stderr: r.stderr };
}

/** The container runs on exactly one host, whole: Redis's key count and digest as before the migration. */
async function wholeOn(name: string, where: 'src' | 'dst', want: { keys: string; digest: string }): Promise<void> {
  const [here, there] = where === 'src' ? [h.srcRoot, h.dstRoot] : [h.dstRoot, h.srcRoot];
  assert.equal(await status(here, name), 'running', `${name} runs on the ${where}`);
  assert.equal(await status(there, name), 'absent', `${name} is gone from the other host`);
  assert.equal((await redis(where, ['dbsize'])).stdout.trim(), want.keys, 'every key');
  assert.equal(
    (await redis(where, ['debug', 'digest'])).stdout.trim(),
    want.digest,
    'the data set is the one that was frozen',
  );
}

describe('post-copy under faults', () => {
  after(async () => {
    await slowLink(false);
    for (const n of ['src', 'dst'] as const)
      await sh([...ns(n), 'iptables', '-w', '-D', 'INPUT', '-s', n === 'src' ? h.dstAddr : SRC_ADDR, '-j', 'DROP'], {
        reject: false,
      });
  });

  for (const from of ['dst', 'src'] as const) {
    test(`every connection between the hosts reset from the ${from === 'dst' ? 'destination' : 'source'} in the lazy window: no copy with missing pages is kept; the source resumes whole`, async () => {
      const name = `pcf-reset-${from}`;
      const { b, keys, digest } = await bigRedis(name);
      await slowLink(true);
      try {
        const peer = from === 'dst' ? SRC_ADDR : h.dstAddr;
        const r = await faultInWindow(name, b.dst, async () => {
          const k = await sh([...ns(from), 'ss', '-K', '-tn', 'dst', peer], { reject: false });
          assert.equal(k.exitCode, 0, k.stderr);
        });
        // The transfer broke: the guard removed its copy (its daemon did not end with every
        // page), CRIU resumed the source, the tool followed (the SSH connection was reset
        // too: it reconnected to ask).
        assert.equal(r.code, 4, r.stderr);
        assert.equal(r.json.runningOn, 'source');
        assert.equal(r.json.postCopy.rolledBack, true);
        assert.notEqual(r.json.postCopy.daemonExit, '0');
        await wholeOn(name, 'src', { keys, digest });
      } finally {
        await slowLink(false);
      }
      assert.deepEqual(await postCopyLeftovers(), []);
      await removeEverywhere(h, name);
    });
  }

  test('the link silently dropped in the lazy window (iptables DROP), then back: the guard removes its copy, the source resumes whole', async () => {
    const name = 'pcf-drop';
    const { b, keys, digest } = await bigRedis(name);
    await slowLink(true);
    const drop = (on: boolean) =>
      Promise.all(
        (['src', 'dst'] as const).map((n) =>
          sh(
            [
              ...ns(n),
              'iptables',
              '-w',
              on ? '-I' : '-D',
              'INPUT',
              '-s',
              n === 'src' ? h.dstAddr : SRC_ADDR,
              '-j',
              'DROP',
            ],
            { reject: !!on },
          ),
        ),
      );
    let lifted: Promise<unknown> | undefined;
    try {
      const r = await faultInWindow(name, b.dst, async () => {
        await drop(true);
        // Back after the guard's stall limit (30 s) and the source watchdog's (45 s): both
        // ended the window alone; the tool learns the guard's decision once it can ask.
        lifted = new Promise((res) => setTimeout(res, 55_000)).then(() => drop(false));
      });
      await lifted;
      assert.equal(r.code, 4, r.stderr);
      assert.equal(r.json.runningOn, 'source');
      await wholeOn(name, 'src', { keys, digest });
    } finally {
      await lifted;
      await drop(false);
      await slowLink(false);
    }
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, name);
  });

  // The tool killed at each step of post-copy; the link stays up. The guard and the
  // source's watchdog end the window alone, and the watchdog runs migrate recover for
  // the source's side (the address, CRIU's lock): the container ends on exactly one host
  // without anyone running recover, and a recover afterwards finds nothing to do.
  const kills: Array<{ point: string; what: string; endsOn: 'src' | 'dst' }> = [
    { point: 'restoring', what: 'while the destination restores', endsOn: 'src' },
    { point: 'window-open', what: 'after the lazy page server started, before any daemon connected', endsOn: 'src' },
    { point: 'window', what: 'in the lazy window', endsOn: 'dst' },
    { point: 'window-ended', what: 'after the last page', endsOn: 'dst' },
  ];
  for (const k of kills) {
    test(`SIGKILL ${k.what} (${k.point}): the container ends on the ${k.endsOn === 'src' ? 'source' : 'destination'} without migrate recover; recover then finds nothing`, async () => {
      const name = `pcf-kill-${k.point}`;
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const t0 = Date.now();
      const r = await migrate([...baseArgs(h, name, b.dst), ...pc], { RUNC_MIGRATE_KILL_AT: `${k.point}:SIGKILL` });
      assert.equal(r.code, -1, `the tool died at ${k.point}: ${r.stderr}`);
      const record = path.join(INTENT_DIR, `${name}.json`);
      // Settled by the guard, the watchdog and the recover it ran: the record goes last.
      await waitFor('the migration to be settled without the tool', () => !fs.existsSync(record), 120_000);
      const settledS = Math.round((Date.now() - t0) / 1000);
      const [here, there] = k.endsOn === 'src' ? [h.srcRoot, h.dstRoot] : [h.dstRoot, h.srcRoot];
      const bundle = k.endsOn === 'src' ? b.src : b.dst;
      assert.equal(await status(here, name), 'running', `settled in ${settledS} s`);
      assert.equal(await status(there, name), 'absent');
      const a = await readCounter(bundle);
      await waitFor('the counter to go on', async () => (await readCounter(bundle)) > a + 1, 10_000);
      if (k.endsOn === 'src') {
        // CRIU's lock inside the counter's own network namespace was lifted (by the recover the watchdog ran).
        const pid = JSON.parse((await sh(['runc', '--root', h.srcRoot, 'state', name])).stdout).pid as number;
        const rules = await sh(['nsenter', '-t', String(pid), '-n', 'iptables', '-w', '-S']);
        assert.doesNotMatch(rules.stdout, /CRIU|0xc114/, `CRIU's lock stayed:\n${rules.stdout}`);
      }
      const rec = await migrate(['recover', ...baseArgs(h, name, b.dst), '--json']);
      assert.equal(rec.code, 0, rec.stderr);
      assert.equal(JSON.parse(rec.stdout).outcome, 'nothing-to-recover');
      assert.deepEqual(await postCopyLeftovers(), []);
      await removeEverywhere(h, name);
    });
  }

  test('a bind mount both hosts share is refused for post-copy, naming it; --post-copy-shared-ok goes on with a warning', async () => {
    const name = 'pcf-shared';
    const shared = `/var/tmp/rm-shared-${process.pid}`;
    fs.mkdirSync(shared, { recursive: true });
    try {
      const b = await startExample(h, 'counter', name);
      // Both bundles bind-mount the same host directory (the namespace hosts share their file systems).
      await removeEverywhere(h, name);
      for (const dir of [b.src, b.dst]) {
        const f = path.join(dir, 'config.json');
        const c = JSON.parse(fs.readFileSync(f, 'utf8'));
        c.mounts.push({ destination: '/data', type: 'bind', source: shared, options: ['rbind', 'rw'] });
        fs.writeFileSync(f, JSON.stringify(c, null, 2));
      }
      await sh([
        'sh',
        '-c',
        `exec ${ns('src').join(' ')} runc --root ${h.srcRoot} run -d --bundle ${b.src} ${name} </dev/null >/dev/null 2>&1`,
      ]);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
      const refused = await migrate([...baseArgs(h, name, b.dst), ...pc]);
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(
        refused.stderr,
        new RegExp(`post-copy with storage both hosts share: bind mount /data \\(${shared}\\)`),
      );
      assert.match(refused.stderr, /--post-copy-shared-ok/);
      assert.equal(await status(h.srcRoot, name), 'running', 'nothing was frozen');
      const ok = await migrate([...baseArgs(h, name, b.dst), ...pc, '--post-copy-shared-ok']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(
        ok.stderr,
        /post-copy with storage both hosts share \(bind mount \/data .*\): if the lazy window breaks, the source resumes older/,
      );
      assert.equal(await status(h.dstRoot, name), 'running');
      assert.deepEqual(await postCopyLeftovers(), []);
      await removeEverywhere(h, name);
    } finally {
      fs.rmSync(shared, { recursive: true, force: true });
    }
  });
});
