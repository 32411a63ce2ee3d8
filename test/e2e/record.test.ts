// What recover and a second run may rely on: the record, not the flags. A destination
// that reboots after its commit never gets the source resumed behind its back; recover
// finds a migration under a non-default runc root from the name alone, refuses to run
// without root, and one container is migrated by one run at a time while two containers
// may move to the same host at once.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  baseArgs,
  hostState,
  INTENT_DIR,
  migrate,
  readCounter,
  removeEverywhere,
  ROOT,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  whereRunning,
  type Hosts,
} from './hosts.js';

let h: Hosts;
before(async () => {
  h = await setupHosts();
});

/** `migrate recover NAME HOST` with the SSH options only, as the tool prints it. */
const recoverAsPrinted = (name: string, ...extra: string[]) =>
  migrate(['recover', name, `root@${h.dstAddr}`, '-i', h.key, '--known-hosts', h.knownHosts, '--json', ...extra]);

async function counter(name: string) {
  const b = await startExample(h, 'counter', name);
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
  return b;
}

describe('the record decides, not the flags', () => {
  test('the destination reboots after its commit, before the source heard of it: recover never resumes the source; the operator can', async () => {
    const name = 'reboot';
    const b = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
      RUNC_MIGRATE_KILL_AT: 'destination-committed:SIGKILL',
    });
    assert.equal(r.code, -1, r.stderr);
    assert.deepEqual(await whereRunning(name, b), ['destination'], 'the destination committed and runs');
    const last = await readCounter(b.dst);
    // The reboot: the copy dies with the host, its tmpfs (the guard's files, the images) is wiped.
    const rec = JSON.parse(fs.readFileSync(path.join(INTENT_DIR, `${name}.json`), 'utf8'));
    await sh(['runc', '--root', h.dstRoot, 'delete', '--force', name]);
    fs.rmSync(rec.remoteBase, { recursive: true, force: true });
    const first = await recoverAsPrinted(name);
    assert.equal(first.code, 5, first.stderr + first.stdout);
    assert.match(JSON.parse(first.stdout).error.message, /frozen source is kept/);
    assert.match(first.stderr + first.stdout, /--resume-source/);
    assert.deepEqual(await whereRunning(name, b), [], 'the frozen source must stay frozen');
    // Twice: the same answer, nothing changed.
    assert.equal((await recoverAsPrinted(name)).code, 5);
    assert.deepEqual(await whereRunning(name, b), []);
    // The operator has looked: the copy is lost; the source resumes from its frozen state.
    const resumed = await recoverAsPrinted(name, '--resume-source');
    assert.equal(resumed.code, 0, resumed.stderr + resumed.stdout);
    assert.equal(JSON.parse(resumed.stdout).runningOn, 'source');
    assert.deepEqual(await whereRunning(name, b), ['source']);
    assert.ok((await readCounter(b.src)) > 0 && Number.isFinite(last));
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  });

  test('recover finds a migration under a non-default runc root by its name, as printed; the flags it is not given do not matter', async () => {
    const name = 'printed';
    const b = await counter(name);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], {
      RUNC_MIGRATE_KILL_AT: 'prepared:SIGKILL',
    });
    assert.equal(r.code, -1, r.stderr);
    assert.deepEqual(await whereRunning(name, b), [], 'prepared: the source waits, frozen');
    const rec = await recoverAsPrinted(name);
    assert.equal(rec.code, 0, rec.stderr + rec.stdout);
    assert.equal(JSON.parse(rec.stdout).outcome, 'recovered');
    assert.deepEqual(await whereRunning(name, b), ['source']);
    assert.equal(await status(h.dstRoot, name), 'absent');
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  });

  test('recover as a user other than root says so (exit 2); it never answers "nothing to recover"', async () => {
    const r = await execa(
      'runuser',
      ['-u', h.sudoUser, '--', 'node', path.join(ROOT, 'bin/migrate'), 'recover', 'any', `root@${h.dstAddr}`, '--json'],
      { reject: false, stdin: 'ignore', env: { HOME: '/nonexistent-home' } },
    );
    assert.equal(r.exitCode, 2, r.stderr + r.stdout);
    assert.match(JSON.parse(r.stdout).error.message, /must run as root/);
  });
});

describe('one run per container', () => {
  test('a second migration of the same container is refused (exit 3) while the first runs; the first is unaffected', async () => {
    const name = 'twice';
    const b = await counter(name);
    const gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rm-gate-')), 'go');
    const first = migrate([...baseArgs(h, name, b.dst), '--transport', 'tls', '--json'], {
      RUNC_MIGRATE_PAUSE_AT: `page-server:${gate}`,
    });
    await waitFor('the first run to reach its page server', () => fs.existsSync(`${gate}.reached`), 60_000);
    const second = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream', '--json']);
    assert.equal(second.code, 3, second.stderr + second.stdout);
    assert.match(JSON.parse(second.stdout).error.message, /already running/);
    fs.writeFileSync(gate, '');
    const r = await first;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(await whereRunning(name, b), ['destination']);
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  });

  test('two containers migrate to the same host at once', async () => {
    const [b1, b2] = [await counter('pair1'), await counter('pair2')];
    const [r1, r2] = await Promise.all([
      migrate([...baseArgs(h, 'pair1', b1.dst), '--transport', 'stream', '--json']),
      migrate([...baseArgs(h, 'pair2', b2.dst), '--transport', 'stream', '--json']),
    ]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(await whereRunning('pair1', b1), ['destination']);
    assert.deepEqual(await whereRunning('pair2', b2), ['destination']);
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, 'pair1');
    await removeEverywhere(h, 'pair2');
  });
});
