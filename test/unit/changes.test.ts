// The change log: events to the final delta's list (pure), and the watcher itself on a
// directory of this machine (real inotify, real perl): every kind of change is seen, a
// queue overflow is known, the mark drains the queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  deltaList,
  emptyChanges,
  IN,
  recordEvent,
  type Linked,
  type PathFacts,
} from '../../src/migration/files/changes.js';
import { ChangeLog, inotifySyscalls, WATCHER } from '../../src/migration/files/changelog.js';
import { comparedDifferences, unsupportedMetadata } from '../../src/rsync.js';

const R = '/r';
const facts = (m: Record<string, Partial<PathFacts>>) => (p: string) =>
  p in m ? { ino: 0, nlink: 1, file: false, dir: false, ...m[p] } : undefined;

test('an event names its path; a name event also lists its directory; a directory that appears is sent whole', () => {
  const c = emptyChanges();
  recordEvent(c, '/r/a', IN.MODIFY, 'f');
  recordEvent(c, '/r/a', IN.CREATE | IN.ISDIR, 'n');
  recordEvent(c, '/r/b', IN.ATTRIB, '');
  recordEvent(c, '/r', IN.Q_OVERFLOW, '');
  assert.deepEqual([...c.touched].sort(), ['/r/a', '/r/a/f', '/r/a/n', '/r/b']);
  assert.deepEqual([...c.whole], ['/r/a/n']);
});

test('the list: changed paths, appeared directories with their contents, every name of a linked file, the root as "."', () => {
  const links = new Map<number, Linked>([
    [7, { nlink: 2, names: new Set(['/r/a/f', '/r/b/g']) }],
    [9, { nlink: 3, names: new Set(['/r/o']) }],
  ]);
  const l = deltaList({
    root: R,
    touched: ['/r', '/r/a/f', '/r/gone', '/elsewhere/x'],
    appeared: ['/r/n'],
    dirsUnder: (d) => [d, `${d}/m`],
    links,
    inodeOf: () => undefined,
    // Linked from outside the tree: always listed.
    linkedOutside: ['/r/o'],
    facts: facts({
      '/r/a': { dir: true },
      '/r/b': { dir: true },
      '/r/a/f': { ino: 7, nlink: 2, file: true },
      '/r/n': { dir: true },
      '/r/n/m': { dir: true },
    }),
  });
  assert.deepEqual(l.entries, ['.', 'a/f', 'b/g', 'gone', 'n/.', 'n/m/.', 'o']);
  assert.deepEqual(l.paths, ['.', 'a/f', 'b/g', 'gone', 'o']);
  assert.deepEqual(l.whole, ['n']);
});

test("hard links: a name changed then replaced still brings the inode's other names; a new name brings the old one", () => {
  // Seed 99 of the randomized test: f0 and g1 one inode (7); chown through g1, then g1
  // replaced by a directory. f0 has nlink 1 now and no event of its own.
  const links = new Map<number, Linked>([
    [7, { nlink: 2, names: new Set(['/r/f0', '/r/g1']) }],
    [8, { nlink: 1, names: new Set(['/r/a']) }],
  ]);
  const inodes: Record<string, number> = { '/r/f0': 7, '/r/g1': 7, '/r/a': 8 };
  const l = deltaList({
    root: R,
    touched: ['/r/g1', '/r/b'],
    appeared: [],
    dirsUnder: (d) => [d],
    links,
    inodeOf: (p) => inodes[p],
    linkedOutside: [],
    // b: a new name of a's inode (ln a b after the walk).
    facts: facts({
      '/r/f0': { ino: 7, file: true },
      '/r/g1': { dir: true },
      '/r/b': { ino: 8, nlink: 2, file: true },
      '/r/a': { ino: 8, nlink: 2, file: true },
    }),
  });
  assert.deepEqual(l.paths, ['a', 'b', 'f0', 'g1']);
});

test('a path below what is no longer a directory is left out (its ancestor is listed, and rsync would follow a symlink)', () => {
  const l = deltaList({
    root: R,
    touched: ['/r/d', '/r/d/e/g', '/r/s/x', '/r/ok/y'],
    appeared: ['/r/s/new'],
    dirsUnder: (d) => [d],
    links: new Map(),
    inodeOf: () => undefined,
    linkedOutside: [],
    facts: facts({ '/r/d': { file: true }, '/r/s': {}, '/r/ok': { dir: true } }),
  });
  assert.deepEqual(l.entries, ['d', 'ok/y']);
});

test('a comparison itemizes differences; nothing else counts', () => {
  const out = [
    '>fcst...... a',
    '.d..t...... dir/',
    '*deleting   gone',
    'cL+++++++++ l -> x',
    'hf+++++++++ h => a',
    '',
    'sending incremental file list',
  ].join('\n');
  assert.equal(comparedDifferences(out).length, 5);
});

test('the watcher is valid perl, and has system call numbers for this machine', () => {
  execFileSync('perl', ['-c', '-e', WATCHER], { stdio: 'pipe' });
  assert.ok(inotifySyscalls(process.arch));
});

