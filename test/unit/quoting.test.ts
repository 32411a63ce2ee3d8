// Every value that enters a shell is quoted by the one helper (shell.ts): the scripts and
// command lines built from user-given paths are run here with a hostile work directory
// (space, quotes, $(...), a newline), and must act on that directory and run nothing else.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { guardFilesCommand } from '../../src/migration/switchover/guard.js';
import { criuSafePath, holdScript, writeHold } from '../../src/migration/switchover/hold.js';
import { workPaths } from '../../src/migration/prepare/paths.js';
import { OWNER_FILE, ownerLine, removeStale } from '../../src/migration/prepare/stale.js';
import { commandLine, quote } from '../../src/shell.js';

const HOSTILE = `a b'c"d$(touch pwned)e\`touch pwned2\`\nf`;

function sandbox(): { cwd: string; dir: string } {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-quote-'));
  const dir = path.join(cwd, HOSTILE);
  fs.mkdirSync(dir, { recursive: true });
  return { cwd, dir };
}

const nothingRan = (cwd: string) =>
  assert.deepEqual(
    fs.readdirSync(cwd).filter((f) => f.startsWith('pwned')),
    [],
    'a command substitution ran',
  );

test('quote() round-trips any string through sh', () => {
  for (const s of [HOSTILE, '', "'", '$HOME', 'a\\b', '-n', '*', '~']) {
    const out = execFileSync('sh', ['-c', `printf %s ${quote(s)}`]).toString();
    assert.equal(out, s);
  }
  assert.equal(execFileSync('sh', ['-c', `${commandLine(['printf', '%s|', 'x y', "it's"])}`]).toString(), "x y|it's|");
});

test('the hold script, in a hostile work directory, marks its dump and takes the verdict there', async () => {
  const { cwd, dir } = sandbox();
  const p = workPaths(dir);
  const { link } = await writeHold(p, process.pid, 5, undefined, path.join(cwd, 'links'));
  // CRIU's config names a link with a plain path (its parser cannot take this one).
  assert.ok(link && criuSafePath(link), `no plain link: ${link}`);
  assert.equal(fs.readFileSync(p.criuConfig, 'utf8'), `action-script ${link}\n`);
  assert.equal(fs.realpathSync(link), fs.realpathSync(p.holdScript));
  fs.linkSync(path.join(p.holdDir, '.v-rollback'), path.join(p.holdDir, 'verdict'));
  const r = spawnSync('sh', [p.holdScript], { cwd, env: { ...process.env, CRTOOLS_SCRIPT_ACTION: 'post-dump' } });
  assert.equal(r.status, 1, r.stderr.toString());
  assert.ok(fs.existsSync(p.dumpedMarker), 'the dumped marker is in the hostile directory');
  assert.equal(
    spawnSync('sh', ['-n', '-c', holdScript(p, 1, 5, ['ip', 'addr', 'add', HOSTILE, 'dev', 'eth0'])]).status,
    0,
  );
  nothingRan(cwd);
});

test("the guard's files are read from a hostile directory", () => {
  const { cwd, dir } = sandbox();
  fs.writeFileSync(path.join(dir, 'committed'), '');
  const [sh, c, script] = guardFilesCommand(dir);
  const out = execFileSync(sh, [c, script], { cwd }).toString();
  assert.match(out, /committed/);
  nothingRan(cwd);
});

test('stale work directories under a hostile parent are found and removed', async () => {
  const { cwd, dir } = sandbox();
  const stale = path.join(dir, 'runc-migrate.dead');
  fs.mkdirSync(stale);
  // A pid that cannot be running (above pid_max).
  fs.writeFileSync(path.join(stale, OWNER_FILE), ownerLine().replace(` ${process.pid} `, ' 2147483647 '));
  const removed = await removeStale(new LocalHost(() => undefined), dir, path.join(cwd, 'intents'), []);
  assert.deepEqual(removed, [stale]);
  assert.equal(fs.existsSync(stale), false);
  nothingRan(cwd);
});

test('a keeper, undoing in a hostile directory, removes that directory when its pipe closes, and runs nothing else', async () => {
  const { cwd, dir } = sandbox();
  const victim = path.join(dir, 'tls');
  fs.mkdirSync(victim);
  fs.writeFileSync(path.join(victim, 'client.key'), 'k');
  const { localKeeper } = await import('../../src/migration/prepare/keeper.js');
  const end = await localKeeper('tls-keeper', ['rm', '-rf', victim]);
  assert.ok(fs.existsSync(victim), 'removed before its pipe closed');
  await end();
  assert.equal(fs.existsSync(victim), false);
  assert.ok(fs.existsSync(dir), 'the directory around it went too');
  nothingRan(cwd);
  fs.rmSync(cwd, { recursive: true, force: true });
});
