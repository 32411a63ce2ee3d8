// The shell the hosts run, as the tool generates it, checked by a shell linter: the
// destination's guard (every variant), the source's hold and its post-copy watchdog, the rsync bridge, and the
// one-line commands recover runs on the destination. Errors and warnings fail; so do
// the info-level findings but for two that are intended here: SC2016 (single quotes
// around an inner `sh -c` script, expanded by that shell) and SC2317 (functions that end
// in exit, whose callers shellcheck reads as unreachable code).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { guardFilesCommand, guardScript, resumeCommand, type GuardSpec } from '../../src/migration/switchover/guard.js';
import { holdScript, lazyExitFile, recoverArgv, watchdogScript } from '../../src/migration/switchover/hold.js';
import { workPaths } from '../../src/migration/prepare/paths.js';
import { BRIDGE_SCRIPT } from '../../src/migration/files/rsync-bridge.js';
import { armedCommand, untilQuiet, whenQuiet } from '../../src/migration/switchover/protocol.js';
import { killMarked } from '../../src/migration/prepare/keeper.js';
import { addr } from '../../src/migration/network/address.js';
import { removeWorkDirs } from '../../src/migration/switchover/reap.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-shell-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const base: GuardSpec = {
  dir: '/dev/shm/runc-migrate.x/guard',
  state: ['runc', '--root', '/run/runc', 'state', 'web'],
  ps: ['runc', '--root', '/run/runc', 'ps', '--format', 'json', 'web'],
  pidFile: '/dev/shm/runc-migrate.x/criu-work/restored.pid',
  stateDir: '/run/runc/web',
  restore: ['runc', '--root', '/run/runc', 'restore', '--detach', 'web'],
  reap: { criuWork: '/dev/shm/runc-migrate.x/criu-work', stateDir: '/run/runc/web', restoreLog: 'restore.log' },
  kill: ['runc', 'kill', 'web', 'KILL'],
  delete: ['runc', 'delete', '--force', 'web'],
  deadlineS: 50,
  heartbeatLossS: 10,
};
const moveIp = {
  claim: ['claim', '10.0.0.9/32'],
  unclaim: ['unclaim', '10.0.0.9/32'],
  unmute: ['unmute', '10.0.0.9/32'],
  garp: ['arping', '-U', '10.0.0.9'],
};
const lazy = {
  daemon: ['criu', 'lazy-pages', '--port', '27027'],
  socket: '/w/lazy-pages.socket',
  stallS: 30,
  windowS: 300,
  session: ['dst', '[fd00::1]', 'dport', '=', ':27027'],
};
const wp = workPaths('/dev/shm/runc-migrate.y');
const watchdog = {
  port: 27027,
  cliPid: 4242,
  stallS: 45,
  windowS: 315,
  rcFile: lazyExitFile(wp.holdDir),
  record: '/run/runc-migrate/web.json',
  recover: recoverArgv('/usr/bin/node', ['/usr/bin/node', '/opt/migrate', '--post-copy', 'web', 'root@h']),
  cwd: '/home/op/my dir',
};

const scripts: Record<string, string> = {
  'guard.sh': guardScript(base),
  'guard-move-ip.sh': guardScript({ ...base, moveIp }),
  'guard-lazy.sh': guardScript({ ...base, lazy, verifyWindowMs: 100 }),
  'guard-lazy-move-ip.sh': guardScript({ ...base, lazy, verifyWindowMs: 100, moveIp }),
  'hold.sh': holdScript(workPaths('/dev/shm/runc-migrate.y'), 4242, 60),
  'hold-give-back.sh': holdScript(workPaths('/dev/shm/runc-migrate.y'), 4242, 60, [
    'ip',
    'addr',
    'add',
    '10.0.0.9/32',
    'dev',
    'eth0',
  ]),
  'hold-lazy.sh': holdScript(wp, 4242, 60, undefined, true),
  'watchdog.sh': watchdogScript(wp, watchdog),
  'rsync-bridge.sh': BRIDGE_SCRIPT,
  'resume.sh': resumeCommand(base.ps)[2],
  'guard-files.sh': guardFilesCommand(base.dir)[2],
  'unmute-after-guard.sh': addr.unmuteAfterGuard(
    ['arping'],
    { address: '10.0.0.9', prefix: 32 },
    'eth0.100',
    '/dev/shm/runc-migrate.x/guard/log',
  )[2],
  'keeper.sh': `${untilQuiet()}; rm -rf /dev/shm/runc-migrate.x/tls`,
  'armed.sh': armedCommand(['tar', '-C', '/dev/shm/runc-migrate.x/images', '-x'])[2],
  'when-quiet.sh': whenQuiet(killMarked('0123abcd')),
  'give-back.sh': addr.giveBack(['arping'], { address: '10.0.0.9', prefix: 32 }, 'eth0', wp.holdDir)[2],
  'release.sh': addr.release({ address: '10.0.0.9', prefix: 32 }, 'eth0', wp.holdDir)[4],
  'remove-work-dirs.sh': removeWorkDirs(['/dev/shm/runc-migrate.x', '/var/tmp/my dir/runc-migrate.y'])[2],
};

// The source's release of the address against a give-back, in either order, with a fake
// ip that logs what it was asked: the address ends on the source whenever a give-back ran.
test('a release that runs after the give-back leaves the address alone; one before it is undone', () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'addr-'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const log = path.join(dir, 'ip.log');
  fs.writeFileSync(path.join(bin, 'ip'), `#!/bin/sh\necho "$*" >> ${log}\n`, { mode: 0o755 });
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const m = { address: '10.0.0.9', prefix: 32 };
  const run = (argv: string[]) => execFileSync(argv[0], argv.slice(1), { env });
  const order = (first: 'release' | 'giveBack') => {
    const hold = fs.mkdtempSync(path.join(dir, 'hold-'));
    fs.rmSync(log, { force: true });
    const release = addr.release(m, 'eth0', hold);
    const giveBack = addr.giveBack(['true'], m, 'eth0', hold);
    for (const argv of first === 'release' ? [release, giveBack] : [giveBack, release]) run(argv);
    return fs.readFileSync(log, 'utf8').trim().split('\n');
  };
  assert.deepEqual(order('release'), ['addr del 10.0.0.9/32 dev eth0', 'addr add 10.0.0.9/32 dev eth0']);
  assert.deepEqual(order('giveBack'), ['addr add 10.0.0.9/32 dev eth0']);
});

test('the shell the hosts run passes shellcheck (POSIX sh)', () => {
  const files = Object.entries(scripts).map(([name, text]) => {
    const f = path.join(tmp, name);
    fs.writeFileSync(f, text.startsWith('#!') ? text : `#!/bin/sh\n${text}`);
    return f;
  });
  let out = '';
  try {
    execFileSync('shellcheck', ['--shell=sh', '--exclude=SC2016,SC2317', '--format=gcc', ...files], {
      encoding: 'utf8',
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string };
    if (e.code === 'ENOENT')
      assert.fail('shellcheck is not installed: run make deps (test/hosts/install-deps.sh installs it)');
    out = e.stdout ?? String(err);
  }
  assert.equal(out, '', out);
});
