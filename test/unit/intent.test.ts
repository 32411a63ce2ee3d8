// The intent record: versioned and checked when read; a record this version cannot act on
// is refused with what is wrong, never guessed at. One run of a container at a time.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  BadIntent,
  INTENT_VERSION,
  intentPath,
  invalidIntent,
  lockContainer,
  readIntent,
  RunningAlready,
  writeIntent,
  type Intent,
} from '../../src/migration/recover/intent.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-intent-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const good: Intent = {
  version: INTENT_VERSION,
  container: 'web1',
  srcRunc: { runc: 'runc', root: '/run/containerd/runc/k8s.io' },
  dstRunc: { runc: 'runc', root: '/run/runc' },
  destination: 'root@host',
  pid: 4242,
  startedAt: '2026-12-06T00:00:00Z',
  phase: 'prepared',
  updatedAt: '',
  localBase: '/dev/shm/runc-migrate.a',
  holdDir: '/dev/shm/runc-migrate.a/hold',
  remoteBase: '/dev/shm/runc-migrate.b',
  guardDir: '/dev/shm/runc-migrate.b/guard',
};

test('a record is found by the container name alone, whatever the runc root', () => {
  assert.equal(intentPath('/run/runc-migrate', 'web1'), '/run/runc-migrate/web1.json');
});

test('a record is written whole and read back; one of another version or with a field missing is refused, saying which', async () => {
  const f = path.join(tmp, 'web1.json');
  await writeIntent(f, good);
  assert.equal((await readIntent(f))?.srcRunc.root, '/run/containerd/runc/k8s.io');
  assert.equal(invalidIntent({ ...good, version: 1 }), `format version 1, this tool reads ${INTENT_VERSION}`);
  assert.equal(invalidIntent({ ...good, dstRunc: undefined }), 'dstRunc is missing');
  assert.equal(invalidIntent({ ...good, phase: 'somewhere' }), 'unknown phase "somewhere"');
  fs.writeFileSync(f, '{"container": "web1", "runcRoot": "/run/runc"');
  await assert.rejects(readIntent(f), (e: Error) => e instanceof BadIntent && /not JSON/.test(e.message));
  fs.writeFileSync(f, JSON.stringify({ ...good, version: undefined }));
  await assert.rejects(readIntent(f), (e: Error) => e instanceof BadIntent && /format version/.test(e.message));
  assert.equal(await readIntent(path.join(tmp, 'none.json')), undefined);
});

test("one run per container: a live run's lock is refused, a dead run's taken over, the release removes only one's own", async () => {
  const dir = path.join(tmp, 'locks');
  const release = await lockContainer(dir, 'web1');
  // Another live run (a node process) holds web2.
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
  try {
    fs.writeFileSync(path.join(dir, 'web2.lock'), `${other.pid}\n`);
    await assert.rejects(lockContainer(dir, 'web2'), (e: Error) => e instanceof RunningAlready && e.pid === other.pid);
  } finally {
    other.kill('SIGKILL');
  }
  fs.writeFileSync(path.join(dir, 'web3.lock'), '2147483647\n');
  const r3 = await lockContainer(dir, 'web3');
  assert.equal(fs.readFileSync(path.join(dir, 'web3.lock'), 'utf8').trim(), String(process.pid));
  await r3();
  await release();
  assert.ok(!fs.existsSync(path.join(dir, 'web1.lock')) && !fs.existsSync(path.join(dir, 'web3.lock')));
});

test("a lock's note (a replicate's standby and replica) reaches the run it refuses; the holder's release still finds its own pid", async () => {
  const dir = path.join(tmp, 'notes');
  const note = { replicate: { destination: 'root@standby', dir: '/var/lib/runc-migrate/replicas/web4' } };
  const release = await lockContainer(dir, 'web4', note);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'web4.lock'), 'utf8').split('\n'), [
    String(process.pid),
    JSON.stringify(note),
    '',
  ]);
  // Another live run holds web5 with a note: the refusal carries it.
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
  try {
    fs.writeFileSync(path.join(dir, 'web5.lock'), `${other.pid}\n${JSON.stringify(note)}\n`);
    await assert.rejects(
      lockContainer(dir, 'web5'),
      (e: Error) =>
        e instanceof RunningAlready && e.pid === other.pid && e.note?.replicate?.destination === 'root@standby',
    );
    // A note cut short is no note: still refused, by the pid.
    fs.writeFileSync(path.join(dir, 'web5.lock'), `${other.pid}\n{"replic`);
    await assert.rejects(lockContainer(dir, 'web5'), (e: Error) => e instanceof RunningAlready && e.note === undefined);
  } finally {
    other.kill('SIGKILL');
  }
  await release();
  assert.ok(!fs.existsSync(path.join(dir, 'web4.lock')));
});
