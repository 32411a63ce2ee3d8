// Replication's checkpoint hold (src/migration/replica/checkpoint.ts), run by this machine's
// sh as CRIU would run it at post-dump: it ends on its verdict, but never lets the
// container run (exit) while the fence's deadline is past.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { checkpointHoldScript, startTime } from '../../src/migration/replica/checkpoint.js';
import { uptimeCs, writeDeadline } from '../../src/migration/replica/fence.js';

test('the hold script passes shellcheck (POSIX sh)', () => {
  execFileSync('shellcheck', ['--shell=sh', '-'], { input: checkpointHoldScript('/x/hold', 1, 30, 2, '/x/deadline') });
  execFileSync('shellcheck', ['--shell=sh', '-'], { input: checkpointHoldScript('/x/hold', 1, 30, 2) });
});

function hold(dir: string, deadline?: string) {
  const script = path.join(dir, 'hold.sh');
  fs.writeFileSync(script, checkpointHoldScript(dir, process.pid, 30, process.pid, deadline), { mode: 0o700 });
  const p = spawn('sh', [script], { env: { ...process.env, CRTOOLS_SCRIPT_ACTION: 'post-dump' }, stdio: 'ignore' });
  return new Promise<number | null>((resolve) => p.once('exit', resolve));
}

test('go exits 0, fail exits 1, once frozen is marked', async () => {
  for (const [verdict, code] of [
    ['go', 0],
    ['fail', 1],
  ] as const) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hold-'));
    const ended = hold(dir);
    while (!fs.existsSync(path.join(dir, 'frozen'))) await new Promise((r) => setTimeout(r, 10));
    fs.writeFileSync(path.join(dir, verdict), '');
    assert.equal(await ended, code);
  }
});

test('past the deadline the hold keeps the container frozen, whatever the verdict, until a renewal moves it on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hold-'));
  const deadline = path.join(dir, 'deadline');
  await writeDeadline(deadline, (await uptimeCs()) - 10);
  let exited = false;
  const ended = hold(dir, deadline).then((c) => {
    exited = true;
    return c;
  });
  while (!fs.existsSync(path.join(dir, 'frozen'))) await new Promise((r) => setTimeout(r, 10));
  fs.writeFileSync(path.join(dir, 'fail'), '');
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(exited, false, 'let CRIU thaw the container past the deadline');
  await writeDeadline(deadline, (await uptimeCs()) + 500);
  assert.equal(await ended, 1);
});

test("past the deadline, the hold ends once the container's init is a zombie (traced by CRIU, never reaped while it waits), or its pid another's", async () => {
  // A zombie: a child of a process that never reaps it (sh execs sleep, which does not wait).
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const zombie = Number(await new Promise<string>((r) => parent.stdout.once('data', (d: Buffer) => r(d.toString()))));
  try {
    const end = Date.now() + 3000;
    while (!fs.readFileSync(`/proc/${zombie}/stat`, 'utf8').includes(') Z ') && Date.now() < end)
      await new Promise((r) => setTimeout(r, 20));
    for (const [init, start] of [
      [zombie, await startTime(zombie)],
      [process.pid, '1'],
    ] as const) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hold-'));
      const deadline = path.join(dir, 'deadline');
      await writeDeadline(deadline, (await uptimeCs()) - 10);
      const script = path.join(dir, 'hold.sh');
      fs.writeFileSync(script, checkpointHoldScript(dir, process.pid, 30, init, deadline, start), { mode: 0o700 });
      const p = spawn('sh', [script], { env: { ...process.env, CRTOOLS_SCRIPT_ACTION: 'post-dump' }, stdio: 'ignore' });
      const ended = new Promise<number | null>((resolve) => p.once('exit', resolve));
      while (!fs.existsSync(path.join(dir, 'frozen'))) await new Promise((r) => setTimeout(r, 10));
      fs.writeFileSync(path.join(dir, 'fail'), '');
      const code = await Promise.race([ended, new Promise<string>((r) => setTimeout(() => r('still waiting'), 3000))]);
      p.kill('SIGKILL');
      assert.equal(code, 1, `init ${init} (start ${start})`);
    }
  } finally {
    parent.kill('SIGKILL');
  }
});
