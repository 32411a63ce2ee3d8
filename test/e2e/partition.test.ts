// Silent partitions during the switchover: at a named step the destination stops
// exchanging packets with the source (iptables DROP, no FIN, no reset: what a dead link
// or a firewall does), both ways or one way, and the link heals later or not at all. The
// counter must run on at most one host at every moment (both are sampled every 100 ms
// while the tool runs, not only at the end), the source must never be resumed once the
// destination may have committed, and after `migrate recover`, run as the tool prints it
// (no runc flags: it reads them from its record), the container runs on exactly one host
// with nothing left on either.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  hostState,
  migrate,
  ns,
  readCounter,
  readEnv,
  removeEverywhere,
  ROOT,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  whereRunning,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let srcAddr: string;
before(async () => {
  h = await setupHosts();
  srcAddr = readEnv().RM_SRC_ADDR;
});

type Way = 'both' | 'in' | 'out';

/** The destination's rules that drop what comes from (in) or goes to (out) the source. */
function dropRules(way: Way): string[][] {
  const rules: string[][] = [];
  if (way !== 'out') rules.push(['INPUT', '-s', srcAddr, '-j', 'DROP']);
  if (way !== 'in') rules.push(['OUTPUT', '-d', srcAddr, '-j', 'DROP']);
  return rules;
}
const ipt = (op: '-I' | '-D', rule: string[]) => ['nsenter', '--net=/run/netns/rm-dst', 'iptables', '-w', op, ...rule];

async function heal(way: Way): Promise<void> {
  for (const r of dropRules(way)) while ((await sh(ipt('-D', r), { reject: false })).exitCode === 0);
}

/**
 * Samples both counters every 100 ms until STOP resolves; returns the moments at which both
 * ran: a 1 s window in which each advanced at least 3 times (the counter ticks every 0.2 s,
 * so a switchover, where one stops before the other starts, gives at most 5 ticks in all).
 */
async function sampleWhile(
  b: { src: string; dst: string },
  stop: Promise<unknown>,
): Promise<{ both: string[]; samples: number }> {
  let done = false;
  void stop.finally(() => (done = true));
  const seen: Array<{ t: number; s: number; d: number }> = [];
  const both: string[] = [];
  const t0 = Date.now();
  while (!done) {
    const t = Date.now();
    seen.push({ t, s: await readCounter(b.src), d: await readCounter(b.dst) });
    const win = seen.filter((x) => x.t > t - 1000);
    let ups = 0;
    let upd = 0;
    for (let i = 1; i < win.length; i++) {
      if (win[i].s > win[i - 1].s) ups++;
      if (win[i].d > win[i - 1].d) upd++;
    }
    if (ups >= 3 && upd >= 3)
      both.push(`${t - t0} ms: source ${win.map((x) => x.s).join(',')}; destination ${win.map((x) => x.d).join(',')}`);
    await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
  }
  return { both, samples: seen.length };
}

/** The tool's SSH options and nothing else: what `migrate recover NAME HOST` needs as printed. */
const sshOnly = () => [`root@${h.dstAddr}`, '-i', h.key, '--known-hosts', h.knownHosts];

interface Case {
  point: string;
  way: Way;
  /** Heal after this many ms of partition (undefined: stays until the tool has ended). */
  healAfterMs?: number;
  /** Where the container must run once recovered ('either': the word in flight may or may not have got through before the rule). */
  ends: 'source' | 'destination' | 'either';
  why: string;
  /** The page transport (default stream); tls leaves the destination a page server, TLS keys and port rules whose keepers must go by themselves. */
  transport?: string;
}

const CASES: Case[] = [
  {
    point: 'after-dump',
    way: 'both',
    ends: 'source',
    why: 'before the guard starts: nothing on the destination; the source resumes once the tool is sure of that',
  },
  {
    point: 'copy',
    way: 'both',
    ends: 'source',
    why: 'before the word restore: the guard never restores; the hold resumes the source at its deadline',
  },
  {
    point: 'restoring',
    way: 'both',
    ends: 'source',
    why: 'the stopped copy is removed by its guard (no heartbeat); the source resumes at its deadline',
  },
  {
    point: 'restored',
    way: 'out',
    ends: 'destination',
    why: 'the words still reach the guard, its answers do not: it commits on the word commit; the tool is in doubt, the source stays frozen until recover commits',
  },
  {
    point: 'prepared',
    way: 'both',
    ends: 'source',
    transport: 'tls',
    why: "prepared: in doubt for the tool; the guard removes its stopped copy (and the TLS keys' and port rules' keepers end once their channels go quiet); recover rolls back",
  },
  {
    point: 'commit-sent',
    way: 'in',
    ends: 'either',
    why: 'the word commit is lost (the guard removes its copy; recover rolls back) or got out just before the rule (the guard commits; recover commits)',
  },
  {
    point: 'commit-sent',
    way: 'out',
    ends: 'destination',
    why: 'the word commit arrives, its answer is lost: the guard commits; the source stays frozen until recover commits it',
  },
  {
    point: 'destination-committed',
    way: 'both',
    ends: 'destination',
    why: "the commit was acknowledged: migrated; the destination's work directory waits for recover",
  },
  {
    point: 'restoring',
    way: 'both',
    healAfterMs: 3000,
    ends: 'destination',
    why: 'a short partition heals before anyone gives up: the migration completes',
  },
];

