// The armed copy (pages/stream.ts) with real tars between two directories of this
// machine: both ends are this machine's shell (LocalHost), as the source always is.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { ArmedCopy } from '../../src/migration/pages/stream.js';
import type { Hosts } from '../../src/migration/session.js';
import { killMarked, marked } from '../../src/migration/prepare/keeper.js';
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

/**
 * A PATH with what armedCommand's fallback needs and no bash: the wait of a host without
 * bash (each line read by its own timeout and sh).
 */
function pathWithoutBash(): string {
  const bin = path.join(tmp, 'no-bash');
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(bin);
    for (const name of ['sh', 'timeout', 'cat', 'echo', 'sleep', 'grep']) {
      const real = execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
      fs.symlinkSync(real.startsWith('/') ? real : `/bin/${name}`, path.join(bin, name));
    }
  }
  return bin;
}

const SHELLS = ['bash', 'sh without bash'] as const;

/** Runs armedCommand(ARGV) with INPUT on its stdin, with SHELL's PATH: its exit code and output. */
function armedRun(argv: string[], input: string, shell: (typeof SHELLS)[number]): { code: number; out: string } {
  const [cmd, ...args] = armedCommand(argv);
  const env = { ...process.env, PATH: shell === 'bash' ? process.env.PATH : pathWithoutBash() };
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
  const env = { ...process.env, PATH: shell === 'bash' ? process.env.PATH : pathWithoutBash() };
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
  const spawnSleep = (argv: string[]) => spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
  const markedSleep = spawnSleep(marked('t0ken1', ['sh', '-c', 'exec sleep 30']));
  const other = spawnSleep(marked('t0ken2', ['sleep', '30']));
  const ended = (p: ReturnType<typeof spawnSleep>) => new Promise((r) => p.once('exit', (_c, sig) => r(sig)));
  const markedEnd = ended(markedSleep);
  await new Promise((r) => setTimeout(r, 200));
  execFileSync('sh', ['-c', killMarked('t0ken1')]);
  assert.equal(await markedEnd, 'SIGKILL');
  assert.equal(other.exitCode, null, 'another token is left alone');
  other.kill('SIGKILL');
});
