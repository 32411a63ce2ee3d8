// The source's fence (src/migration/replica/fence.ts), run by this machine's sh with a
// stand-in for runc pause (a line appended to a file): it pauses once the deadline passes,
// once per expiry, whether anyone still renews or not, and ends on its stop file.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { FENCE_SCRIPT, uptimeCs, writeDeadline } from '../../src/migration/replica/fence.js';

const pauses = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length : 0);

async function waitFor(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the fence script passes shellcheck (POSIX sh)', () => {
  execFileSync('shellcheck', ['--shell=sh', '-'], { input: FENCE_SCRIPT });
});

test("uptime's clock in centiseconds follows /proc/uptime", async () => {
  const a = await uptimeCs();
  await new Promise((r) => setTimeout(r, 120));
  const b = await uptimeCs();
  assert.ok(b - a >= 10 && b - a < 100, `${a} -> ${b}`);
});

test('it pauses once the deadline passes, not before, once per expiry; a renewal re-arms it; the stop file ends it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fence-'));
  const deadline = path.join(dir, 'deadline');
  const stop = path.join(dir, 'stop');
  const paused = path.join(dir, 'paused');
  const log = path.join(dir, 'pause-calls');
  await writeDeadline(deadline, (await uptimeCs()) + 60);
  const fence = spawn('sh', ['-c', FENCE_SCRIPT, 'fence', deadline, stop, paused, 'sh', '-c', 'echo x >> "$0"', log], {
    stdio: 'ignore',
  });
  const ended = new Promise<number | null>((resolve) => fence.once('exit', resolve));
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(pauses(log), 0, 'paused before its deadline');
    await waitFor('the pause after the deadline', () => pauses(log) === 1);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pauses(log), 1, 'paused again within one expiry');
    // A renewal confirmed: the tool resumes the container and moves the deadline on.
    await writeDeadline(deadline, (await uptimeCs()) + 40);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(pauses(log), 1);
    await waitFor('the pause after the second deadline', () => pauses(log) === 2);
    assert.equal(pauses(paused), 2);
    fs.writeFileSync(stop, '');
    assert.equal(await ended, 0);
  } finally {
    fence.kill('SIGKILL');
  }
});
