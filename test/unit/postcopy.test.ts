// Post-copy's pure decisions: the transport it needs, the pipe limit, the guard's window,
// what migrate recover does with a lazy window, and the daemon's figures.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseMode, chooseTransport, pipeSizeAction } from '../../src/migration/plan/policy.js';
import { decideRecovery } from '../../src/migration/recover/recovery.js';
import { guardScript } from '../../src/migration/switchover/guard.js';
import { holdScript, recoverArgv, watchdogScript } from '../../src/migration/switchover/hold.js';
import { windowOutcome } from '../../src/migration/switchover/postcopy.js';
import { workPaths } from '../../src/migration/prepare/paths.js';
import { criu, lazyFigures } from '../../src/criu.js';
import { runc } from '../../src/runc.js';
import { resolveOptions } from '../../src/options.js';
import { UsageError } from '../../src/errors.js';

const facts = {
  mode: 'one-shot' as const,
  memoryBytes: 1 << 30,
  directRoute: true,
  streamMaxBytes: 48 << 20,
  tls: { ok: true },
  postCopy: true,
};

test('post-copy goes over TLS only, and needs the destination to reach the source', () => {
  assert.equal(chooseTransport('auto', facts).transport, 'tls');
  assert.equal(
    chooseTransport('auto', { ...facts, memoryBytes: 1 << 20 }).transport,
    'tls',
    'no stream for a small container',
  );
  assert.match(
    chooseTransport('auto', {
      ...facts,
      tls: { ok: false, why: 'criu on the destination was built without TLS (gnutls)' },
    }).refuse!.message,
    /--post-copy cannot work here: criu on the destination/,
  );
  assert.match(
    chooseTransport('auto', { ...facts, directRoute: false, jumpHosts: ['bastion'] }).refuse!.message,
    /reach the source's address.*bastion/,
  );
  assert.equal(chooseMode('auto', true, 'auto', true).mode, 'one-shot', 'no pre-copy with post-copy');
});

test('--post-copy refuses the transports whose end reads as "every page fetched", and --iterative', () => {
  for (const t of ['tunnel', 'direct', 'stream'])
    assert.throws(
      () => resolveOptions('c', 'h', { postCopy: true, transport: t }),
      (e: Error) => e instanceof UsageError && /--post-copy needs --transport tls/.test(e.message),
    );
  assert.throws(() => resolveOptions('c', 'h', { postCopy: true, iterative: true }), /contradict/);
  assert.equal(resolveOptions('c', 'h', { postCopy: true, transport: 'tls' }).postCopy, true);
});

test('the pipe limit: enough, raised with --tune-sysctl, or refused with what to set', () => {
  assert.deepEqual(pipeSizeAction(4194304, 4194304, false), { ok: true });
  assert.deepEqual(pipeSizeAction(1048576, 4194304, true), { raise: true, from: 1048576 });
  assert.match((pipeSizeAction(1048576, 4194304, false) as { refuse: string }).refuse, /1048576, below the 4194304/);
  assert.ok('refuse' in pipeSizeAction(undefined, 4194304, true));
});

test('the checkpoint and the restore argv for post-copy', () => {
  const g = { runc: 'runc', root: '/run/runc' };
  const c = runc.checkpoint(g, 'web', {
    imagePath: '/i',
    workPath: '/w',
    pageServer: '10.0.0.1:27027',
    tcpEstablished: true,
    lazyStatusFd: 3,
  });
  assert.ok(c.join(' ').includes('--lazy-pages --status-fd 3') && c.join(' ').includes('--page-server 10.0.0.1:27027'));
  assert.ok(
    runc
      .restore(g, 'web', { bundle: '/b', imagePath: '/i', workPath: '/w', tcpEstablished: true, lazy: true })
      .includes('--lazy-pages'),
  );
  const d = criu.lazyPages('criu', {
    imagesDir: '/i',
    workDir: '/w',
    address: '10.0.0.1',
    port: 27027,
    logFile: '/w/l',
    tls: { caCert: '/t/ca', cert: '/t/c', key: '/t/k' },
  });
  assert.deepEqual(d.slice(0, 7), ['criu', 'lazy-pages', '--page-server', '--address', '10.0.0.1', '--port', '27027']);
  assert.ok(d.includes('--tls') && d.includes('--tls-key'));
});

