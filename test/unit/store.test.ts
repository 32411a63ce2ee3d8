// The standby's checkpoint store (src/migration/replica/store.ts), its scripts run for
// real on this machine's shell in a temporary directory.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  LIST_SCRIPT,
  nextSeq,
  parseListing,
  PUBLISH_SCRIPT,
  restorable,
  PRUNE_CHAINS_SCRIPT,
  type CheckpointRecord,
} from '../../src/migration/replica/store.js';

const sh = (script: string, ...args: string[]) =>
  execFileSync('sh', ['-c', script, 'sh', ...args], { encoding: 'utf8' });
const list = (dir: string) => parseListing(sh(LIST_SCRIPT, dir));

function write(dir: string, seq: number, chain?: string): CheckpointRecord {
  const part = path.join(dir, 'checkpoints', `.${seq}.partial`);
  fs.mkdirSync(path.join(part, 'images'), { recursive: true });
  fs.writeFileSync(path.join(part, 'images', 'pages-1.img'), `pages of ${seq}`);
  return { seq, frozenAt: 1_700_000_000_000 + seq, chain, bytes: 12, freezeMs: 40 };
}

test('the store scripts pass shellcheck (POSIX sh)', () => {
  for (const s of [PUBLISH_SCRIPT, LIST_SCRIPT, PRUNE_CHAINS_SCRIPT])
    execFileSync('shellcheck', ['--shell=sh', '-'], { input: s });
});

test('publish: latest names the newest complete checkpoint; keep N; torn ones are never restored and go at the next publish', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'));
  assert.equal(restorable(list(dir)), undefined, 'an empty store has nothing to restore');
  for (const seq of [1, 2, 3]) {
    const rec = write(dir, seq, 'c1');
    assert.equal(nextSeq(list(dir)), seq + 1, 'a torn checkpoint counts: its number is not reused');
    assert.equal(
      restorable(list(dir))?.seq,
      seq === 1 ? undefined : seq - 1,
      'a partial checkpoint is never the one restored',
    );
    const out = sh(PUBLISH_SCRIPT, dir, String(seq), JSON.stringify(rec), '2');
    assert.match(out, new RegExp(`^published ${seq}$`, 'm'));
  }
  let s = list(dir);
  assert.deepEqual(
    s.complete.map((c) => c.seq),
    [2, 3],
  );
  assert.equal(restorable(s)?.seq, 3);
  assert.equal(fs.readFileSync(path.join(dir, 'latest', 'images', 'pages-1.img'), 'utf8'), 'pages of 3');
  // The tool dies while writing 4: it stays partial; latest still names 3.
  write(dir, 4);
  s = list(dir);
  assert.deepEqual(s.partial, [4]);
  assert.equal(restorable(s)?.seq, 3);
  // The next run writes 5 and publishes it: 4 goes.
  const rec5 = write(dir, nextSeq(s));
  const out = sh(PUBLISH_SCRIPT, dir, '5', JSON.stringify(rec5), '2');
  assert.match(out, /removed checkpoints\/\.4\.partial/);
  s = list(dir);
  assert.deepEqual(s.partial, []);
  assert.deepEqual(
    s.complete.map((c) => c.seq),
    [3, 5],
  );
  assert.equal(restorable(s)?.seq, 5);
});

test('chains: those a checkpoint is parented on stay (its record whole or not), and the one being built; the rest go', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'));
  for (const c of ['a', 'b', 'c', 'd']) fs.mkdirSync(path.join(dir, 'chains', c, '1'), { recursive: true });
  const parented = (cp: string, chain: string) => {
    fs.mkdirSync(path.join(dir, 'checkpoints', cp, 'images'), { recursive: true });
    fs.symlinkSync(`../../../chains/${chain}/2`, path.join(dir, 'checkpoints', cp, 'images', 'parent'));
  };
  parented('1', 'a');
  parented('2', 'b'); // its complete record unreadable: its chain stays all the same
  fs.writeFileSync(path.join(dir, 'checkpoints', '2', 'complete'), '{"seq":2,"froz');
  const out = sh(PRUNE_CHAINS_SCRIPT, dir, 'c');
  assert.equal(out, 'removed chains/d\n');
  assert.deepEqual(fs.readdirSync(path.join(dir, 'chains')).sort(), ['a', 'b', 'c']);
});

test('a complete record cut short makes no complete checkpoint', () => {
  const listing = parseListing(
    [
      'complete {"seq":1,"frozenAt":1,"chain":"a","bytes":1,"freezeMs":1}',
      'complete {"seq":2,"froz',
      'chain a',
      'chain b',
      'chain c',
      'latest checkpoints/2',
    ].join('\n'),
  );
  assert.deepEqual(
    listing.complete.map((c) => c.seq),
    [1],
  );
  assert.equal(restorable(listing), undefined, 'latest names a checkpoint whose record is not whole');
});

test('publish refuses once the lease says failed over: the restored container runs from a checkpoint there', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'));
  sh(PUBLISH_SCRIPT, dir, '1', JSON.stringify(write(dir, 1)), '1');
  fs.writeFileSync(
    path.join(dir, 'lease'),
    `${JSON.stringify({ holder: 'h', expiresAt: 1, fence: 'freeze', failedOver: { at: 2, by: 'x' } })}\n`,
  );
  const rec = write(dir, 2);
  assert.throws(
    () => execFileSync('sh', ['-c', PUBLISH_SCRIPT, 'sh', dir, '2', JSON.stringify(rec), '1'], { stdio: 'pipe' }),
    /failed over/,
  );
  const s = list(dir);
  assert.equal(restorable(s)?.seq, 1, 'the one restored stays, unpruned');
  assert.deepEqual(s.partial, [2]);
});
