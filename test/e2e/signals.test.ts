// Signals: SIGINT/SIGTERM before the freeze stop the run with the container untouched;
// during the switchover they do not stop it half-way, even twice. Signals go to the
// CLI's whole process group, as a Ctrl-C on a terminal does.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  baseArgs,
  leftovers,
  ns,
  readCounter,
  removeEverywhere,
  ROOT,
  setupHosts,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;
before(async () => {
  h = await setupHosts();
});

/** Starts the CLI in its own process group; signals it (twice) once stderr shows `trigger`. */
async function runAndSignal(
  args: string[],
  trigger: RegExp,
  signal: NodeJS.Signals,
  env: Record<string, string> = {},
  ready: () => Promise<boolean> = async () => true,
) {
  const child = execa(ns('src')[0], [...ns('src').slice(1), 'node', path.join(ROOT, 'bin/migrate'), ...args], {
    reject: false,
    stdin: 'ignore',
    detached: true,
    env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home', ...env },
    timeout: 120_000,
  });
  let stderr = '';
  let sent = 0;
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (!sent && trigger.test(stderr)) {
      sent = -1;
      void (async () => {
        while (!(await ready())) await new Promise((r) => setTimeout(r, 10));
        sent = 1;
        process.kill(-child.pid!, signal);
        setTimeout(() => {
          try {
            process.kill(-child.pid!, signal);
            sent = 2;
          } catch {
            /* already gone */
          }
        }, 30);
      })();
    }
  });
  const r = await child;
  return { code: r.exitCode, stdout: String(r.stdout), stderr, sent };
}

describe('signals', () => {
  test('SIGINT during a long presync: rsync stopped at once, exit 130, nothing frozen, nothing left', async () => {
    const b = await startExample(h, 'counter', 'sig0');
    fs.writeFileSync(path.join(b.src, 'rootfs/big.bin'), crypto.randomBytes(512 << 20));
    fs.rmSync(path.join(b.dst, 'rootfs'), { recursive: true, force: true });
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    const rsyncRuns = async () => (await execa('pgrep', ['-f', 'rsync -aHAX'], { reject: false })).exitCode === 0;
    const t0 = Date.now();
    const r = await runAndSignal(baseArgs(h, 'sig0', b.dst), /ok {3}network lock tool/, 'SIGINT', {}, rsyncRuns);
    assert.ok(r.sent >= 1, 'the signal was not sent');
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted by SIGINT before the freeze/);
    assert.match(r.stderr, /FAIL sync the files while the container runs/, 'the presync itself was stopped');
    assert.ok(Date.now() - t0 < 20_000, 'stopped without waiting for the presync to end');
    assert.equal(await status(h.srcRoot, 'sig0'), 'running');
    assert.equal(await status(h.dstRoot, 'sig0'), 'absent');
    assert.equal(await rsyncRuns(), false, 'an rsync is left running');
    assert.deepEqual(await leftovers(), []);
    fs.rmSync(path.join(b.src, 'rootfs/big.bin'));
    await removeEverywhere(h, 'sig0');
  });

  test('SIGTERM during preflight: exit 130, nothing frozen, nothing left', async () => {
    const b = await startExample(h, 'counter', 'sig1');
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    const r = await runAndSignal(baseArgs(h, 'sig1', b.dst), /ok {3}connect to/, 'SIGTERM');
    assert.ok(r.sent >= 1, 'the signal was not sent');
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted by SIGTERM before the freeze/);
    assert.equal(await status(h.srcRoot, 'sig1'), 'running');
    assert.equal(await status(h.dstRoot, 'sig1'), 'absent');
    const v = await readCounter(b.src);
    await waitFor('the counter to go on', async () => (await readCounter(b.src)) > v);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'sig1');
  });

  test('SIGINT twice during the switchover: the migration finishes, the container runs on the destination only', async () => {
    const b = await startExample(h, 'counter', 'sig2');
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    const atFreeze = await readCounter(b.src);
    const r = await runAndSignal(
      [...baseArgs(h, 'sig2', b.dst), '--transport', 'tls'],
      /ok {3}freeze and dump/,
      'SIGINT',
    );
    assert.equal(r.sent, 2, 'both signals sent');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /SIGINT again: still finishing safely/);
    assert.equal(await status(h.srcRoot, 'sig2'), 'absent');
    assert.equal(await status(h.dstRoot, 'sig2'), 'running');
    await waitFor('the counter to continue on the destination', async () => (await readCounter(b.dst)) > atFreeze + 1);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'sig2');
  });

  test('SIGTERM during a switchover that fails: rolled back, the container runs on the source only', async () => {
    const b = await startExample(h, 'counter', 'sig3');
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    const atStart = await readCounter(b.src);
    const r = await runAndSignal(baseArgs(h, 'sig3', b.dst), /ok {3}freeze and dump/, 'SIGTERM', {
      RUNC_MIGRATE_FAIL_AT: 'verify',
    });
    assert.equal(r.code, 4, r.stderr);
    const atFreeze = await readCounter(b.src);
    assert.ok(atFreeze >= atStart, 'the counter went back');
    assert.equal(await status(h.srcRoot, 'sig3'), 'running');
    assert.equal(await status(h.dstRoot, 'sig3'), 'absent');
    await waitFor('the source to count on', async () => (await readCounter(b.src)) > atFreeze + 1);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'sig3');
  });
});
