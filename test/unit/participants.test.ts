// The two participants' scripts, run by a real sh with stand-ins for runc: the source's
// hold (hold.ts) and the destination's guard (guard.ts). What each does when told, and
// what it does alone when the tool is gone.
import assert from 'node:assert/strict';
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { decide, holdScript, holdTimeoutS, readHold, writeHold } from '../../src/migration/switchover/hold.js';
import { guardScript } from '../../src/migration/switchover/guard.js';
import { workPaths } from '../../src/migration/prepare/paths.js';

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
  await writeHold(
    p,
    o.pid ?? process.pid,
    o.timeoutS ?? 60,
    o.giveBack ? ['touch', marker] : undefined,
    path.join(tmp, 'links'),
  );
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
    assert.equal(holdTimeoutS(8 * 1024 * 1024 * 1024, o), Math.ceil((2 * 8 * 1024) / 20 + 30));
    assert.equal(holdTimeoutS(8 * 1024 * 1024 * 1024, { ...o, override: 5 }), 5);
  });
});

/** A guard with a stand-in runc that keeps its one container's state in a file. */
function guard(
  o: {
    restoreExit?: number;
    diesAtRestore?: boolean;
    notStopped?: boolean;
    nameTaken?: boolean;
    deadlineS?: number;
    heartbeatLossS?: number;
    moveIp?: boolean;
    /** What the failing restore prints (runc's words). */
    restoreSays?: string;
  } = {},
) {
  const dir = path.join(tmp, `guard${++n}`);
  fs.mkdirSync(dir, { recursive: true });
  const st = path.join(dir, 'state');
  const events = path.join(dir, 'events');
  if (o.nameTaken) fs.writeFileSync(st, String(process.pid));
  else inits.push(st);
  const fake = path.join(dir, 'runc');
  // The container's init is a sleep in a session of its own (as runc's init is: a stopped
  // task in the restore's orphaned process group would get SIGHUP), stopped as CRIU's
  // leave-stopped leaves it (the config it was given is logged), or killed at once (a copy
  // gone before the guard looks).
  fs.writeFileSync(
    fake,
    `#!/bin/sh
echo "$1" >> ${events}
alive() { [ -f ${st} ] && kill -0 "$(cat ${st})" 2>/dev/null; }
case "$1" in
state) [ -f ${st} ] || { echo 'container does not exist' >&2; exit 1; }
	p=$(cat ${st}); s=stopped
	alive && s=running
	printf '{\n  "pid": %s,\n  "status": "%s"\n}\n' "$p" "$s" ;;
ps) alive && printf '[%s]\n' "$(cat ${st})" ;;
restore) [ ${o.restoreExit ?? 0} = 0 ] || { echo ${JSON.stringify(o.restoreSays ?? 'failed')} >&2; exit ${o.restoreExit ?? 0}; }
	echo "config: $(cat "$CRIU_CONFIG_FILE" 2>/dev/null)" >> ${events}
	rm -f ${st}
	setsid sh -c 'echo $$ > ${st}.new; exec sleep 3600' >/dev/null 2>&1 &
	while [ ! -s ${st}.new ]; do sleep 0.01; done; mv ${st}.new ${st}
	${o.notStopped ? ':' : `kill -STOP "$(cat ${st})"`}
	${o.diesAtRestore ? `kill -KILL "$(cat ${st})"; sleep 0.05` : ':'} ;;
kill) ;;
delete) [ -f ${st} ] && kill -KILL "$(cat ${st})" 2>/dev/null; rm -f ${st} ;;
esac
`,
    { mode: 0o755 },
  );
  const script = guardScript({
    dir: path.join(dir, 'g'),
    state: [fake, 'state'],
    ps: [fake, 'ps'],
    restore: [fake, 'restore'],
    reap: { criuWork: path.join(dir, 'work'), stateDir: path.join(dir, 'runc-dir'), restoreLog: 'restore.log' },
    kill: [fake, 'kill'],
    delete: [fake, 'delete'],
    // As the tool gives them: runc's directory for the name, and the pid file (the stand-in's
    // init has no state.json there, so the guard reads the tasks with ps).
    stateDir: path.join(dir, 'runc-dir'),
    pidFile: st,
    deadlineS: o.deadlineS ?? 30,
    heartbeatLossS: o.heartbeatLossS ?? 30,
    moveIp: o.moveIp
      ? {
          claim: ['sh', '-c', `echo 0; echo claim >> ${events}`],
          unclaim: ['sh', '-c', `echo unclaim-$1 >> ${events}`, 'sh'],
          // Each says whether the copy's tasks ran when it did (S: stopped).
          unmute: [
            'sh',
            '-c',
            `echo unmute-$1-$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/$(cat ${st})/status) >> ${events}`,
            'sh',
          ],
          garp: [
            'sh',
            '-c',
            `echo garp-$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/$(cat ${st})/status) >> ${events}`,
          ],
        }
      : undefined,
  });
  const proc = execa('sh', ['-c', script], { reject: false, stdin: 'pipe', buffer: true });
  const ev = () => (fs.existsSync(events) ? fs.readFileSync(events, 'utf8').trim().split('\n') : []);
  /** The copy: none, stopped (restored, invisible) or running. */
  const copy = () => {
    if (!fs.existsSync(st)) return 'none';
    const status = fs.readFileSync(`/proc/${fs.readFileSync(st, 'utf8').trim()}/status`, 'utf8');
    return /^State:\s*T/m.test(status) ? 'stopped' : 'running';
  };
  /** Resolves once the guard printed WORD. */
  const said = async (word: string) => {
    for (let i = 0; i < 200; i++) {
      if (
        fs.existsSync(path.join(dir, 'g', 'log')) &&
        fs
          .readFileSync(path.join(dir, 'g', 'log'), 'utf8')
          .split('\n')
          .some((l) => l.startsWith(word))
      )
        return;
      await sleep(25);
    }
    throw new Error(
      `the guard never said ${word}: ${fs.existsSync(path.join(dir, 'g', 'log')) ? fs.readFileSync(path.join(dir, 'g', 'log'), 'utf8') : 'no log'} ${fs.existsSync(events) ? fs.readFileSync(events, 'utf8') : ''}`,
    );
  };
  return { proc, ev, copy, said, dir: path.join(dir, 'g') };
}

