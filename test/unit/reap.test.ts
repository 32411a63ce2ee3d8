// What the guard takes away after a restore killed midway (reap.ts), run by a real shell
// against real processes: only the tasks the restore's log names and that started after
// the restore are killed; mount points are matched as mountinfo escapes them.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { reapFunctions, UNMOUNT_UNDER } from '../../src/migration/switchover/reap.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-reap-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
};

test('reap kills the tasks the log names that started after the restore, and only those', async () => {
  const work = path.join(tmp, 'work');
  const stateDir = path.join(tmp, 'runc', 'c');
  fs.mkdirSync(work, { recursive: true });
  fs.mkdirSync(path.join(stateDir, 'criu-root'), { recursive: true });
  // One task older than the restore (a pid the log names that was reused, as it were), and
  // the restore's own process, then one task it forked.
  const older = spawn('sleep', ['60'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 1100)); // start times count in clock ticks
  const restore = spawn('sleep', ['60'], { stdio: 'ignore' });
  const forked = spawn('sleep', ['60'], { stdio: 'ignore' });
  // Young enough, but not the task the log names (its pid in its namespace differs).
  const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    fs.writeFileSync(
      path.join(work, 'restore.log'),
      // Here no task has a pid namespace of its own: its pid there is its pid.
      `(00.05) Forking task with 1 pid (flags 0x6c028000)\n(00.06) PID: real ${forked.pid} virt ${forked.pid}\n(00.07) PID: real ${older.pid} virt ${older.pid}\n(00.08) PID: real ${stranger.pid} virt 1\n`,
    );
    const script = `${reapFunctions({ criuWork: work, stateDir, restoreLog: 'restore.log' })}
started ${restore.pid} && rs=$st0
reap`;
    execFileSync('sh', ['-c', script]);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(alive(forked.pid as number), false, 'the forked task lives');
    assert.equal(alive(older.pid as number), true, 'a task older than the restore was killed');
    assert.equal(alive(stranger.pid as number), true, "a task whose pid in its namespace is not the log's was killed");
    // No state.json: runc's directory goes with its empty criu-root.
    assert.equal(fs.existsSync(stateDir), false);
  } finally {
    for (const p of [older, restore, forked, stranger]) p.kill('SIGKILL');
  }
});

test("reap leaves runc's directory when it holds state.json or anything else", () => {
  for (const extra of ['state.json', 'other']) {
    const stateDir = path.join(tmp, `runc-${extra}`, 'c');
    fs.mkdirSync(path.join(stateDir, 'criu-root'), { recursive: true });
    fs.writeFileSync(path.join(stateDir, extra), '{}');
    execFileSync('sh', ['-c', `${reapFunctions({ criuWork: tmp, stateDir, restoreLog: 'none.log' })}\nreap`]);
    assert.equal(fs.existsSync(path.join(stateDir, extra)), true, extra);
  }
});

// Needs root (mount): CI runs the tests as root.
test('unmount_under detaches what is mounted below a path with a space, given through a symlink', {
  skip: process.getuid?.() !== 0,
}, () => {
  const real = path.join(tmp, 'my dir');
  const yard = path.join(real, 'work', '.criu.cgyard.x');
  fs.mkdirSync(path.join(yard, 'sub'), { recursive: true });
  const link = path.join(tmp, 'link');
  fs.symlinkSync(real, link);
  const mounted = () =>
    fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(`${tmp}/my\\040dir/work/.criu.cgyard.x`);
  execFileSync('mount', ['-t', 'tmpfs', 'none', yard]);
  fs.mkdirSync(path.join(yard, 'inner'));
  execFileSync('mount', ['-t', 'tmpfs', 'none', path.join(yard, 'inner')]);
  try {
    assert.ok(mounted());
    execFileSync('sh', ['-c', `${UNMOUNT_UNDER}\nunmount_under "$1"`, 'sh', path.join(link, 'work')]);
    assert.ok(!mounted(), 'still mounted');
  } finally {
    execFileSync('sh', ['-c', `umount -l "$1"/inner; umount -l "$1"; true`, 'sh', yard]);
  }
});
