// The armed copy (pages/stream.ts) with real tars between two directories of this
// machine: both ends are this machine's shell (LocalHost), as the source always is.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { ArmedCopy } from '../../src/migration/pages/stream.js';
import type { Hosts } from '../../src/migration/session.js';
import { killMarked, withMark } from '../../src/migration/prepare/keeper.js';
import { ARMED_GO, armedCommand, whenQuiet } from '../../src/migration/switchover/protocol.js';

const hosts: Hosts = {
  src: new LocalHost(() => undefined),
  dst: new LocalHost(() => undefined, 'destination'),
} as unknown as Hosts;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'armed-copy-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function dirs(): { from: string; to: string } {
  const base = fs.mkdtempSync(path.join(tmp, 'pair-'));
  const from = path.join(base, 'from');
  const to = path.join(base, 'to');
  fs.mkdirSync(from);
  fs.mkdirSync(to);
  return { from, to };
}

/** The pids of processes whose command line names DIR (the armed pair's). */
function processesOn(dir: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', dir], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

test('an armed copy sends the directory as it is when fired, not as it was when armed', async () => {
  const { from, to } = dirs();
  fs.writeFileSync(path.join(from, 'early'), 'a');
  const armed = await ArmedCopy.arm(hosts, from, to, ['./parent'], 10_000);
  assert.ok(armed);
  // Written after the arm, before the fire: the dump's images.
  await new Promise((r) => setTimeout(r, 50));
  fs.writeFileSync(path.join(from, 'late'), 'b'.repeat(100_000));
  fs.symlinkSync('/nowhere', path.join(from, 'parent'));
  const bytes = await armed.fire('copying images', 10_000);
  assert.ok(bytes !== undefined && bytes > 100_000, `bytes ${bytes}`);
  assert.equal(fs.readFileSync(path.join(to, 'early'), 'utf8'), 'a');
  assert.equal(fs.readFileSync(path.join(to, 'late'), 'utf8').length, 100_000);
  assert.equal(fs.existsSync(path.join(to, 'parent')), false, 'the excluded link stays behind');
  await armed.disarm(); // after a fire: nothing to do
  assert.deepEqual(processesOn(from), []);
});

test('a disarmed copy ends both tars and writes nothing', async () => {
  const { from, to } = dirs();
  fs.writeFileSync(path.join(from, 'f'), 'x');
  const armed = await ArmedCopy.arm(hosts, from, to, [], 10_000);
  assert.ok(armed);
  assert.ok(processesOn(from).length > 0, 'the sender waits');
  await armed.disarm();
  assert.deepEqual(processesOn(from), []);
  assert.deepEqual(processesOn(to), []);
  assert.deepEqual(fs.readdirSync(to), []);
});

test('a pair with an end gone before the fire gives undefined (the caller copies afresh)', async () => {
  const { from, to } = dirs();
  const armed = await ArmedCopy.arm(hosts, from, to, [], 10_000);
  assert.ok(armed);
  for (const pid of processesOn(to)) process.kill(Number(pid), 'SIGKILL');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await armed.fire('copying images', 10_000), undefined);
  assert.deepEqual(processesOn(from), []);
});

const SHELLS = ['bash', 'sh without bash'] as const;

/**
 * A PATH for SHELL's wait alone: with bash and without `timeout` (the fallback would fail,
 * so a pass shows bash's wait ran), or with `timeout` and without bash (a host without
 * bash: each line read by its own timeout and sh).
 */
function pathFor(shell: (typeof SHELLS)[number]): string {
  const bin = path.join(tmp, shell === 'bash' ? 'bash-only' : 'no-bash');
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(bin);
    for (const name of ['sh', shell === 'bash' ? 'bash' : 'timeout', 'cat', 'echo', 'sleep', 'grep']) {
      const real = execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
      fs.symlinkSync(real.startsWith('/') ? real : `/bin/${name}`, path.join(bin, name));
    }
  }
  return bin;
}

/** Runs armedCommand(ARGV) with INPUT on its stdin, with SHELL's PATH: its exit code and output. */
function armedRun(argv: string[], input: string, shell: (typeof SHELLS)[number]): { code: number; out: string } {
  const [cmd, ...args] = armedCommand(argv);
  const env = { ...process.env, PATH: pathFor(shell) };
  try {
    return { code: 0, out: execFileSync(cmd, args, { input, encoding: 'utf8', env }) };
  } catch (err) {
    const e = err as { status: number; stdout: string };
    return { code: e.status, out: e.stdout };
  }
}

for (const shell of SHELLS) {
  test(`an armed command (${shell}) skips keepalive lines, runs on its line, and gets the rest of its stdin`, () => {
    assert.deepEqual(armedRun(['cat'], `\n\n${ARMED_GO}\nthe archive\n`, shell), { code: 0, out: 'the archive\n' });
  });

  test(`an armed command (${shell}) without its line runs nothing: its stdin closed, another line, its line cut short`, () => {
    assert.equal(armedRun(['echo', 'ran'], '\n\n', shell).out, '');
    assert.notEqual(armedRun(['echo', 'ran'], '', shell).code, 0);
    assert.equal(armedRun(['echo', 'ran'], `hb\n${ARMED_GO}\n`, shell).out, '');
    assert.equal(armedRun(['echo', 'ran'], `\n${ARMED_GO}`, shell).out, '');
  });
}

/** Runs whenQuiet(`echo ran`, 1 s) fed by FEED (a shell command whose output is its stdin), with SHELL's PATH. */
function quietRun(feed: string, shell: (typeof SHELLS)[number]): string {
  const env = { ...process.env, PATH: pathFor(shell) };
  return execFileSync('/bin/sh', ['-c', `(${feed}) | (${whenQuiet('echo ran', 1)})`], { encoding: 'utf8', env });
}

for (const shell of SHELLS) {
  test(`whenQuiet (${shell}) runs its command when the lines stop, not when they end or keep coming`, () => {
    assert.equal(quietRun('printf "\\n\\n"', shell), '', 'its stdin closed');
    assert.equal(
      quietRun('echo; sleep 0.4; echo; sleep 0.4; echo; sleep 0.4; echo', shell),
      '',
      'lines within the limit',
    );
    assert.equal(quietRun('echo; sleep 2; echo', shell), 'ran\n', 'quiet for longer than the limit');
  });
}

test('killMarked kills the processes marked with its token, across exec, and no others', async () => {
  const token = crypto.randomBytes(6).toString('hex');
  const spawnSleep = (argv: string[]) => spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
  const markedSleep = spawnSleep(withMark(token, ['sh', '-c', 'exec sleep 30']));
  // Another mark, and one the token is a prefix of: neither is this token's.
  const others = [spawnSleep(withMark(`${token}x`, ['sleep', '30'])), spawnSleep(withMark('other', ['sleep', '30']))];
  try {
    const ended = new Promise((r) => markedSleep.once('exit', (_c, sig) => r(sig)));
    // Until the marked sleep runs (env and sh have exec'd into it).
    const exe = () => fs.readlinkSync(`/proc/${markedSleep.pid}/exe`);
    for (let i = 0; i < 100 && !exe().endsWith('/sleep'); i++) await new Promise((r) => setTimeout(r, 20));
    execFileSync('sh', ['-c', killMarked(token)]);
    assert.equal(await ended, 'SIGKILL');
    for (const o of others) assert.equal(o.exitCode ?? o.signalCode, null, 'another mark is left alone');
  } finally {
    for (const o of others) o.kill('SIGKILL');
    markedSleep.kill('SIGKILL');
  }
});