describe("the destination's guard", () => {
  test('restore stopped, verify, commit: the copy runs only after the commit, announced', async () => {
    const g = guard({ moveIp: true });
    g.proc.stdin!.write('restore\n');
    await g.said('verified');
    assert.equal(g.copy(), 'stopped', 'before the commit the copy must not run');
    assert.ok(g.ev().includes('config: leave-stopped'), g.ev().join(','));
    g.proc.stdin!.write('commit\n');
    const r = await g.proc;
    assert.deepEqual(r.stdout.split('\n'), ['claimed 0', 'restored', 'verified', 'committed']);
    assert.equal(g.copy(), 'running');
    // Unmuted while the copy was still stopped (nothing it sends first is dropped), announced once it ran.
    const ev = g.ev();
    assert.ok(ev.includes('unmute-0-T'), ev.join(','));
    assert.ok(
      ev.some((e) => /^garp-[RS]$/.test(e)),
      ev.join(','),
    );
    assert.ok(ev.indexOf('unmute-0-T') < ev.findIndex((e) => e.startsWith('garp-')), ev.join(','));
    assert.ok(fs.existsSync(path.join(g.dir, 'committed')));
  });

  test('the channel closes after the restore (the tool died): the stopped copy and the claim go', async () => {
    const g = guard({ moveIp: true });
    g.proc.stdin!.write('restore\n');
    await g.said('verified');
    g.proc.stdin!.end();
    const r = await g.proc;
    assert.match(r.stdout, /verified\nremoved channel-closed$/);
    assert.equal(g.copy(), 'none');
    assert.ok(g.ev().includes('unclaim-0'), g.ev().join(','));
  });

  test('the channel closes before the restore: the claim goes, nothing is restored', async () => {
    const g = guard({ moveIp: true });
    await sleep(200);
    g.proc.stdin!.end();
    const r = await g.proc;
    assert.match(r.stdout, /removed before-restore channel-closed$/);
    assert.ok(!g.ev().includes('restore'));
    assert.ok(g.ev().includes('unclaim-0'));
  });

  test('a copy gone by the time the guard looks is not verified, and is removed', async () => {
    const g = guard({ diesAtRestore: true });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /restored\ndied (no-tasks|task-\d+-Z)\nremoved$/);
    assert.equal(g.copy(), 'none');
  });

  test('a copy that runs after the restore (leave-stopped not honoured) is not verified, and is removed', async () => {
    const g = guard({ notStopped: true });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /restored\ndied task-\d+-S\nremoved$/);
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

  test('a container of that name made after the guard looked (while the images were copied) is left alone too', async () => {
    const g = guard();
    // runc state has run (the name was free); then another container takes it.
    for (let i = 0; i < 200 && !g.ev().includes('state'); i++) await sleep(10);
    assert.ok(g.ev().includes('state'), g.ev().join(','));
    fs.mkdirSync(path.join(g.dir, '..', 'runc-dir'));
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /name-taken\nremoved$/);
    assert.ok(!g.ev().includes('restore') && !g.ev().includes('delete') && !g.ev().includes('kill'), g.ev().join(','));
  });

  test('runc refuses the name at the restore (taken after every look): the other container is left alone', async () => {
    const g = guard({
      restoreExit: 1,
      restoreSays: 'time="x" level=error msg="container with given ID already exists"',
    });
    g.proc.stdin!.write('restore\n');
    const r = await g.proc;
    assert.match(r.stdout, /name-taken\nremoved$/);
    assert.ok(!g.ev().includes('delete') && !g.ev().includes('kill'), g.ev().join(','));
  });

  test('no word before the deadline: the copy goes, heartbeats or not', async () => {
    const g = guard({ deadlineS: 3, heartbeatLossS: 2 });
    g.proc.stdin!.write('restore\n');
    await g.said('verified');
    const t = setInterval(() => g.proc.stdin!.write('hb\n'), 300);
    const r = await g.proc;
    clearInterval(t);
    assert.match(r.stdout, /verified\nremoved deadline$/);
    assert.equal(g.copy(), 'none');
  });

  test('a silent partition: no heartbeat for heartbeatLossS, the copy goes long before the deadline (no EOF needed)', async () => {
    const g = guard({ deadlineS: 60, heartbeatLossS: 1 });
    g.proc.stdin!.write('hb\nhb\nrestore\n');
    await g.said('verified');
    const t0 = Date.now();
    const r = await g.proc;
    assert.match(r.stdout, /verified\nremoved heartbeat-lost$/);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    assert.equal(g.copy(), 'none');
  });

  test('heartbeats keep the guard waiting for the commit; the commit then stands', async () => {
    const g = guard({ deadlineS: 60, heartbeatLossS: 1 });
    g.proc.stdin!.write('restore\n');
    await g.said('verified');
    for (let i = 0; i < 6; i++) {
      g.proc.stdin!.write('hb\n');
      await sleep(400);
    }
    g.proc.stdin!.write('commit\n');
    const r = await g.proc;
    assert.match(r.stdout, /verified\ncommitted$/);
    assert.equal(g.copy(), 'running');
  });
});
