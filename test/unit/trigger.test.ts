// replicate's trigger socket (src/migration/replica/trigger.ts): the perl listener bound
// for real in a temporary directory, datagrams sent to it as a container would.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { TriggerSocket, triggerWord } from '../../src/migration/replica/trigger.js';

const send = (sock: string, text: string) =>
  execFileSync('perl', [
    '-MSocket',
    '-e',
    'socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die; send($s, $ARGV[1], 0, pack_sockaddr_un($ARGV[0])) or die "send: $!"',
    sock,
    text,
  ]);

test('the words: CHECKPOINT and MIGRATE, blanks and case aside; anything else is nothing', () => {
  assert.equal(triggerWord('CHECKPOINT'), 'CHECKPOINT');
  assert.equal(triggerWord(' migrate\n'), 'MIGRATE');
  assert.equal(triggerWord('CHECKPOINT NOW'), undefined);
  assert.equal(triggerWord(''), undefined);
});

test('each datagram arrives as a line (printable characters only, 64 at most); the socket is owner-only and removed on close', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'trigger-'));
  const sock = path.join(dir, 'trigger.sock');
  const got: string[] = [];
  const t = await TriggerSocket.listen(sock, (l) => got.push(l));
  assert.equal(fs.statSync(sock).mode & 0o077, 0, 'no access for others');
  send(sock, 'CHECKPOINT');
  send(sock, 'MIGRATE\n');
  send(sock, `x\u0001${'y'.repeat(100)}`);
  const end = Date.now() + 5000;
  while (got.length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(got, ['CHECKPOINT', 'MIGRATE', `x${'y'.repeat(63)}`]);
  await t.close();
  assert.equal(fs.existsSync(sock), false);
});
