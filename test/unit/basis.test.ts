// A planned migration's replica (src/migration/replica/basis.ts): which replica on the
// destination a migration may start from, found by the store's own scripts run for real
// on this machine's shell.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalHost } from '../../src/host.js';
import { findBasis, holderOf } from '../../src/migration/replica/basis.js';
import type { CheckpointRecord } from '../../src/migration/replica/store.js';

const host = new LocalHost(() => undefined);
const holder = holderOf({ runcRoot: '/run/runc', container: 'web1' });

function store(rec: Partial<CheckpointRecord> & { seq: number }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basis-'));
  const cp = path.join(dir, 'checkpoints', String(rec.seq));
  fs.mkdirSync(path.join(cp, 'bundle', 'rootfs'), { recursive: true });
  fs.writeFileSync(
    path.join(cp, 'complete'),
    `${JSON.stringify({ frozenAt: 1_700_000_000_000, bytes: 1, freezeMs: 1, source: holder, ...rec })}\n`,
  );
  fs.symlinkSync(`checkpoints/${rec.seq}`, path.join(dir, 'latest'));
  return dir;
}

test("the latest complete checkpoint of this source's replica is the basis: its tree, its freeze", async () => {
  const dir = store({ seq: 3 });
  assert.deepEqual(await findBasis(host, dir, holder), {
    dir,
    seq: 3,
    frozenAt: 1_700_000_000_000,
    rootfs: path.join(dir, 'checkpoints', '3', 'bundle', 'rootfs'),
  });
});

test('no basis: no replica, another source, a torn latest, or one failed over to (its tree was a running container)', async () => {
  assert.equal(await findBasis(host, path.join(os.tmpdir(), 'basis-none-here'), holder), undefined);
  assert.equal(await findBasis(host, store({ seq: 1, source: 'other-host:/run/runc:web1' }), holder), undefined);
  const torn = store({ seq: 2 });
  fs.writeFileSync(path.join(torn, 'checkpoints', '2', 'complete'), '{"seq":2,"froz');
  assert.equal(await findBasis(host, torn, holder), undefined);
  const failedOver = store({ seq: 4 });
  fs.writeFileSync(path.join(failedOver, 'lease'), '{"holder":"x","failedOver":{"at":1,"by":"failover"}}\n');
  assert.equal(await findBasis(host, failedOver, holder), undefined);
});
