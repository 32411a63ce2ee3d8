// The rootfs sync's pure parts: which trees move where, rsync's command line and figures,
// and which files of the frozen tasks must be compared by content.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  destinationOf,
  openForWriting,
  planSync,
  sharedWritableMappings,
  SyncPlanError,
} from '../../src/migration/files/syncplan.js';
import { parseRsyncStats, parseRsyncVersion, rsyncCmd, rsyncEnv } from '../../src/rsync.js';
import { BRIDGE_SCRIPT, BRIDGE_SHELL } from '../../src/migration/files/rsync-bridge.js';

const config = (
  root: string,
  mounts: Array<{ destination: string; source: string; type?: string; options?: string[] }>,
) =>
  JSON.stringify({
    root: { path: root },
    mounts: mounts.map((m) => ({ type: m.type ?? 'bind', options: m.options ?? ['rbind'], ...m })),
  });

test('the rootfs lands where the destination bundle puts it; a missing destination config takes the source layout', () => {
  const p = planSync({
    srcConfig: config('rootfs', []),
    srcBundle: '/b/src',
    dstConfig: config('/data/root', []),
    dstBundle: '/b/dst',
    rootfs: true,
    volumes: [],
  });
  assert.deepEqual(p.trees, [{ what: 'rootfs', containerPath: '/', src: '/b/src/rootfs', dst: '/data/root' }]);
  const q = planSync({
    srcConfig: config('rootfs', []),
    srcBundle: '/b/src',
    dstBundle: '/b/dst',
    rootfs: true,
    volumes: [],
  });
  assert.equal(q.trees[0].dst, '/b/dst/rootfs');
});

test('volumes: named by container path or host path; the rest are listed as not synced; an unknown one is refused with the list', () => {
  const c = config('rootfs', [
    { destination: '/data', source: '/srv/data' },
    { destination: '/cache', source: '/srv/cache' },
    { destination: '/proc', source: 'proc', type: 'proc', options: [] },
  ]);
  const d = config('rootfs', [{ destination: '/data', source: '/mnt/data2' }]);
  const p = planSync({
    srcConfig: c,
    srcBundle: '/b',
    dstConfig: d,
    dstBundle: '/b',
    rootfs: true,
    volumes: ['/data/'],
  });
  assert.deepEqual(p.trees[1], { what: 'volume /data', containerPath: '/data', src: '/srv/data', dst: '/mnt/data2' });
  assert.deepEqual(
    p.notSynced.map((m) => m.containerPath),
    ['/cache'],
  );
  const byHost = planSync({ srcConfig: c, srcBundle: '/b', dstBundle: '/b', rootfs: false, volumes: ['/srv/cache'] });
  assert.deepEqual(
    byHost.trees.map((t) => [t.what, t.dst]),
    [['volume /cache', '/srv/cache']],
  );
  assert.throws(
    () => planSync({ srcConfig: c, srcBundle: '/b', dstBundle: '/b', rootfs: true, volumes: ['/nope'] }),
    (e: unknown) => e instanceof SyncPlanError && /\/data \(from \/srv\/data\)/.test(e.hint),
  );
});

test('a tree at / is refused', () => {
  assert.throws(
    () => planSync({ srcConfig: config('/', []), srcBundle: '/b', dstBundle: '/b', rootfs: true, volumes: [] }),
    SyncPlanError,
  );
});

test('a path of the container lands in the deepest mount that holds it, nowhere if that mount is not synced', () => {
  const c = config('rootfs', [
    { destination: '/data', source: '/srv/data' },
    { destination: '/data/tmp', source: '/srv/tmp' },
  ]);
  const p = planSync({ srcConfig: c, srcBundle: '/b', dstBundle: '/d', rootfs: true, volumes: ['/data'] });
  assert.equal(destinationOf(p, '/var/app.log'), '/d/rootfs/var/app.log');
  assert.equal(destinationOf(p, '/data/x/y'), '/srv/data/x/y');
  assert.equal(destinationOf(p, '/data/tmp/z'), undefined);
  assert.equal(destinationOf(p, '/database'), '/d/rootfs/database');
});

test('shared writable mappings and files open for writing are found', () => {
  const maps = [
    '7f0000000000-7f0000001000 rw-s 00000000 fe:00 123 /var/map.dat',
    '7f0000001000-7f0000002000 r--s 00000000 fe:00 124 /var/ro.dat',
    '7f0000002000-7f0000003000 rw-p 00000000 fe:00 125 /lib/libc.so.6',
    '7f0000003000-7f0000004000 rw-s 00000000 00:01 9 /dev/zero (deleted)',
    '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]',
  ].join('\n');
  assert.deepEqual(sharedWritableMappings(maps), ['/var/map.dat']);
  assert.equal(openForWriting('pos:\t0\nflags:\t0102002\nmnt_id:\t30\n'), true);
  assert.equal(openForWriting('pos:\t0\nflags:\t0100000\nmnt_id:\t30\n'), false);
  assert.equal(openForWriting('pos:\t0\nflags:\t02001\n'), true);
});

