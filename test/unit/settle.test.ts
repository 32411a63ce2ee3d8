// How the destination participant reads its guard's files after it lost the guard's
// answer (switchover/destination.ts settle), against real files in a temporary
// directory read by this machine's shell: a commit marker is a commit even while the
// guard still continues the copy's tasks.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { NO_FAULTS } from '../../src/migration/faults.js';
import { workPaths } from '../../src/migration/prepare/paths.js';
import type { Session } from '../../src/migration/session.js';
import { Destination } from '../../src/migration/switchover/destination.js';
import { GUARD_FILE } from '../../src/migration/switchover/protocol.js';
import { guardDirOf } from '../../src/migration/switchover/shared.js';

function destination(files: Partial<Record<keyof typeof GUARD_FILE, string>>): Destination {
  const local = workPaths(fs.mkdtempSync(path.join(os.tmpdir(), 'settle-src-')));
  const remote = workPaths(fs.mkdtempSync(path.join(os.tmpdir(), 'settle-dst-')));
  const dir = guardDirOf(remote.base);
  fs.mkdirSync(dir);
  for (const [k, v] of Object.entries(files))
    fs.writeFileSync(path.join(dir, GUARD_FILE[k as keyof typeof GUARD_FILE]), v);
  // The destination is this machine's shell; the connection is up (nothing to reconnect).
  const s = {
    dst: new LocalHost(() => undefined),
    ssh: { alive: true },
    faults: NO_FAULTS,
    progress: { warn: () => undefined },
  } as unknown as Session;
  return new Destination({
    s,
    work: { local, remote },
    images: { local: local.images, remote: remote.images },
    deadlineS: 1,
    bundle: '/b',
  });
}

test('committed while the guard still runs (continuing the tasks, announcing): settled as committed, at once', async () => {
  const t0 = Date.now();
  assert.equal(await destination({ committed: '', pid: String(process.pid), log: '' }).settle(), 'committed');
  assert.ok(Date.now() - t0 < 2000);
});

test('removed, the guard gone: settled as removed; no trace at all of a guard: unknown (it may have committed)', async () => {
  assert.equal(await destination({ removed: '', pid: '999999', log: '' }).settle(), 'removed');
  assert.equal(await destination({}).settle(), undefined);
});