test('the hold lets CRIU go on to the lazy page server on the verdict lazy, starting the watchdog first', () => {
  const s = holdScript(workPaths('/tmp/x'), 1, 60, undefined, true);
  assert.match(
    s,
    /if \[ "\$v" = lazy \]; then\n\tsetsid sh "\$dir\/watchdog.sh" \$\(\(\(3000 - i\) \/ 50\)\) <\/dev\/null >\/dev\/null 2>&1 &\n\texit 0\nfi\n\[ "\$v" = prepared \] \|\| rollback/,
  );
});

test("the source's watchdog: cuts the lazy page server on each limit, then runs recover only when the tool left its record", () => {
  const p = workPaths('/tmp/x');
  const s = watchdogScript(p, {
    port: 27027,
    cliPid: 77,
    stallS: 45,
    windowS: 315,
    rcFile: '/tmp/x/hold/checkpoint.rc',
    record: '/run/runc-migrate/web.json',
    recover: ['migrate', 'recover', 'web', 'h'],
    cwd: '/root',
  });
  assert.match(s, /ss -K -atn sport = :27027/);
  assert.match(s, /\[ "\$idle" -ge 90 \] && cut/);
  assert.match(s, /\[ \$\(\(now - since\)\) -ge 315 \] && cut/);
  assert.match(s, /kill -0 77 2>\/dev\/null \|\| cut "the tool is gone and no destination connected"/);
  assert.match(s, /\[ \$\(\(now - start\)\) -ge "\$left" \] && cut "no destination connected/);
  assert.ok(s.indexOf('while kill -0 77') < s.indexOf('[ -e /run/runc-migrate/web.json ] || exit 0'));
  assert.ok(
    s.indexOf('[ -e /run/runc-migrate/web.json ] || exit 0') <
      s.indexOf('(cd /root && exec timeout 900 migrate recover web h)'),
  );
});

test("recover, as the watchdog runs it: the migration's own options, without the tests' fault variables", () => {
  const a = recoverArgv('/usr/bin/node', [
    '/usr/bin/node',
    '/opt/bin/migrate',
    '--post-copy',
    '--json',
    'web',
    'root@h',
  ]);
  assert.deepEqual(a.slice(-7), [
    '/usr/bin/node',
    '/opt/bin/migrate',
    'recover',
    '--post-copy',
    '--json',
    'web',
    'root@h',
  ]);
  assert.ok(a.includes('RUNC_MIGRATE_KILL_AT') && a[0] === 'env');
});

test("the guard in post-copy: daemon before the restore, serving after the verify; it decides the window alone from its daemon's exit", () => {
  const spec = {
    dir: '/g',
    state: ['runc', 'state', 'c'],
    ps: ['runc', 'ps', 'c'],
    heartbeatLossS: 10,
    restore: ['runc', 'restore', 'c'],
    reap: { criuWork: '/w', stateDir: '/r/c', restoreLog: 'restore.log' },
    kill: ['runc', 'kill', 'c'],
    delete: ['runc', 'delete', 'c'],
    deadlineS: 60,
    verifyWindowMs: 100,
  };
  const plain = guardScript(spec);
  assert.ok(!plain.includes('lazy.out') && !plain.includes('say serving'));
  const s = guardScript({
    ...spec,
    lazy: {
      daemon: ['criu', 'lazy-pages', '--port', '1'],
      socket: '/w/lazy-pages.socket',
      stallS: 30,
      windowS: 300,
      session: ['dst', '10.0.0.1', 'dport', '=', ':1'],
    },
  });
  assert.ok(s.indexOf('criu lazy-pages --port 1') < s.indexOf('runc restore c'), 'the daemon starts first');
  assert.ok(s.indexOf('say verified') < s.indexOf('say serving'));
  // remove() stops the daemon first; one that had ended by itself decides.
  assert.match(s, /remove\(\) \{\n[^\n]*\n\tif stop_lazy; then lazy_end; fi/);
  // Complete: exit 0 by itself and the copy runs. No log text decides.
  assert.match(s, /if \[ "\$lrc" = 0 \] && \[ "\$s" = running \]; then commit every-page-arrived; fi/);
  // (The one grep reads runc's refusal of a name another container took: it only keeps the guard from removing that container.)
  assert.deepEqual(
    s.split('\n').filter((l) => /grep/.test(l)),
    [`if [ $rc -ne 0 ] && grep -qF -e 'container with given ID already exists' "$dir/restore.out" 2>/dev/null; then`],
  );
  // In the window the tool's "rollback", 30 s without a byte read, or 300 s kill the daemon; EOF does not.
  assert.match(s, /\[ "\$x" = rollback \] && \{ [^}]*kill_lazy; \}/);
  assert.match(s, /if \[ \$idle -ge 60 \]; then .*kill_lazy; break; fi/);
  assert.match(s, /if \[ \$n -ge 600 \]; then .*kill_lazy; break; fi/);
  // The daemon's session is reset before the daemon is killed (a clean close would read as complete to CRIU).
  const k = s.slice(s.indexOf('kill_lazy() {'));
  assert.ok(k.indexOf('ss -K -Htn dst 10.0.0.1 dport = :1') < k.indexOf('kill -KILL "$lp"'));
  assert.match(s, /say lazy-done \$lrc\nlazy_end/);
});

test('the end of a lazy window: the source follows the guard', () => {
  assert.deepEqual(windowOutcome('committed', 0), { runningOn: 'destination', removeSource: false });
  assert.deepEqual(windowOutcome('committed', 1), { runningOn: 'destination', removeSource: true });
  assert.deepEqual(windowOutcome('committed', null), { runningOn: 'destination', removeSource: true });
  assert.deepEqual(windowOutcome('removed', 1), { runningOn: 'source' });
  assert.deepEqual(windowOutcome('removed', 0), { runningOn: 'nowhere' });
  for (const [g, c] of [
    ['removed', undefined],
    [undefined, 0],
    [undefined, 1],
    [undefined, undefined],
  ] as const)
    assert.equal(windowOutcome(g, c).runningOn, 'in-doubt', `${g} ${c}`);
});

test('migrate recover in a lazy window: wait for the transfer, then follow it', () => {
  const hold = { verdict: 'lazy' };
  const guard = (o: Partial<{ committed: boolean; removed: boolean; alive: boolean }>) => ({
    committed: false,
    removed: false,
    alive: false,
    present: true,
    ...o,
  });
  const phase = 'lazy-window' as const;
  assert.equal(
    decideRecovery({
      phase,
      hold,
      checkpointRunning: true,
      guard: guard({ alive: true }),
      destinationStatus: 'running',
    }).action,
    'wait',
  );
  assert.equal(
    decideRecovery({
      phase,
      hold,
      checkpointRunning: false,
      checkpointExit: 0,
      guard: guard({ alive: true }),
      destinationStatus: 'running',
    }).action,
    'wait',
  );
  const done = decideRecovery({
    phase,
    hold,
    checkpointRunning: false,
    checkpointExit: 0,
    guard: guard({ committed: true }),
    destinationStatus: 'running',
  });
  assert.deepEqual([done.action, 'removeSourceCopy' in done && done.removeSourceCopy], ['destination', false]);
  const missed = decideRecovery({
    phase,
    hold,
    checkpointRunning: false,
    checkpointExit: 1,
    guard: guard({ committed: true }),
    destinationStatus: 'running',
  });
  assert.deepEqual([missed.action, 'removeSourceCopy' in missed && missed.removeSourceCopy], ['destination', true]);
  const broke = decideRecovery({
    phase,
    hold,
    checkpointRunning: false,
    checkpointExit: 1,
    guard: guard({ removed: true }),
    destinationStatus: 'missing',
  });
  assert.equal(broke.action, 'source');
  assert.ok(broke.action === 'source' && broke.afterLazyWindow && !broke.removeDestinationCopy);
  const lost = decideRecovery({
    phase,
    hold,
    checkpointRunning: false,
    checkpointExit: 0,
    guard: guard({ removed: true }),
    destinationStatus: 'missing',
  });
  assert.equal(lost.action, 'nowhere');
  assert.equal(decideRecovery({ phase, hold, checkpointRunning: false, checkpointExit: 0 }).action, 'in-doubt');
  const stuck = decideRecovery({
    phase,
    hold,
    checkpointRunning: false,
    checkpointExit: 1,
    guard: guard({}),
    destinationStatus: 'running',
  });
  assert.ok(stuck.action === 'source' && stuck.removeDestinationCopy, 'a dead guard: the incomplete copy is removed');
  assert.equal(decideRecovery({ phase, hold, checkpointRunning: false, checkpointExit: 1 }).action, 'in-doubt');
});

test("the lazy-pages daemon's figures from its log", () => {
  const log = [
    '(00.1) uffd: 1-12: #PF at 0x7f0000001000',
    '(00.2) uffd: 1-12: #PF at 0x7f0000002000',
    '(00.3) uffd: 7-13: #PF at 0x7f0000003000',
    '(01.4) uffd: 1-12: UFFD transferred pages: (65544/65544)',
    '(01.4) uffd: 7-13: UFFD transferred pages: (10/10)',
  ].join('\n');
  assert.deepEqual(lazyFigures(log), { onDemand: 3, transferred: 65554, total: 65554 });
  assert.deepEqual(lazyFigures(''), { onDemand: 0, transferred: 0, total: 0 });
});

test("auto-converge: the container's CPU controller, v1 and v2", async () => {
  const { cpuControl, v1Mounts, throttledQuota } = await import('../../src/cgroup.js');
  const mounts =
    'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,freezer 0 0\n';
  assert.deepEqual(v1Mounts(mounts), {
    'cpu,cpuacct': '/sys/fs/cgroup/cpu,cpuacct',
    freezer: '/sys/fs/cgroup/freezer',
  });
  assert.deepEqual(cpuControl('4:cpu,cpuacct:/runc-migrate/web\n3:freezer:/runc-migrate/web\n', v1Mounts(mounts)), {
    version: 1,
    dir: '/sys/fs/cgroup/cpu,cpuacct/runc-migrate/web',
    cpuacct: '/sys/fs/cgroup/cpu,cpuacct/runc-migrate/web',
  });
  assert.deepEqual(cpuControl('0::/rm/web\n', {}), { version: 2, dir: '/sys/fs/cgroup/rm/web' });
  assert.equal(cpuControl('', {}), undefined);
  // 1 CPU used, 20 % throttle: 80 ms of every 100 ms.
  assert.deepEqual(throttledQuota(1, 20, 100000), { quotaUs: 80000, periodUs: 100000 });
  assert.deepEqual(throttledQuota(2, 50, 100000), { quotaUs: 100000, periodUs: 100000 });
  // Under the kernel's 1000 us floor: the floor (v1), or a longer period (v2), at most 1 s.
  assert.deepEqual(throttledQuota(0.05, 99, 100000), { quotaUs: 1000, periodUs: 100000 });
  assert.deepEqual(throttledQuota(0.5, 99, 100000, true), { quotaUs: 1000, periodUs: 200000 });
  assert.deepEqual(throttledQuota(0.001, 99, 100000, true), { quotaUs: 1000, periodUs: 1000000 });
});

test("auto-converge: the container's freezer, where CRIU's freeze shows first (v1 and v2)", async () => {
  const { freezerControl, freezeAsked, v1Mounts } = await import('../../src/cgroup.js');
  const mounts = 'cgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,freezer 0 0\n';
  const v1 = freezerControl('4:cpu,cpuacct:/rm/web\n3:freezer:/rm/web\n', v1Mounts(mounts))!;
  assert.equal(v1.file, '/sys/fs/cgroup/freezer/rm/web/freezer.state');
  assert.deepEqual(
    ['THAWED\n', 'FREEZING\n', 'FROZEN\n'].map((t) => freezeAsked(v1.version, t)),
    [false, true, true],
  );
  const v2 = freezerControl('0::/rm/web\n', {})!;
  assert.equal(v2.file, '/sys/fs/cgroup/rm/web/cgroup.freeze');
  assert.deepEqual(
    ['0\n', '1\n', ''].map((t) => freezeAsked(v2.version, t)),
    [false, true, false],
  );
  // A v1 freezer hierarchy that is not mounted: no freezer to watch (the tracer still is).
  assert.equal(freezerControl('3:freezer:/rm/web\n', {}), undefined);
});

test('auto-converge: 20 %, then 10 % more per iteration, at most 99 %; a not-converging stop is overridden while it can rise', async () => {
  const { convergeStep } = await import('../../src/migration/plan/policy.js');
  const it = (n: number) => ({
    n,
    pagesScanned: 1,
    pagesWritten: 1,
    pagesSkippedParent: 0,
    frozenMs: 1,
    memdumpMs: 1,
    memwriteMs: 1,
    wallMs: 1,
    copyMs: 1,
    dumpMs: 1,
  });
  const keepingUp = { stop: false, why: '', bandwidth: 10e6, dirtyRate: 8e6 };
  const gaveUp = { stop: true, reason: 'not-converging' as const, why: '', bandwidth: 10e6, dirtyRate: 12e6 };
  assert.deepEqual(convergeStep([it(1)], keepingUp, 0, 8).throttlePct, 0, 'one iteration shows no rate');
  assert.equal(convergeStep([it(1), it(2)], keepingUp, 0, 8).throttlePct, 20);
  assert.equal(convergeStep([it(1), it(2), it(3)], keepingUp, 20, 8).throttlePct, 30);
  assert.equal(convergeStep([it(1), it(2)], keepingUp, 95, 8).throttlePct, 99);
  assert.equal(
    convergeStep([it(1), it(2)], { ...keepingUp, dirtyRate: 4e6 }, 30, 8).throttlePct,
    30,
    'under half the rate: no change',
  );
  const o = convergeStep([it(1), it(2), it(3)], gaveUp, 30, 8);
  assert.deepEqual([o.throttlePct, o.overrideStop], [40, true]);
  const at = (n: number, pct: number) => ({ ...it(n), throttlePct: pct });
  assert.equal(
    convergeStep([at(1, 0), at(2, 90), at(3, 99), at(4, 99)], gaveUp, 99, 8).overrideStop,
    false,
    'at 99 % for a second iteration the give-up stands',
  );
  const first = convergeStep([at(1, 0), at(2, 90), at(3, 99)], gaveUp, 99, 8);
  assert.deepEqual(
    [first.throttlePct, first.overrideStop],
    [99, true],
    'the first iteration at 99 % was dirtied mostly at 90 %: one more',
  );
  assert.equal(convergeStep([at(1, 0), at(2, 90), at(3, 99)], gaveUp, 99, 3).overrideStop, false, 'no iterations left');
  assert.equal(
    convergeStep([at(1, 0), at(2, 90), at(3, 99)], keepingUp, 99, 8).overrideStop,
    false,
    'no give-up to override',
  );
  assert.equal(convergeStep([it(1), it(2), it(3)], gaveUp, 30, 3).overrideStop, false, 'no iterations left');
  assert.equal(
    convergeStep([it(1), it(2), it(3)], { ...keepingUp, stop: true, reason: 'downtime' as const }, 30, 8).throttlePct,
    30,
    'a stop that fits is not throttled further',
  );
});

test('--auto-converge only with pre-copy', () => {
  assert.throws(
    () => resolveOptions('c', 'h', { autoConverge: true, oneShot: true }),
    /--auto-converge throttles the container during pre-copy/,
  );
  assert.throws(() => resolveOptions('c', 'h', { autoConverge: true, postCopy: true }), /--auto-converge/);
  assert.equal(resolveOptions('c', 'h', { autoConverge: true }).autoConverge, true);
});

test('--hybrid: pre-copy then post-copy; refused without dirty tracking, with --one-shot, or another transport', () => {
  const o = resolveOptions('c', 'h', { hybrid: true });
  assert.deepEqual([o.hybrid, o.postCopy, o.mode], [true, true, 'iterative']);
  assert.throws(() => resolveOptions('c', 'h', { hybrid: true, oneShot: true }), /contradicts --one-shot/);
  assert.throws(
    () => resolveOptions('c', 'h', { hybrid: true, transport: 'tunnel' }),
    /--hybrid needs --transport tls/,
  );
  assert.equal(
    resolveOptions('c', 'h', { hybrid: true, autoConverge: true }).autoConverge,
    true,
    'auto-converge helps its pre-copy',
  );
  assert.equal(chooseMode('iterative', true, 'auto', true, true).mode, 'iterative');
  assert.equal(chooseMode('iterative', false, 'auto', true, true).refuse, true);
});

test('hybrid certificates name both hosts, and each end may be server and client', async () => {
  const { caConfig } = await import('../../src/openssl.js');
  const c = caConfig('/w', ['10.0.0.2', '10.0.0.1'], true);
  assert.match(c, /subjectAltName = IP:10\.0\.0\.2, IP:10\.0\.0\.1/);
  assert.equal((c.match(/extendedKeyUsage = serverAuth, clientAuth/g) ?? []).length, 2);
  assert.match(caConfig('/w', '10.0.0.2'), /\[server_cert\][^[]*extendedKeyUsage = serverAuth\n/);
});

test("after a broken lazy window, CRIU's lock goes from the container's own network namespace, never from the host's", async () => {
  const { unlockContainerNetns } = await import('../../src/migration/network/netlock.js');
  const calls: string[][] = [];
  const runner = (nsOf: Record<string, string>) => async (argv: string[]) => {
    calls.push(argv);
    if (argv[0] === 'readlink') return { code: 0, stdout: nsOf[argv[1]] + '\n' };
    if (argv.includes('-S') && argv.includes('iptables'))
      return {
        code: 0,
        stdout:
          '-P INPUT ACCEPT\n-N CRIU\n-A INPUT -j CRIU\n-A OUTPUT -j CRIU\n-A CRIU -m mark --mark 0xc114 -j ACCEPT\n-A CRIU -j DROP\n',
      };
    return { code: argv.includes('-S') || argv[0] === 'nft' ? 1 : 0, stdout: '' };
  };
  assert.equal(
    await unlockContainerNetns(42, runner({ '/proc/42/ns/net': 'net:[1]', '/proc/self/ns/net': 'net:[1]' })),
    0,
    'the host namespace is left alone',
  );
  assert.equal(calls.filter((c) => c[0] === 'nsenter').length, 0);
  const removed = await unlockContainerNetns(
    42,
    runner({ '/proc/42/ns/net': 'net:[2]', '/proc/self/ns/net': 'net:[1]' }),
  );
  assert.equal(removed, 5, 'four rules and the chain');
  const dels = calls.filter((c) => c[0] === 'nsenter' && c.includes('-D')).map((c) => c.slice(4).join(' '));
  assert.ok(
    dels.includes('iptables -w -D INPUT -j CRIU') && dels.includes('iptables -w -D CRIU -j DROP'),
    dels.join('; '),
  );
  assert.ok(calls.some((c) => c.join(' ') === 'nsenter -t 42 -n iptables -w -X CRIU'));
});

test("after a broken lazy window, the container's connections left in repair mode are destroyed, and nobody else's", async () => {
  const { containerConnections, dropRepairedConnections } = await import('../../src/migration/network/netlock.js');
  const ss = [
    'ESTAB     0      0      10.77.0.10:6379 10.77.0.3:51234 users:(("redis-server",pid=4100,fd=9))',
    'ESTAB     0      0      10.77.0.1:22 10.77.0.9:40000 users:(("sshd",pid=900,fd=4),("sshd",pid=901,fd=4))',
    'TIME-WAIT 0      0      10.77.0.10:6379 10.77.0.3:50000',
    'ESTAB     0      0      [fe80::1%eth0]:6379 [fe80::2]:41000 users:(("redis-server",pid=4100,fd=10))',
    'CLOSE-WAIT 1     0      [::ffff:10.77.0.10]:7777 [::ffff:10.77.0.3]:5555 users:(("echo",pid=4101,fd=3))',
  ].join('\n');
  assert.deepEqual(containerConnections(ss, [4100, 4101]), [
    { local: '10.77.0.10:6379', peer: '10.77.0.3:51234' },
    { local: '[fe80::1]:6379', peer: '[fe80::2]:41000' },
    { local: '[::ffff:10.77.0.10]:7777', peer: '[::ffff:10.77.0.3]:5555' },
  ]);
  const calls: string[] = [];
  const n = await dropRepairedConnections(4100, [4100], async (argv) => {
    calls.push(argv.join(' '));
    return { code: 0, stdout: argv.includes('-K') ? '' : ss };
  });
  assert.deepEqual(n, { found: 2, dropped: 2 });
  assert.deepEqual(calls, [
    'nsenter -t 4100 -n ss -Htnp state connected',
    'nsenter -t 4100 -n ss -K -Htn state connected src 10.77.0.10:6379 dst 10.77.0.3:51234',
    'nsenter -t 4100 -n ss -K -Htn state connected src [fe80::1]:6379 dst [fe80::2]:41000',
  ]);
});

test("auto-converge's watch thread: the quota goes while CRIU holds the tasks and comes back within milliseconds of their release", async () => {
  const { Worker } = await import('node:worker_threads');
  const fsp = await import('node:fs/promises');
  const os = await import('node:os');
  const pathm = await import('node:path');
  const { RUN, STOP } = await import('../../src/migration/pages/throttle-watch.js');
  const dir = await fsp.mkdtemp(pathm.join(os.tmpdir(), 'rm-watch-'));
  const quotaFile = pathm.join(dir, 'cpu.max');
  const freezeFile = pathm.join(dir, 'cgroup.freeze');
  await fsp.writeFile(quotaFile, '1000 1000000\n');
  await fsp.writeFile(freezeFile, '0\n');
  const ctrl = new SharedArrayBuffer(4);
  // This process is the "container": nobody traces it, so only the freeze file says held.
  const data = {
    ctrl,
    pid: process.pid,
    quotaFile,
    original: 'max 100000',
    freezer: { file: freezeFile, version: 2 as const },
  };
  const worker = new Worker(new URL('../../src/migration/pages/throttle-watch.js', import.meta.url), {
    workerData: { throttleWatch: data },
  });
  const c = new Int32Array(ctrl);
  const quota = () => fsp.readFile(quotaFile, 'utf8');
  const until = async (want: string) => {
    const t0 = performance.now();
    while ((await quota()) !== want) {
      assert.ok(performance.now() - t0 < 2000, `the quota stayed ${await quota()} (want ${want})`);
      await new Promise((r) => setTimeout(r, 1));
    }
    return performance.now() - t0;
  };
  try {
    // A pre-dump: lifted at the freeze, back at the release, and the job reports it is not lifted.
    Atomics.store(c, 0, RUN);
    const done1 = new Promise((r) => worker.once('message', r));
    worker.postMessage({ op: 'suspend', throttled: '1000 1000000\n' });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await quota(), '1000 1000000\n', 'lifted before the freeze');
    await fsp.writeFile(freezeFile, '1\n');
    await until('max 100000\n');
    await fsp.writeFile(freezeFile, '0\n');
    const back = await until('1000 1000000\n');
    assert.ok(back < 200, `back after ${back} ms`);
    Atomics.store(c, 0, STOP);
    Atomics.notify(c, 0);
    assert.deepEqual(await done1, { done: true, lifted: false });
    // A pre-dump that ends while the tasks are held (CRIU failed): the throttle is put back.
    Atomics.store(c, 0, RUN);
    const done2 = new Promise((r) => worker.once('message', r));
    worker.postMessage({ op: 'suspend', throttled: '1000 1000000\n' });
    await fsp.writeFile(freezeFile, '1\n');
    await until('max 100000\n');
    Atomics.store(c, 0, STOP);
    Atomics.notify(c, 0);
    assert.deepEqual(await done2, { done: true, lifted: false });
    assert.equal(await quota(), '1000 1000000\n');
    // The switchover: lifted at the freeze, and the job ends by itself.
    await fsp.writeFile(freezeFile, '0\n');
    Atomics.store(c, 0, RUN);
    const done3 = new Promise((r) => worker.once('message', r));
    worker.postMessage({ op: 'lift' });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await quota(), '1000 1000000\n', 'lifted before the freeze');
    await fsp.writeFile(freezeFile, '1\n');
    assert.deepEqual(await done3, { done: true, lifted: true });
    assert.equal(await quota(), 'max 100000\n');
  } finally {
    await worker.terminate();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