test("rsync's command line: archive, contents of one directory into the other over the bridge", () => {
  const a = rsyncCmd.sync({ src: '/b/rootfs/', dst: '/d/root fs', shell: BRIDGE_SHELL });
  assert.deepEqual(a.slice(-4), ['-e', BRIDGE_SHELL, '/b/rootfs/', 'destination:/d/root fs/']);
  assert.ok(a.includes('--delete') && a.includes('--numeric-ids') && a.includes('--one-file-system'));
  assert.ok(a.includes('--blocking-io'), 'the bridge needs a blocking stdout');
  assert.ok(a.includes('--sparse'), 'holes stay holes');
});

test("rsync runs without the user's RSYNC_* variables (RSYNC_OLD_ARGS would stop it escaping the remote side's arguments)", () => {
  const e = rsyncEnv({ PATH: '/bin', RSYNC_OLD_ARGS: '1', RSYNC_RSH: 'ssh -x', HOME: '/root', XRSYNC: 'kept' });
  assert.deepEqual(e, { PATH: '/bin', HOME: '/root', XRSYNC: 'kept' });
});

test("rsync's --stats figures are read, with thousands separators", () => {
  const out = `
Number of files: 1,234 (reg: 1,000, dir: 234)
Number of created files: 3
Number of deleted files: 2
Number of regular files transferred: 5
Total file size: 1,048,576 bytes
Total transferred file size: 12,345 bytes
Literal data: 12,345 bytes
Total bytes sent: 13,000
Total bytes received: 200
`;
  assert.deepEqual(parseRsyncStats(out), {
    filesTransferred: 5,
    filesDeleted: 2,
    transferredFileBytes: 12345,
    totalFileBytes: 1048576,
    wireBytes: 13200,
  });
  assert.equal(parseRsyncVersion('rsync  version 3.2.7  protocol version 31\n'), '3.2.7');
  assert.equal(parseRsyncVersion('rsync  version v3.5.0  protocol version 32\n'), '3.5.0');
});

test('the bridge script hands the command, then the bytes, on its own descriptors', () => {
  assert.match(BRIDGE_SCRIPT, /printf '%s\\0' "\$@"/);
  assert.match(BRIDGE_SCRIPT, /exec cat <&6/);
  // No path in rsync's -e (rsync splits it with its own rules): the bridge's come by environment.
  assert.doesNotMatch(BRIDGE_SHELL, /\//);
});

// The script itself, run by sh with FIFOs and no host: what rsync sees of it.
async function runBridge(
  toolPid: number,
  serve: boolean,
): Promise<{ code: number | null; ms: number; out: string; head: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bridge-'));
  const [script, up, down] = ['bridge.sh', 'up', 'down'].map((f) => path.join(dir, f));
  fs.writeFileSync(script, BRIDGE_SCRIPT);
  execFileSync('mkfifo', [up, down]);
  const t0 = performance.now();
  const child = spawn('sh', [script, 'destination', 'rsync', '--server'], {
    env: { ...process.env, RUNC_MIGRATE_UP: up, RUNC_MIGRATE_DOWN: down, RUNC_MIGRATE_PID: String(toolPid) },
  });
  const exited = new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  let head = '';
  if (serve) {
    // The tool's side: read what comes up, answer down, close.
    const [r, w] = await Promise.all([fsp.open(up, 'r'), fsp.open(down, 'w')]);
    child.stdin.end('bytes from rsync');
    const got = await r.readFile();
    head = got.toString();
    await w.write('answer');
    await w.close();
    await r.close();
  } else child.stdin.end();
  const code = await exited;
  fs.rmSync(dir, { recursive: true, force: true });
  return { code, ms: performance.now() - t0, out, head };
}

test('the bridge script relays both ways while the tool lives, and ends by itself when the tool died before opening its ends', async () => {
  const ok = await runBridge(process.pid, true);
  assert.equal(ok.head, 'destination\0rsync\0--server\0\0bytes from rsync');
  assert.equal(ok.out, 'answer');
  assert.equal(ok.code, 0);
  // A pid that has exited: the tool was killed before it opened the FIFOs.
  const dead = spawnSync('true').pid!;
  const orphan = await runBridge(dead, false);
  assert.notEqual(orphan.code, 0);
  assert.ok(orphan.ms < 3000, `the orphaned bridge took ${Math.round(orphan.ms)} ms to end`);
});