describe('a silent partition during the switchover', () => {
  for (const c of CASES) {
    const label = `${c.way === 'both' ? 'both ways' : c.way === 'in' ? 'towards the destination' : 'from the destination'} at ${c.point}${c.healAfterMs ? `, healed after ${c.healAfterMs} ms` : ', not healed'}`;
    test(`${label}: never two running copies; ${c.ends} after recover, nothing left`, async () => {
      const name = 'part';
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const atStart = await readCounter(b.src);
      const drop = dropRules(c.way)
        .map((r) => ipt('-I', r).join(' '))
        .join('; ');
      const run = migrate(
        [
          name,
          ...sshOnly(),
          '--json',
          '--runc-root',
          h.srcRoot,
          '--remote-runc-root',
          h.dstRoot,
          '--bundle',
          b.dst,
          '--transport',
          c.transport ?? 'stream',
          '--hold-timeout',
          '20',
          '--connect-timeout',
          '2',
        ],
        { RUNC_MIGRATE_RUN_AT: `${c.point}:${drop}` },
      );
      let healed: Promise<void> | undefined;
      if (c.healAfterMs !== undefined) {
        healed = (async () => {
          // The rules go in at the step; heal counts from there.
          await waitFor(
            'the partition to begin',
            async () =>
              (
                await sh(['nsenter', '--net=/run/netns/rm-dst', 'iptables', '-w', '-S'], { reject: false })
              ).stdout.includes(`-s ${srcAddr}/32 -j DROP`),
            60_000,
          );
          await new Promise((r) => setTimeout(r, c.healAfterMs));
          await heal(c.way);
        })();
      }
      const watched = await sampleWhile(b, run);
      const r = await run;
      await healed;
      if (c.point === 'after-dump' && c.healAfterMs === undefined) {
        // The final delta's two ways never got their list: still partitioned, only the
        // watcher beside them (keeper.ts quietKiller) can end them, 30 s after the last
        // keepalive it heard.
        await waitFor(
          "the final delta's waiting processes to end, partitioned",
          async () => (await waitingForDelta(b.dst)).length === 0,
          45_000,
        );
      }
      await heal(c.way);
      assert.ok(watched.samples > 20, `only ${watched.samples} samples`);
      assert.deepEqual(watched.both, [], `two running copies (${c.why})\n${r.stderr}`);
      const report = JSON.parse(r.stdout || '{}');
      if (c.healAfterMs !== undefined) {
        assert.equal(r.code, 0, r.stderr);
      } else if (c.point === 'destination-committed') {
        // Committed: the tool reports it, and that the destination still holds its work directory.
        assert.equal(r.code, 5, r.stderr);
        assert.equal(report.runningOn, 'destination', r.stdout);
        assert.match(report.error.message, /could not be removed/);
      } else if (report.runningOn === 'destination') {
        // The word commit and its answer got through before the rule went in (the rule
        // follows the word by the few ms iptables takes): migrated, but the clean-up of
        // the destination could not run (exit 5, recover finishes it).
        assert.notEqual(
          c.ends,
          'source',
          `migrated, where the partition should have kept it on the source: ${r.stderr}`,
        );
        assert.ok(r.code === 0 || r.code === 5, `exit ${r.code}: ${r.stderr}`);
      } else {
        // The tool cannot have confirmed a clean end across the partition.
        assert.ok(r.code === 4 || r.code === 5, `exit ${r.code}: ${r.stderr}`);
        assert.notEqual(report.runningOn, 'destination', r.stdout);
        // Once the destination may have committed, the source stays frozen.
        if (c.ends === 'destination') assert.deepEqual(await whereRunning(name, b), ['destination']);
      }
      // The participants settle alone, within their deadlines: never both.
      await waitFor(
        'the guard to give up or commit',
        async () => (await whereRunning(name, b)).length > 0 || (await status(h.dstRoot, name)) === 'absent',
        30_000,
      );
      assert.ok((await whereRunning(name, b)).length <= 1);
      // recover as the tool prints it: the container's name and the host, nothing about runc.
      const rec = await migrate(['recover', name, ...sshOnly(), '--json']);
      const jr = JSON.parse(rec.stdout || '{}');
      assert.ok(rec.code === 0, `recover: exit ${rec.code}\n${rec.stderr}\n${rec.stdout}`);
      const on = await whereRunning(name, b);
      assert.equal(
        on.length,
        1,
        `running on ${on.join(' and ') || 'no host'}: ${c.why}\ntool: ${r.stderr}\nrecover: ${rec.stderr}`,
      );
      if (c.ends !== 'either') assert.deepEqual(on, [c.ends], `${c.why}\ntool: ${r.stderr}\nrecover: ${rec.stderr}`);
      if (jr.outcome === 'recovered') assert.equal(jr.runningOn, on[0], rec.stdout);
      const now = await readCounter(on[0] === 'source' ? b.src : b.dst);
      assert.ok(now >= atStart, `the counter went back: ${now} < ${atStart}`);
      assert.equal(await status(on[0] === 'source' ? h.dstRoot : h.srcRoot, name), 'absent');
      // The final delta's two ways (an rsync server, a tar receiver) waited on the
      // destination from the pre-sync on: sshd does not see the partition, and without
      // the tool's keepalive they are killed (keeper.ts quietKiller), not left for good.
      await waitFor(
        "the final delta's waiting processes to end",
        async () => (await waitingForDelta(b.dst)).length === 0,
        60_000,
      );
      assert.deepEqual(await hostState(), []);
      await removeEverywhere(h, name);
    });
  }
});

