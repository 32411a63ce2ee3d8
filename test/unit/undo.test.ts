// The undo stack every migration releases on its exit paths (prepare/undo.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Undo } from '../../src/migration/prepare/undo.js';

test('the undo stack runs last-in first-out, once, and a failing step neither stops the others nor throws', async () => {
  const u = new Undo();
  const ran: string[] = [];
  u.add('a', async () => ran.push('a'));
  u.add('b', async () => {
    ran.push('b');
    throw new Error('boom');
  });
  u.add('c', async () => ran.push('c'));
  const warned: string[] = [];
  await u.release((m) => warned.push(m));
  assert.deepEqual(ran, ['c', 'b', 'a']);
  assert.deepEqual(warned, ['cleanup: could not b: boom']);
  await u.release(() => assert.fail('released twice'));
  assert.deepEqual(ran, ['c', 'b', 'a']);
});

test('kept work directories (in doubt, or the only images) stay; everything else is undone', async () => {
  const u = new Undo();
  const ran: string[] = [];
  u.add('remove the work directory', async () => ran.push('dir'), { workDir: true });
  u.add('remove the TLS keys', async () => ran.push('keys'));
  assert.equal(u.keepsWorkDirs, false);
  u.keepWorkDirs();
  assert.equal(u.keepsWorkDirs, true);
  await u.release(() => undefined);
  assert.deepEqual(ran, ['keys']);
});
