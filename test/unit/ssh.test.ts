import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { resolveHostConfig, hostMatches } from '../../src/ssh/config.js';
import { fingerprint, keyTypeOfBlob, knownHostsLine, knownKeyTypes, verifyHostKey } from '../../src/ssh/knownhosts.js';
import { knownHostsName } from '../../src/ssh/target.js';

function blob(type: string, body: string): Buffer {
  const t = Buffer.from(type);
  const b = Buffer.from(body);
  const out = Buffer.alloc(8 + t.length + b.length);
  out.writeUInt32BE(t.length, 0);
  t.copy(out, 4);
  out.writeUInt32BE(b.length, 4 + t.length);
  b.copy(out, 8 + t.length);
  return out;
}

const K1 = blob('ssh-ed25519', 'key-one-32-bytes-long-xxxxxxxxxx');
const K2 = blob('ssh-ed25519', 'key-two-32-bytes-long-xxxxxxxxxx');
const R1 = blob('ssh-rsa', 'rsa-key');

test('ssh_config: first value wins, IdentityFile accumulates, patterns and negation', () => {
  const cfg = `
User everyone
Host db* !db-old
  HostName %h.internal
  Port 2222
  IdentityFile ~/.ssh/db_key
Host *
  User fallback
  Port 22
  IdentityFile ~/.ssh/id_all
Match host foo
  User ignored
`;
  const c = resolveHostConfig(cfg, 'db1');
  assert.equal(c.hostName, 'db1.internal');
  assert.equal(c.user, 'everyone');
  assert.equal(c.port, 2222);
  assert.deepEqual(c.identityFiles, [path.join(os.homedir(), '.ssh/db_key'), path.join(os.homedir(), '.ssh/id_all')]);
  const old = resolveHostConfig(cfg, 'db-old');
  assert.equal(old.hostName, undefined);
  assert.equal(old.port, 22);
  assert.ok(hostMatches(['web?', 'x'], 'web1'));
  assert.ok(!hostMatches(['web?'], 'web12'));
});

test('known_hosts: match, changed, unknown, other port, hashed, revoked', () => {
  const name = knownHostsName('10.0.0.2', 22);
  const text = `# comment\n10.0.0.2,dst ${'ssh-ed25519'} ${K1.toString('base64')}\n[10.0.0.2]:2222 ssh-ed25519 ${K2.toString('base64')}\n`;
  assert.equal(verifyHostKey(text, name, K1).status, 'match');
  assert.equal(verifyHostKey(text, 'dst', K1).status, 'match');
  assert.equal(verifyHostKey(text, name, K2).status, 'changed');
  assert.equal(verifyHostKey(text, knownHostsName('10.0.0.2', 2222), K2).status, 'match');
  assert.equal(verifyHostKey(text, 'elsewhere', K1).status, 'unknown');
  // Known only under another key type: refused like a change, as OpenSSH does.
  assert.equal(verifyHostKey(text, name, R1).status, 'changed');
  assert.deepEqual(knownKeyTypes(text, name), ['ssh-ed25519']);

  const salt = crypto.randomBytes(20);
  const hash = crypto.createHmac('sha1', salt).update('hashed.example').digest('base64');
  const hashed = `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${K1.toString('base64')}\n`;
  assert.equal(verifyHostKey(hashed, 'hashed.example', K1).status, 'match');
  assert.equal(verifyHostKey(hashed, 'other.example', K1).status, 'unknown');

  const revoked = `@revoked * ssh-ed25519 ${K1.toString('base64')}\n${text}`;
  assert.equal(verifyHostKey(revoked, name, K1).status, 'revoked');
});

test('known_hosts helpers', () => {
  assert.equal(keyTypeOfBlob(K1), 'ssh-ed25519');
  assert.match(fingerprint(K1), /^SHA256:[A-Za-z0-9+/]+$/);
  assert.equal(knownHostsLine('[h]:2222', K1), `[h]:2222 ssh-ed25519 ${K1.toString('base64')}`);
  assert.equal(knownHostsName('h', 22), 'h');
  assert.equal(knownHostsName('h', 2222), '[h]:2222');
});
