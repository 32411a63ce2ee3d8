// The lease's locked section (src/migration/replica/leasefile.ts), run for real on this
// machine's shell in a temporary directory: decisions serialize under the lock, a write
// is whole, and a tool that dies mid-section leaves the lease as it was.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { failover, renew, type LeaseRecord } from '../../src/migration/replica/lease.js';
import { LEASE_FILE, LEASE_SCRIPT, parseLeaseHead, withLease } from '../../src/migration/replica/leasefile.js';

const host = new LocalHost(() => undefined);
/** This machine's monotonic clock as the lease script reads it (/proc/uptime, ms). */
const uptimeMs = () => Math.round(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000);
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'lease-'));
const read = (dir: string): LeaseRecord => JSON.parse(fs.readFileSync(path.join(dir, LEASE_FILE), 'utf8'));

test('the lease script passes shellcheck (POSIX sh)', () => {
  execFileSync('shellcheck', ['--shell=sh', '-'], { input: LEASE_SCRIPT });
});

test("a renewal writes the lease from the standby's clock; failover then marks it, and a later renewal hears failed-over", async () => {
  const dir = tmp();
  const before = uptimeMs();
  const a = await withLease(host, dir, (now, lease) => {
    const r = renew(lease, now, 'src:1', 15000, 'freeze');
    return { write: r.answer === 'renewed' ? r.record : undefined, result: r };
  });
  assert.equal(a.answer, 'renewed');
  const rec = read(dir);
  assert.ok(rec.expiresAt >= before + 15000 && rec.expiresAt <= uptimeMs() + 15000, JSON.stringify(rec));
  assert.equal(rec.boot, fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  const f = await withLease(host, dir, (now, lease) => {
    const r = failover(lease, now + 16000, { sourceConfirmedStopped: false, force: false, by: 'op' });
    return { write: 'go' in r ? r.go : undefined, result: r };
  });
  assert.ok('go' in f);
  const b = await withLease(host, dir, (now, lease) => ({ result: renew(lease, now, 'src:1', 15000, 'freeze') }));
  assert.equal(b.answer, 'failed-over');
});

test('sections serialize: twenty renewals at once each see the one before (no lost update)', async () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, LEASE_FILE), JSON.stringify({ holder: 'n', expiresAt: 0, fence: 'freeze' }));
  await Promise.all(
    Array.from({ length: 20 }, () =>
      withLease(host, dir, (_now, lease) => ({
        write: { holder: 'n', expiresAt: (lease?.expiresAt ?? 0) + 1, fence: 'freeze' as const },
        result: undefined,
      })),
    ),
  );
  assert.equal(read(dir).expiresAt, 20);
});

test('a tool that dies in the section leaves the lease as it was, and the lock free', async () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, LEASE_FILE), JSON.stringify({ holder: 'a', expiresAt: 7, fence: 'freeze' }));
  const proc = await host.spawn(['sh', '-c', LEASE_SCRIPT, 'sh', dir], { streamStdout: true });
  let out = '';
  await new Promise<void>((resolve) =>
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (parseLeaseHead(out)) resolve();
    }),
  );
  // The channel closes half-way: a verdict, but not the record.
  proc.stdin.write('write\n');
  proc.stdin.end();
  await proc.done;
  assert.equal(read(dir).expiresAt, 7);
  assert.ok(!fs.existsSync(path.join(dir, `${LEASE_FILE}.new`)));
  const seen = await withLease(host, dir, (_now, lease) => ({ result: lease?.expiresAt }));
  assert.equal(seen, 7);
});

test('a tool that goes silent in the section (never answers, never closes) does not hold the lock past the limit', async () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, LEASE_FILE), JSON.stringify({ holder: 'a', expiresAt: 7, fence: 'freeze' }));
  // stdin left open and never written: what a partitioned link looks like from the standby.
  const proc = await host.spawn(['sh', '-c', LEASE_SCRIPT, 'sh', dir, '1'], { streamStdout: true });
  proc.stdout.resume();
  const t0 = Date.now();
  const r = await withLease(host, dir, (_now, lease) => ({ result: lease?.expiresAt }));
  assert.equal(r, 7);
  const waited = Date.now() - t0;
  assert.ok(waited >= 700 && waited < 5000, `the second section waited ${waited} ms`);
  proc.kill('SIGKILL');
});

test('a lease written in an earlier boot of the standby ends its length after this boot began', async () => {
  const dir = tmp();
  fs.writeFileSync(
    path.join(dir, LEASE_FILE),
    JSON.stringify({ holder: 'a', expiresAt: 9e12, fence: 'freeze', leaseMs: 15000, boot: 'an-earlier-boot' }),
  );
  const seen = await withLease(host, dir, (now, lease) => ({ result: { now, expiresAt: lease?.expiresAt } }));
  assert.equal(seen.expiresAt, 15000);
  assert.ok(seen.now > 15000, 'this machine has been up for more than 15 s: the old lease has expired');
  const head = parseLeaseHead(`now 1796561105086000000 123.45 ${'0'.repeat(8)}-aaaa-bbbb-cccc-${'d'.repeat(12)}\n.\n`);
  assert.equal(head?.nowMs, 123450);
  assert.equal(head?.wallMs, 1796561105086);
});