test('the watcher sees every kind of change, from any writer, and its mark drains the queue', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-log-'));
  const root = path.join(dir, 't');
  fs.mkdirSync(path.join(root, 'a/b'), { recursive: true });
  fs.writeFileSync(path.join(root, 'a/f'), 'x');
  fs.linkSync(path.join(root, 'a/f'), path.join(root, 'l'));
  fs.writeFileSync(path.join(root, 'same'), 'aaaa');
  fs.utimesSync(path.join(root, 'same'), 1577836800, 1577836800);
  const log = await ChangeLog.start({
    roots: [root],
    markDir: path.join(dir, 'mark'),
    timeoutMs: 10_000,
    log: () => undefined,
  });
  try {
    assert.equal(log.watched, 4, 'the mark directory and the three of the tree');
    assert.deepEqual(
      [...log.links.values()].filter((l) => l.nlink > 1).map((l) => [...l.names].sort()),
      [[path.join(root, 'a/f'), path.join(root, 'l')]],
    );
    assert.equal(log.inodeOf.get(path.join(root, 'same')), fs.statSync(path.join(root, 'same')).ino);
    fs.writeFileSync(path.join(root, 'same'), 'bbbb');
    fs.utimesSync(path.join(root, 'same'), 1577836800, 1577836800);
    fs.renameSync(path.join(root, 'a/b'), path.join(root, 'c'));
    fs.mkdirSync(path.join(root, 'c/new/deep'), { recursive: true });
    fs.chmodSync(path.join(root, 'a'), 0o700);
    fs.truncateSync(path.join(root, 'a/f'), 0);
    execFileSync('sh', ['-c', `cd ${root} && mkfifo p && ln -s a s && rm l`]);
    await log.drain(5_000);
    assert.equal(log.lost, undefined);
    const t = [...log.changes.touched].map((p) => path.relative(root, p) || '.').sort();
    for (const p of ['same', 'a/b', 'c', 'a', 'a/f', 'p', 's', 'l', '.'])
      assert.ok(t.includes(p), `${p} in ${t.join(' ')}`);
    // c is sent whole. What was made inside it is also named by its watch's old path (a/b/new):
    // a path that no longer exists, left out or deleted on the destination (changes.ts).
    assert.ok([...log.changes.whole].map((p) => path.relative(root, p)).includes('c'));
  } finally {
    log.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a queue overflow is known: the log says it lost events', {
  skip: process.getuid?.() !== 0 && 'needs root (a sysctl)',
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-log-'));
  const root = path.join(dir, 't');
  fs.mkdirSync(root);
  const knob = '/proc/sys/fs/inotify/max_queued_events';
  const old = fs.readFileSync(knob, 'utf8');
  // The limit is read when the watcher starts: 16 events at most, for this one.
  fs.writeFileSync(knob, '16');
  let log: ChangeLog;
  try {
    log = await ChangeLog.start({
      roots: [root],
      markDir: path.join(dir, 'mark'),
      timeoutMs: 10_000,
      log: () => undefined,
    });
  } finally {
    fs.writeFileSync(knob, old);
  }
  try {
    const pid = (log as unknown as { child: { pid: number } }).child.pid;
    process.kill(pid, 'SIGSTOP');
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(root, `f${i}`), 'x');
    process.kill(pid, 'SIGCONT');
    await log.drain(5_000);
    assert.match(log.lost ?? '', /overflowed/);
  } finally {
    log.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a shared-storage marker left by a killed run is removed; a live run's is kept", async () => {
  const { removeStaleMarkers } = await import('../../src/migration/files/rootfs.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-marker-'));
  // A pid above the kernel's limit (pid_max is at most 2^22) is never alive.
  const dead = `.runc-migrate-shared-${(1 << 22) + 7}-00ff`;
  const live = `.runc-migrate-shared-${process.pid}-00ff`;
  for (const n of [dead, live, 'keep-me']) fs.writeFileSync(path.join(dir, n), '');
  assert.deepEqual(await removeStaleMarkers(dir), [dead]);
  assert.deepEqual(fs.readdirSync(dir).sort(), [live, 'keep-me'].sort());
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a destination without ACL or xattr support is named, with the fix; other rsync failures are not', () => {
  const acl =
    'rsync: [receiver] set_acl: sys_acl_set_file(etc/f, ACL_TYPE_ACCESS): Operation not supported (95)\nrsync error: some files/attrs were not transferred (see previous errors) (code 23)';
  const xattr =
    'rsync: [generator] rsync_xal_set: lsetxattr(""/d/rootfs/bin/ping"",""security.capability"") failed: Operation not supported (95)';
  assert.equal(unsupportedMetadata(acl)?.what, 'ACLs');
  assert.equal(unsupportedMetadata(xattr)?.what, 'extended attributes');
  assert.equal(unsupportedMetadata(`${acl}\n${xattr}`)?.what, 'ACLs and extended attributes');
  assert.match(unsupportedMetadata(acl)!.hint, /setfacl -b/);
  assert.equal(
    unsupportedMetadata('rsync: connection unexpectedly closed (0 bytes received so far) [sender]'),
    undefined,
  );
});
