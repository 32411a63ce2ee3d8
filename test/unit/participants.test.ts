// The two participants' scripts, run by a real sh with stand-ins for runc: the source's
// hold (hold.ts) and the destination's guard (guard.ts). What each does when told, and
// what it does alone when the tool is gone.
import assert from 'node:assert/strict';
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { decide, holdScript, holdTimeoutS, readHold, writeHold } from '../../src/migration/hold.js';
import { guardScript } from '../../src/migration/guard.js';
import { workPaths } from '../../src/migration/paths.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-participants-'));
/** The stand-in containers' inits (sleeps), ended with the tests. */
const inits: string[] = [];
after(() => {
  for (const f of inits) {
    try {
      process.kill(Number(fs.readFileSync(f, 'utf8')), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});
let n = 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A hold in a fresh directory (set up as the tool does), started as CRIU would at post-dump. */
async function hold(o: { pid?: number; timeoutS?: number; giveBack?: boolean } = {}) {
  const p = workPaths(path.join(tmp, `hold${++n}`));
  const marker = path.join(p.base, 'gave-back');
  await writeHold(p, o.pid ?? process.pid, o.timeoutS ?? 60, o.giveBack ? ['touch', marker] : undefined, path.join(tmp, 'links'));
  const proc = execa('sh', [p.holdScript], { env: { CRTOOLS_SCRIPT_ACTION: 'post-dump' }, reject: false });
  return { p, proc, marker };
}

async function exits(proc: ResultPromise, withinMs: number): Promise<number | undefined> {
  const r = await Promise.race([proc, sleep(withinMs).then(() => undefined)]);
  return r ? (r as { exitCode?: number }).exitCode : undefined;
}

describe("the source's hold", () => {
  test('holds only at post-dump', async () => {
    const p = workPaths(path.join(tmp, 'other'));
    fs.mkdirSync(p.holdDir, { recursive: true });
    fs.writeFileSync(p.holdScript, holdScript(p, process.pid, 60), { mode: 0o700 });
    const r = await execa('sh', [p.holdScript], { env: { CRTOOLS_SCRIPT_ACTION: 'pre-dump' }, reject: false });
    assert.equal(r.exitCode, 0);
    assert.equal(fs.existsSync(p.dumpedMarker), false);
  });

  test('rollback: exits 1 and gives the address back', async () => {
    const h = await hold({ giveBack: true });
    await sleep(100);
    assert.equal(fs.existsSync(h.p.dumpedMarker), true);
    fs.writeFileSync(path.join(h.p.holdDir, 'address-released'), '');
    assert.equal(await decide(h.p.holdDir, 'verdict', 'rollback'), 'rollback');
    assert.equal(await exits(h.proc, 2000), 1);
    assert.equal(fs.existsSync(h.marker), true);
  });

  test('prepared, then final commit: exits 0; the address stays away', async () => {
    const h = await hold({ giveBack: true });
    fs.writeFileSync(path.join(h.p.holdDir, 'address-released'), '');
    await decide(h.p.holdDir, 'verdict', 'prepared');
    assert.equal(await exits(h.proc, 300), undefined, 'prepared alone must not end the hold');
    await decide(h.p.holdDir, 'final', 'commit');
    assert.equal(await exits(h.proc, 2000), 0);
    assert.equal(fs.existsSync(h.marker), false);
  });

  test('the tool gone before the prepare: rolls back by itself', async () => {
    const dead = execa('true');
    await dead;
    const h = await hold({ pid: dead.pid });
    assert.equal(await exits(h.proc, 2000), 1);
    assert.equal((await readHold(h.p.holdDir)).verdict, 'rollback-orphaned');
  });

  test('the tool gone after the prepare: stays frozen (in doubt) until a final verdict', async () => {
    const dead = execa('true');
    await dead;
    const h = await hold({ pid: dead.pid });
    // The prepare races the hold's own check; whoever links first decides.
    const v = await decide(h.p.holdDir, 'verdict', 'prepared');
    if (v !== 'prepared') return; // the hold saw the dead pid first: covered above
    assert.equal(await exits(h.proc, 500), undefined);
    await decide(h.p.holdDir, 'final', 'rollback');
    assert.equal(await exits(h.proc, 2000), 1);
  });

  test('the limit passes before a verdict: rolls back by itself', async () => {
    const h = await hold({ timeoutS: 0.2 });
    assert.equal(await exits(h.proc, 3000), 1);
    assert.equal((await readHold(h.p.holdDir)).verdict, 'rollback-timeout');
    // The tool's prepare now loses: the verdict in force is the hold's.
    assert.equal(await decide(h.p.holdDir, 'verdict', 'prepared'), 'rollback-timeout');
  });

  test('an empty verdict file reads as rollback, it does not keep the source frozen', async () => {
    const h = await hold();
    fs.writeFileSync(path.join(h.p.holdDir, 'verdict'), '');
    assert.equal(await exits(h.proc, 2000), 1);
  });

  test('the limit follows the size, with a floor and an override', () => {
    const o = { floorS: 60, worstBytesPerS: 20 * 1024 * 1024 };
    assert.equal(holdTimeoutS(undefined, o), 60);
    assert.equal(holdTimeoutS(64 * 1024 * 1024, o), 60);
    assert.equal(holdTimeoutS(8 * 1024 * 1024 * 1024, o), Math.ceil(2 * 8 * 1024 / 20 + 30));
    assert.equal(holdTimeoutS(8 * 1024 * 1024 * 1024, { ...o, override: 5 }), 5);
  });
});

/** A guard with a stand-in runc that keeps its one container's state in a file. */
function guard(o: { restoreExit?: number; dieAfterMs?: number; nameTaken?: boolean; deadlineS?: number; moveIp?: boolean } = {}) {
  const dir = path.join(tmp, `guard${++n}`);
  fs.mkdirSync(dir, { recursive: true });
  const st = path.join(dir, 'state');
  const events = path.join(dir, 'events');
  if (o.nameTaken) fs.writeFileSync(st, String(process.pid));
  else inits.push(st);
  const fake = path.join(dir, 'runc');
  // The container's init is a sleep: alive for dieAfterMs (or an hour), then gone.
  const life = o.dieAfterMs !== undefined ? o.dieAfterMs / 1000 : 3600;
  fs.writeFileSync(
    fake,
    `#!/bin/sh
echo "$1" >> ${events}
case "$1" in
state) [ -f ${st} ] || { echo 'container does not exist' >&2; exit 1; }
	p=$(cat ${st}); s=stopped
	case "$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)" in ''|Z|X) ;; *) s=running ;; esac
	printf '{\\n  "pid": %s,\\n  "status": "%s"\\n}\\n' "$p" "$s" ;;
restore) [ ${o.restoreExit ?? 0} = 0 ] || exit ${o.restoreExit ?? 0}
	sleep ${life} >/dev/null 2>&1 & echo $! > ${st} ;;
kill) ;;
delete) [ -f ${st} ] && kill "$(cat ${st})" 2>/dev/null; rm -f ${st} ;;
esac
`,
    { mode: 0o755 },
  );
  const script = guardScript({
    dir: path.join(dir, 'g'),
    state: [fake, 'state'],
    restore: [fake, 'restore'],
    kill: [fake, 'kill'],
    delete: [fake, 'delete'],
    deadlineS: o.deadlineS ?? 30,
    verifyWindowMs: 150,
    moveIp: o.moveIp
      ? { claim: ['sh', '-c', `echo 0; echo claim >> ${events}`], unclaim: ['sh', '-c', `echo unclaim-$1 >> ${events}`, 'sh'], announce: ['sh', '-c', `echo announce-$1 >> ${events}`, 'sh'] }
      : undefined,
  });
  const proc = execa('sh', ['-c', script], { reject: false, stdin: 'pipe', buffer: true });
  const ev = () => (fs.existsSync(events) ? fs.readFileSync(events, 'utf8').trim().split('\n') : []);
  const copy = () => (fs.existsSync(st) ? 'running' : 'none');
  return { proc, ev, copy, dir: path.join(dir, 'g') };
}

describe("the destination's guard", () => {
  test('restore, verify, commit: the copy stays, announced', async () => {
    const g = guard({ moveIp: true });
    g.proc.stdin!.write('restore\n');
    await sleep(600);
    g.proc.stdin!.write('commit\n');
    const r = await g.proc;
    assert.deepEqual(r.stdout.split('\n'), ['claimed 0', 'restored', 'verified', 'committed']);
    assert.equal(g.copy(), 'running');
    assert.ok(g.ev().includes('announce-0'), g.ev().join(','));
    assert.ok(fs.existsSync(path.join(g.dir, 'committed')));
  });

  test('the channel closes after the restore (the tool died): the copy and the claim go', async () => {
    const g = guard({ moveIp: true });
    g.proc.stdin!.write('restore\n');
    await sleep(600);
    g.proc.stdin!.end();
    const r = await g.proc;
    assert.match(r.stdout, /verified\nremoved$/);
    assert.equal(g.copy(), 'none');
    assert.ok(g.ev().includes('unclaim-0'), g.ev().join(','));
  });

  test('the channel closes before the restore: the claim goes, nothing is restored', async () => {
    const g = guard({ moveIp: true });
    await sleep(200);
    g.proc.stdin!.end();
    const r = await g.proc;
    assert.match(r.stdout, /removed before-restore$/);
    assert.ok(!g.ev().includes('restore'));
    assert.ok(g.ev().includes('unclaim-0'));
  });

  test('a copy that dies right after the restore is not verified, and is removed', async () => {
    const g = guard({ dieAfterMs: 60 });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /restored\ndied stopped\nremoved$/);
    assert.equal(g.copy(), 'none');
  });

  test('a failed restore is removed and reported', async () => {
    const g = guard({ restoreExit: 7 });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /restore-failed 7\nremoved$/);
  });

  test('a container of that name that is not ours is left alone', async () => {
    const g = guard({ nameTaken: true });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /name-taken\nremoved$/);
    assert.equal(g.copy(), 'running');
    assert.ok(!g.ev().includes('delete') && !g.ev().includes('kill'), g.ev().join(','));
  });

  test('no word before the deadline: the copy goes', async () => {
    const g = guard({ deadlineS: 2 });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /verified\nremoved$/);
    assert.equal(g.copy(), 'none');
  });
});
