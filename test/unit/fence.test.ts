// The source's fence (src/migration/replica/fence.ts), run by this machine's sh with a
// stand-in for runc pause (a line appended to a file): it pauses at every look once the
// deadline passes, whether anyone still renews or not, and ends on its stop file.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  FENCE_ALREADY,
  FENCE_GONE,
  FENCE_SCRIPT,
  pauseUnlessPaused,
  uptimeCs,
  writeDeadline,
} from '../../src/migration/replica/fence.js';

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

test('while the deadline is past it runs the pause command at every look (paused once per expiry), never before; a renewal re-arms it; the stop file ends it', async () => {
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
    await waitFor('the pause after the deadline', () => pauses(log) >= 1);
    // A dump that thawed the container meanwhile: the next looks pause it again.
    await waitFor('the pause command again within the same expiry', () => pauses(log) >= 3);
    assert.equal(pauses(paused), 1, 'one fencing per expiry');
    // A renewal confirmed: the tool resumes the container and moves the deadline on.
    await writeDeadline(deadline, (await uptimeCs()) + 40);
    await new Promise((r) => setTimeout(r, 150));
    const before = pauses(log);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(pauses(log), before, 'ran the pause command before the new deadline');
    await waitFor('the pause after the second deadline', () => pauses(log) > before);
    await waitFor('the second fencing recorded', () => pauses(paused) === 2);
    fs.writeFileSync(stop, '');
    assert.equal(await ended, 0);
  } finally {
    fence.kill('SIGKILL');
  }
});

test('pauseUnlessPaused pauses a running container only, and says gone for another of the same name (a stand-in runc)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fence-runc-'));
  const runc = path.join(dir, 'runc');
  const calls = path.join(dir, 'calls');
  fs.writeFileSync(
    runc,
    `#!/bin/sh\necho "$*" >> ${calls}\n[ "$1" = state ] && printf '{\\n  "status": "%s",\\n  "created": "%s"\\n}\\n' "$(cat ${dir}/status)" "$(cat ${dir}/created)"\nexit 0\n`,
    { mode: 0o755 },
  );
  const created = '2026-12-06T12:00:00.1Z';
  for (const [st, made, paused, code] of [
    ['running', created, true, 0],
    ['paused', created, false, FENCE_ALREADY],
    ['stopped', created, false, FENCE_ALREADY],
    ['running', '2026-12-06T13:00:00.1Z', false, FENCE_GONE],
  ] as const) {
    fs.writeFileSync(path.join(dir, 'status'), st);
    fs.writeFileSync(path.join(dir, 'created'), made);
    fs.rmSync(calls, { force: true });
    const argv = pauseUnlessPaused([runc], "we'ird", created);
    const r = spawnSync(argv[0], argv.slice(1));
    assert.equal(r.status, code, `${st} ${made}`);
    const lines = fs.readFileSync(calls, 'utf8').trim().split('\n');
    assert.deepEqual(lines, paused ? ["state we'ird", "pause we'ird"] : ["state we'ird"], st);
  }
});

test('the fence ends when the container it fences is gone', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fence-gone-'));
  const deadline = path.join(dir, 'deadline');
  await writeDeadline(deadline, (await uptimeCs()) + 20);
  const fence = spawn(
    'sh',
    [
      '-c',
      FENCE_SCRIPT,
      'fence',
      deadline,
      path.join(dir, 'stop'),
      path.join(dir, 'paused'),
      'sh',
      '-c',
      `exit ${FENCE_GONE}`,
    ],
    { stdio: 'ignore' },
  );
  const code = await new Promise<number | null>((resolve) => fence.once('exit', resolve));
  assert.equal(code, 0);
  assert.match(fs.readFileSync(path.join(dir, 'paused'), 'utf8'), /^gone /);
});