/** Processes of the final delta's ways into the destination's bundle DIR (rsync-bridge.ts, filetar.ts). */
async function waitingForDelta(dir: string): Promise<string[]> {
  const ps = await sh(['pgrep', '-af', 'rsync --server|no delta header'], { reject: false });
  return ps.stdout.split('\n').filter((l) => l.includes(dir) && !l.includes('pgrep'));
}

describe('a volume both hosts see', () => {
  test('a rollback after the restore: the discarded copy wrote nothing to it (the sequence has no number twice)', async () => {
    const name = 'shared';
    const shared = fs.mkdtempSync('/var/tmp/rm-shared-');
    await removeEverywhere(h, name);
    const b = { src: path.join(h.srcBundles, name), dst: path.join(h.dstBundles, name) };
    for (const [dir, cg] of [
      [b.src, `/rm-src/${name}`],
      [b.dst, `/rm-dst/${name}`],
    ]) {
      await sh(['bash', path.join(ROOT, 'examples/make-bundle.sh'), 'counter', dir, cg]);
      // The counter also appends each number to a file on a bind mount both hosts share.
      fs.writeFileSync(
        path.join(dir, 'rootfs/writer.sh'),
        'i=0\nwhile :; do\n\ti=$((i + 1))\n\techo "$i" > /dev/shm/count\n\techo "$i" >> /shared/seq\n\tread -t 0.1 _ <> /tmp/tick\ndone\n',
      );
      fs.mkdirSync(path.join(dir, 'rootfs/shared'));
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      config.process.args = ['/bin/sh', '/writer.sh'];
      config.mounts.push({ destination: '/shared', type: 'bind', source: shared, options: ['rbind', 'rw'] });
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
    }
    await sh([
      'sh',
      '-c',
      `exec ${ns('src').join(' ')} runc --root ${h.srcRoot} run -d --bundle ${b.src} ${name} </dev/null >/dev/null 2>&1`,
    ]);
    await waitFor('the writer to write', async () => (await readCounter(b.src)) >= 5);
    // The step after the restore fails: the copy is removed, the source resumes.
    const r = await migrate(
      [
        name,
        ...sshOnly(),
        '--runc-root',
        h.srcRoot,
        '--remote-runc-root',
        h.dstRoot,
        '--bundle',
        b.dst,
        '--transport',
        'stream',
        '--json',
      ],
      { RUNC_MIGRATE_FAIL_AT: 'verify' },
    );
    assert.equal(r.code, 4, r.stderr + r.stdout);
    await waitFor('the source to write on', async () => (await readCounter(b.src)) >= 20, 10_000);
    assert.deepEqual(await whereRunning(name, b), ['source']);
    const seq = fs.readFileSync(path.join(shared, 'seq'), 'utf8').trimEnd().split('\n').map(Number);
    seq.forEach((n, i) =>
      assert.equal(n, i + 1, `line ${i + 1} of the shared file reads ${n}: the discarded copy wrote to it`),
    );
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
    fs.rmSync(shared, { recursive: true, force: true });
  });
});
