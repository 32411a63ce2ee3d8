// Bad input: each case gets a clear message naming the fix, a non-zero exit, and the
// container still running untouched on the source (never frozen: its counter never stops).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { execa } from 'execa';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  INTENT_DIR,
  leftovers,
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
  type Hosts,
} from './hosts.js';

let h: Hosts;
let b: { src: string; dst: string };
const NAME = 'pf';
let tmp: string;

before(async () => {
  h = await setupHosts();
  b = await startExample(h, 'counter', NAME);
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-pf-'));
});
after(async () => {
  await removeEverywhere(h, NAME);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Runs the CLI, expects a refusal, and checks the container was never touched. */
async function refused(args: string[], code: number, message: RegExp, hint: RegExp): Promise<string> {
  const before = await readCounter(b.src);
  const r = await migrate(args);
  assert.equal(r.code, code, `exit ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, message);
  assert.match(r.stderr, hint);
  assert.equal(r.stdout.trim(), '', 'nothing on stdout for a refusal without --json');
  assert.equal(await status(h.srcRoot, NAME), 'running');
  assert.equal(await status(h.dstRoot, NAME), 'absent');
  await waitFor('the counter to go on', async () => (await readCounter(b.src)) > before);
  assert.deepEqual(await leftovers(), []);
  return r.stderr;
}

const args = (...extra: string[]) => [...baseArgs(h, NAME, b.dst), ...extra];

/**
 * What a run may change on the test hosts, read in full: the work directories and the
 * records (every entry's mode, size, times and bytes), the sysctls the tool writes, and
 * each host's firewall (iptables, ip6tables, nftables), addresses and routes.
 */
async function hostSnapshot(): Promise<string[]> {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    const bytes = st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : '';
    out.push(`${p} mode=${st.mode} size=${st.size} mtime=${st.mtimeMs} ctime=${st.ctimeMs} ${bytes}`);
    if (st.isDirectory()) for (const e of fs.readdirSync(p).sort()) walk(path.join(p, e));
  };
  for (const d of ['/dev/shm', '/var/tmp'])
    for (const f of fs.readdirSync(d).sort()) if (f.startsWith('runc-migrate.')) walk(path.join(d, f));
  if (fs.existsSync(INTENT_DIR)) walk(INTENT_DIR);
  for (const n of ['src', 'dst'] as const) {
    for (const cmd of [
      [
        'sysctl',
        'fs.pipe-max-size',
        'fs.inotify.max_user_watches',
        'net.ipv4.conf.all.arp_ignore',
        'net.ipv4.conf.eth0.arp_ignore',
      ],
      ['iptables-save'],
      ['ip6tables-save'],
      ['nft', 'list', 'ruleset'],
      ['ip', '-o', 'addr'],
      ['ip', 'route'],
    ]) {
      const r = await sh([...ns(n), ...cmd], { reject: false });
      // iptables-save's comments carry the time it ran.
      out.push(
        `${n} ${cmd.join(' ')}:`,
        ...String(r.stdout)
          .split('\n')
          .filter((l) => !l.startsWith('#')),
      );
    }
  }
  return out;
}

describe('bad input is refused before anything is frozen', () => {
  test('unknown container', async () => {
    const a = args();
    a[0] = 'no-such-container';
    const err = await refused(a, 3, /no container "no-such-container"/, /runc --root .* list/);
    // The closing line must be true: nothing runs under that name anywhere.
    assert.match(err, /Nothing was frozen or changed; no-such-container was not running on the source\.\s*$/);
    assert.doesNotMatch(err, /is running on the source/);
    const j = await migrate([...a, '--json']);
    assert.equal(j.code, 3);
    assert.equal(JSON.parse(j.stdout).runningOn, 'none');
  });

  test('container not running (paused)', async () => {
    await sh(['runc', '--root', h.srcRoot, 'pause', NAME]);
    try {
      const r = await migrate(args());
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /is paused, not running/);
      assert.match(r.stderr, /resume/);
      assert.match(r.stderr, /Nothing was frozen or changed; pf was not running on the source\./);
    } finally {
      await sh(['runc', '--root', h.srcRoot, 'resume', NAME]);
    }
    assert.equal(await status(h.srcRoot, NAME), 'running');
  });

  test('host unreachable', async () => {
    const a = args('--connect-timeout', '2');
    a[1] = `root@${h.deadAddr}`;
    await refused(a, 3, /(did not answer|cannot reach)/, /(host is up|sshd listens)/);
  });

  test('authentication failure', async () => {
    const key = path.join(tmp, 'other_key');
    if (!fs.existsSync(key)) await sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const a = args();
    a[a.indexOf('-i') + 1] = key;
    const err = await refused(a, 3, /authentication to root@.* failed/, /authorized_keys/);
    assert.match(err, /Nothing was frozen or changed: pf is running on the source\./);
  });

  test('unknown host key', async () => {
    const kh = path.join(tmp, 'empty_known_hosts');
    fs.writeFileSync(kh, '');
    const a = args();
    a[a.indexOf('--known-hosts') + 1] = kh;
    await refused(a, 3, /host key of .* is not in .*SHA256:/, /ssh-keyscan .* >>|--accept-new-host-key/);
  });

  test('changed host key', async () => {
    const kh = path.join(tmp, 'changed_known_hosts');
    const other = path.join(tmp, 'other_host_key');
    if (!fs.existsSync(other)) await sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const pub = fs.readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
    fs.writeFileSync(kh, `${h.dstAddr} ${pub}\n`);
    const a = args();
    a[a.indexOf('--known-hosts') + 1] = kh;
    await refused(a, 3, /has CHANGED/, /ssh-keygen -R/);
  });

  test('runc missing on the source', async () => {
    await refused(args('--runc', '/nonexistent/runc'), 3, /runc is not installed on the source/, /--runc PATH/);
  });

  test('criu missing on the destination', async () => {
    await refused(
      args('--remote-criu', '/nonexistent/criu'),
      3,
      /criu is not installed on the destination/,
      /--remote-criu PATH/,
    );
  });

  test('criu too old on either side', async () => {
    const fake = path.join(tmp, 'old-criu');
    fs.writeFileSync(fake, '#!/bin/sh\necho "Version: 4.1.1"\n', { mode: 0o755 });
    await refused(args('--criu', fake), 3, /criu 4\.1\.1 on the source is too old/, /4\.2 or newer/);
    await refused(args('--remote-criu', fake), 3, /criu 4\.1\.1 on the destination is too old/, /4\.2 or newer/);
  });

  test('runc too old on the destination', async () => {
    const fake = path.join(tmp, 'old-runc');
    fs.writeFileSync(fake, '#!/bin/sh\necho "runc version 1.0.0"\n', { mode: 0o755 });
    await refused(args('--remote-runc', fake), 3, /runc 1\.0\.0 on the destination is too old/, /1\.1\.0 or newer/);
  });

  test('destination bundle missing (without the sync), or a directory that is not a bundle', async () => {
    await refused(
      args('--bundle', '/nonexistent/bundle', '--no-sync-rootfs'),
      3,
      /no bundle at \/nonexistent\/bundle on the destination/,
      /Copy the container's bundle/,
    );
    // With the sync (the default) a missing bundle is made; a directory holding something else is never filled.
    const notBundle = path.join(tmp, 'not-a-bundle');
    fs.mkdirSync(notBundle, { recursive: true });
    fs.writeFileSync(path.join(notBundle, 'precious'), 'keep\n');
    await refused(args('--bundle', notBundle), 3, /is not a bundle \(no config\.json\) and not empty/, /--bundle DIR/);
    assert.equal(fs.readFileSync(path.join(notBundle, 'precious'), 'utf8'), 'keep\n');
  });

  test('an old rsync on the destination: refused with the fix, before the freeze', async () => {
    // Over /usr/bin/rsync in the destination sshd's own mount namespace only.
    const fake = path.join(tmp, 'rsync-3.1.0');
    fs.writeFileSync(fake, '#!/bin/sh\necho "rsync  version 3.1.0  protocol version 31"\n', { mode: 0o755 });
    const inDst = ['nsenter', `--mount=/proc/${fs.readFileSync(`${h.dir}/dst/run/sshd.pid`, 'utf8').trim()}/ns/mnt`];
    await sh([...inDst, 'mount', '--bind', fake, '/usr/bin/rsync']);
    try {
      await refused(
        args(),
        3,
        /rsync 3\.1\.0 on the destination is too old/,
        /apt-get install rsync\), or migrate without syncing files \(--no-sync-rootfs\)/,
      );
    } finally {
      await sh([...inDst, 'umount', '/usr/bin/rsync']);
    }
  });

  test('container name already taken on the destination', async () => {
    await sh([
      'sh',
      '-c',
      `exec ${ns('dst').join(' ')} runc --root ${h.dstRoot} run -d --bundle ${b.dst} ${NAME} </dev/null >/dev/null 2>&1`,
    ]);
    try {
      const r = await migrate(args());
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /already exists on the destination/);
      assert.match(r.stderr, /delete --force/);
      assert.equal(await status(h.srcRoot, NAME), 'running');
      assert.equal(await status(h.dstRoot, NAME), 'running', 'the destination container was touched');
    } finally {
      await sh(['runc', '--root', h.dstRoot, 'delete', '--force', NAME], { reject: false });
    }
    assert.deepEqual(await leftovers(), []);
  });

  test("runc's directory for the name left on the destination without a container: refused before the freeze", async () => {
    // runc state says "does not exist" for it, but runc restore would refuse the name.
    const dir = path.join(h.dstRoot, NAME);
    fs.mkdirSync(dir);
    try {
      await refused(args(), 3, /runc's directory .* exists on the destination with no container in it/, /rm -rf /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('work directory not writable (source and destination)', async () => {
    await refused(
      args('--work-dir', '/nonexistent/dir'),
      3,
      /cannot create a work directory in \/nonexistent\/dir on the source/,
      /--work-dir DIR/,
    );
    await refused(
      args('--remote-work-dir', '/proc'),
      3,
      /cannot create a work directory in \/proc on the destination/,
      /--remote-work-dir DIR/,
    );
  });

  test('a file the container holds differs on the destination; --force goes on and the restore fails safely', async () => {
    const script = `${b.dst}/rootfs/counter.sh`;
    const original = fs.readFileSync(script);
    fs.appendFileSync(script, '# changed on the destination\n');
    try {
      // Without the sync (with it, the file would be synced before the restore).
      await refused(
        args('--no-sync-rootfs'),
        3,
        /\/counter\.sh is \d+ bytes on the source but \d+ on the destination/,
        /leave out --no-sync-rootfs/,
      );
      // --force skips the check (and says so); CRIU's restore then fails and the source resumes.
      const r = await migrate(args('--force', '--no-sync-rootfs'));
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /skipped \(--force\): open files present and equal/);
      assert.match(r.stderr, /running on the source/);
      assert.equal(await status(h.srcRoot, NAME), 'running');
      assert.equal(await status(h.dstRoot, NAME), 'absent');
      assert.deepEqual(await leftovers(), []);
    } finally {
      fs.writeFileSync(script, original);
    }
  });

  test('CPU not compatible (criu cpuinfo check fails on the destination)', async () => {
    const fake = path.join(tmp, 'criu-other-cpu');
    fs.writeFileSync(
      fake,
      '#!/bin/sh\nif [ "$1 $2" = "cpuinfo check" ]; then echo "Error (criu/cpu.c:1): cpu: CPU has no xsaves feature" >&2; exit 1; fi\nexec criu "$@"\n',
      { mode: 0o755 },
    );
    await refused(args('--remote-criu', fake), 3, /destination's CPU lacks features/, /same or a newer CPU/);
  });

  test('no room for the images on the destination', async () => {
    // A 1 MiB tmpfs, mounted where the destination's sshd (its own mount namespace) sees it.
    const tiny = path.join(h.dir, 'tiny');
    fs.mkdirSync(tiny, { recursive: true });
    const inDst = ['nsenter', `--mount=/proc/${fs.readFileSync(`${h.dir}/dst/run/sshd.pid`, 'utf8').trim()}/ns/mnt`];
    await sh([...inDst, 'mount', '-t', 'tmpfs', '-o', 'size=1m', 'tiny', tiny]);
    try {
      await refused(
        args('--remote-work-dir', tiny),
        3,
        /not enough room for the images on the destination/,
        /--remote-work-dir DIR/,
      );
    } finally {
      await sh([...inDst, 'umount', tiny]);
    }
  });

  test('page server port taken on the destination: refused before the freeze', async () => {
    const holder = execa(
      ns('dst')[0],
      [
        ...ns('dst').slice(1),
        'node',
        '-e',
        `require('net').createServer().listen(27027, '127.0.0.1', () => console.log('listening'))`,
      ],
      { reject: false, stdin: 'ignore' },
    );
    await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
    try {
      await refused(
        args('--transport', 'tunnel'),
        3,
        /page server on the destination did not start/,
        /--page-server-port PORT/,
      );
    } finally {
      holder.kill('SIGKILL');
      await holder;
    }
  });

  test('--iterative where the kernel does not track dirty memory', async () => {
    const tracks = (await sh(['criu', 'check', '--feature', 'mem_dirty_track'], { reject: false })).exitCode === 0;
    if (tracks) {
      // Nothing to refuse on such a kernel: the dry run must plan pre-copy instead.
      const r = await migrate(args('--iterative', '--dry-run'));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /mode: iterative/);
    } else {
      await refused(args('--iterative'), 3, /does not track dirty memory/, /--one-shot/);
      // Without --iterative the tool falls back to one shot and says so.
      const r = await migrate(args('--dry-run'));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /migrating in one shot, without pre-copy/);
      assert.match(r.stderr, /mode: one-shot/);
    }
  });

  test('bad usage exits 2 without contacting anything', async () => {
    const r = await migrate(args('--move-ip', '10.0.0.300/33'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /is not ADDR\/PREFIX/);
    const r2 = await migrate(['only-one-argument']);
    assert.equal(r2.code, 2);
    const r3 = await migrate(args('--transport', 'carrier-pigeon'));
    assert.equal(r3.code, 2);
  });

  test('--move-ip: a destination still muting the address (an unfinished run) is refused', async () => {
    await serviceAddressOnSource(h);
    const drop = [
      'nsenter',
      '--net=/run/netns/rm-dst',
      'iptables',
      '-w',
      '-I',
      'OUTPUT',
      '-s',
      `${h.serviceAddr}/32`,
      '-j',
      'DROP',
    ];
    await sh(drop);
    try {
      await refused(args('--move-ip', `${h.serviceAddr}/32`), 3, /still drops .* output/, /iptables -w -D OUTPUT/);
    } finally {
      await sh(drop.map((a) => (a === '-I' ? '-D' : a)));
    }
    await sh(['nsenter', '--net=/run/netns/rm-dst', 'sh', '-c', 'echo 8 > /proc/sys/net/ipv4/conf/eth0/arp_ignore']);
    try {
      await refused(args('--move-ip', `${h.serviceAddr}/32`), 3, /answers no ARP/, /echo 0 >/);
    } finally {
      await sh(['nsenter', '--net=/run/netns/rm-dst', 'sh', '-c', 'echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_ignore']);
    }
  });

  test('--dry-run prints the plan and changes nothing', async () => {
    const r = await migrate(args('--dry-run'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /runc --root .* checkpoint/);
    assert.match(r.stderr, /runc --root .* restore/);
    // The switchover's steps, in its order.
    const order = ['dump', 'copy', 'restore', 'prepare', 'commit', 'finish'].map((s) =>
      r.stderr.search(new RegExp(`^\\s+${s}\\s`, 'm')),
    );
    assert.ok(
      order.every((i, k) => i > 0 && (k === 0 || i > order[k - 1])),
      `steps out of order or missing: ${order}\n${r.stderr}`,
    );
    assert.equal(await status(h.srcRoot, NAME), 'running');
    assert.equal(await status(h.dstRoot, NAME), 'absent');
    assert.deepEqual(await leftovers(), []);
    // With --json the plan is in the report, as printed.
    const j = await migrate(args('--dry-run', '--json'));
    assert.equal(j.code, 0, j.stderr);
    const report = JSON.parse(j.stdout) as { outcome: string; plan?: string[]; version?: string };
    assert.equal(report.outcome, 'dry-run');
    assert.ok(
      report.plan?.some((l) => /runc --root .* restore/.test(l)),
      JSON.stringify(report.plan),
    );
    assert.ok(report.version);
  });

  test('--dry-run leaves both hosts byte-for-byte as they were, and says what a run would settle and remove', async () => {
    // What a run would act on: an unfinished earlier migration of this container (its tool
    // gone), a work directory of a dead run on each host, and a pipe limit below post-copy's.
    const record = path.join(INTENT_DIR, `${NAME}.json`);
    const deadPid = 4_194_305; // above the kernel's largest pid_max: never a live process
    const stale = ['/var/tmp/runc-migrate.dry-stale-src', '/dev/shm/runc-migrate.dry-stale-dst'];
    const owner = `${os.hostname()} ${deadPid} ${fs.readFileSync('/etc/machine-id', 'utf8').trim()} ${fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}\n`;
    const pipeMax = '/proc/sys/fs/pipe-max-size';
    const pipeWas = fs.readFileSync(pipeMax, 'utf8').trim();
    try {
      fs.mkdirSync(INTENT_DIR, { recursive: true, mode: 0o700 });
      fs.writeFileSync(
        record,
        `${JSON.stringify(
          {
            version: 2,
            container: NAME,
            srcRunc: { runc: 'runc', root: h.srcRoot },
            dstRunc: { runc: 'runc', root: h.dstRoot },
            destination: `root@${h.dstAddr}`,
            pid: deadPid,
            startedAt: '2026-01-01T00:00:00.000Z',
            phase: 'precopy',
            updatedAt: '2026-01-01T00:00:01.000Z',
            localBase: '/var/tmp/runc-migrate.dry-record-src',
            holdDir: '/var/tmp/runc-migrate.dry-record-src/hold',
            remoteBase: '/dev/shm/runc-migrate.dry-record-dst',
            guardDir: '/dev/shm/runc-migrate.dry-record-dst/guard',
          },
          null,
          2,
        )}\n`,
      );
      for (const d of stale) {
        fs.mkdirSync(path.join(d, 'images'), { recursive: true });
        fs.writeFileSync(path.join(d, 'owner'), owner);
        fs.writeFileSync(path.join(d, 'images', 'pages-1.img'), 'x'.repeat(4096));
      }
      fs.writeFileSync(pipeMax, '1048576');
      const before = await hostSnapshot();
      const r = await migrate(
        args(
          '--dry-run',
          '--json',
          '--post-copy',
          '--tune-sysctl',
          '--work-dir',
          '/var/tmp',
          '--remote-work-dir',
          '/dev/shm',
        ),
      );
      const after = await hostSnapshot();
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as { outcome: string; plan?: string[]; warnings: string[] };
      assert.equal(report.outcome, 'dry-run');
      assert.ok(
        report.warnings.some((w) => /earlier migration of pf did not finish \(precopy\).*--dry-run leaves it/.test(w)),
        JSON.stringify(report.warnings),
      );
      for (const [d, where] of [
        [stale[0], 'source'],
        [stale[1], 'destination'],
      ])
        assert.ok(
          report.plan?.some((l) => l.includes(`remove ${d} on the ${where}`)),
          `${d}: ${JSON.stringify(report.plan)}`,
        );
      // The record's own work directories are recover's to settle, not stale.
      assert.ok(!report.plan?.some((l) => l.includes('dry-record')), JSON.stringify(report.plan));
      assert.deepEqual(after, before);
      assert.equal(await status(h.srcRoot, NAME), 'running');
      assert.equal(await status(h.dstRoot, NAME), 'absent');
    } finally {
      fs.writeFileSync(pipeMax, pipeWas);
      fs.rmSync(record, { force: true });
      for (const d of stale) fs.rmSync(d, { recursive: true, force: true });
    }
    assert.deepEqual(await leftovers(), []);
  });

  test('--dry-run of post-copy with --tune-sysctl raises nothing and leaves no certificate, rule or keeper', async () => {
    // fs.pipe-max-size is one for the kernel (both test hosts): below what post-copy needs.
    const file = '/proc/sys/fs/pipe-max-size';
    const was = fs.readFileSync(file, 'utf8').trim();
    fs.writeFileSync(file, '1048576');
    try {
      const r = await migrate(args('--dry-run', '--post-copy', '--tune-sysctl'));
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        /fs\.pipe-max-size 1048576 on the source: raised to \d+ for the migration \(--tune-sysctl\)/,
      );
      assert.match(r.stderr, /mode: one-shot \(post-copy\)/);
      assert.equal(fs.readFileSync(file, 'utf8').trim(), '1048576', 'the dry run changed fs.pipe-max-size');
      assert.equal(await status(h.srcRoot, NAME), 'running');
      assert.deepEqual(await leftovers(), []);
    } finally {
      fs.writeFileSync(file, was);
    }
  });
});
