import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
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

/** One known_hosts file holding TEXT. */
const kh = (text: string) => [{ file: '/u/known_hosts', text }];

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
  assert.equal(verifyHostKey(kh(text), name, K1).status, 'match');
  assert.equal(verifyHostKey(kh(text), 'dst', K1).status, 'match');
  assert.equal(verifyHostKey(kh(text), name, K2).status, 'changed');
  assert.equal(verifyHostKey(kh(text), knownHostsName('10.0.0.2', 2222), K2).status, 'match');
  assert.equal(verifyHostKey(kh(text), 'elsewhere', K1).status, 'unknown');
  // Known only under another key type: refused like a change, as OpenSSH does.
  assert.equal(verifyHostKey(kh(text), name, R1).status, 'changed');
  assert.deepEqual(knownKeyTypes(kh(text), name), ['ssh-ed25519']);

  const salt = crypto.randomBytes(20);
  const hash = crypto.createHmac('sha1', salt).update('hashed.example').digest('base64');
  const hashed = `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${K1.toString('base64')}\n`;
  assert.equal(verifyHostKey(kh(hashed), 'hashed.example', K1).status, 'match');
  assert.equal(verifyHostKey(kh(hashed), 'other.example', K1).status, 'unknown');

  const revoked = `@revoked * ssh-ed25519 ${K1.toString('base64')}\n${text}`;
  assert.equal(verifyHostKey(kh(revoked), name, K1).status, 'revoked');
});

test('known_hosts helpers', () => {
  assert.equal(keyTypeOfBlob(K1), 'ssh-ed25519');
  assert.match(fingerprint(K1), /^SHA256:[A-Za-z0-9+/]+$/);
  assert.equal(knownHostsLine('[h]:2222', K1), `[h]:2222 ssh-ed25519 ${K1.toString('base64')}`);
  assert.equal(knownHostsName('h', 22), 'h');
  assert.equal(knownHostsName('h', 2222), '[h]:2222');
});

test('known_hosts: hashed names match in lower case; several files, the global ones too', () => {
  const salt = crypto.randomBytes(20);
  const hash = crypto.createHmac('sha1', salt).update('db.example').digest('base64');
  const files = [
    { file: '/u/known_hosts', text: '' },
    {
      file: '/etc/ssh/ssh_known_hosts',
      text: `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${K1.toString('base64')}\n`,
    },
  ];
  assert.equal(verifyHostKey(files, 'DB.Example', K1).status, 'match');
  const v = verifyHostKey(files, 'db.example', K2);
  assert.equal(v.status, 'changed');
  assert.equal((v as { expected: Array<{ file: string; line: number }> }).expected[0].file, '/etc/ssh/ssh_known_hosts');
  assert.equal(knownHostsLine('DB.Example', K1).split(' ')[0], 'db.example');
});

test('known_hosts: a host a CA vouches for is never "unknown" (so never accepted as new); a plain key still matches', () => {
  const ca = blob('ssh-ed25519', 'the-ca-key-32-bytes-long-xxxxxxx');
  const text = `# pinned by our CA\n@cert-authority *.example,10.0.0.* ${'ssh-ed25519'} ${ca.toString('base64')}\n`;
  assert.deepEqual(verifyHostKey(kh(text), 'web.example', K1), {
    status: 'ca-covered',
    file: '/u/known_hosts',
    line: 2,
  });
  assert.equal(verifyHostKey(kh(text), '10.0.0.7', K2).status, 'ca-covered');
  assert.equal(verifyHostKey(kh(text), 'elsewhere.org', K1).status, 'unknown');
  const withPlain = `${text}web.example ssh-ed25519 ${K1.toString('base64')}\n`;
  assert.equal(verifyHostKey(kh(withPlain), 'web.example', K1).status, 'match');
  assert.equal(verifyHostKey(kh(withPlain), 'web.example', K2).status, 'changed');
  // The CA key itself is not a host key: it never matches as one.
  assert.equal(verifyHostKey(kh(text), 'web.example', ca).status, 'ca-covered');
});

test('known_hosts: @revoked names its file and line; an RSA host key is asked for with SHA-2 signatures first', () => {
  const files = [
    { file: '/u/a', text: `h1 ssh-ed25519 ${K1.toString('base64')}\n` },
    { file: '/u/b', text: `\n@revoked * ssh-ed25519 ${K1.toString('base64')}\n` },
  ];
  assert.deepEqual(verifyHostKey(files, 'h1', K1), { status: 'revoked', file: '/u/b', line: 2 });
  const rsa = kh(`rsa-only ssh-rsa ${R1.toString('base64')}\n`);
  assert.deepEqual(knownKeyTypes(rsa, 'rsa-only'), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
  assert.equal(verifyHostKey(rsa, 'rsa-only', R1).status, 'match');
});

test('ssh_config: HostKeyAlias and the known_hosts files, first value wins, "none" empties a list', () => {
  const cfg = `
Host db1
  HostKeyAlias db-cluster
  UserKnownHostsFile ~/.ssh/kh_db "/etc/ssh/kh with space"
  GlobalKnownHostsFile none
Host *
  HostKeyAlias ignored
  UserKnownHostsFile ~/.ssh/other
`;
  const c = resolveHostConfig(cfg, 'db1');
  assert.equal(c.hostKeyAlias, 'db-cluster');
  assert.deepEqual(c.userKnownHostsFiles, [path.join(os.homedir(), '.ssh/kh_db'), '/etc/ssh/kh with space']);
  assert.deepEqual(c.globalKnownHostsFiles, []);
  const o = resolveHostConfig(cfg, 'other');
  assert.equal(o.hostKeyAlias, 'ignored');
  assert.equal(o.globalKnownHostsFiles, undefined);
});

test('ssh_config: ProxyJump hops are resolved through the config, first value wins, "none" turns it off; a loop is refused', async () => {
  const { resolveEndpoint } = await import('../../src/ssh/endpoint.js');
  const { resolveOptions } = await import('../../src/options.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-cfg-'));
  const cfg = path.join(dir, 'config');
  fs.writeFileSync(
    cfg,
    `
Host bastion
  HostName 192.0.2.10
  User jumper
  Port 2201
Host inner
  HostName 10.1.0.5
  ProxyJump bastion
Host db
  HostName 10.1.0.9
  ProxyJump ops@gw.example:2022,inner
Host direct
  ProxyJump none
Host direct gw.example
  ProxyJump bastion
Host loop1
  ProxyJump loop2
Host loop2
  ProxyJump loop1
`,
  );
  const ep = (dest: string) => resolveEndpoint(resolveOptions('c', dest, { sshConfig: cfg }));
  const db = ep('root@db');
  assert.deepEqual(
    db.jumps?.map((j) => [j.user, j.host, j.port]),
    [
      ['ops', 'gw.example', 2022],
      [os.userInfo().username, '10.1.0.5', 22],
    ],
  );
  // The first hop's own ProxyJump applies (ssh -J reaches it as its config says).
  assert.deepEqual(
    db.jumps?.[0].jumps?.map((j) => [j.user, j.host, j.port]),
    [['jumper', '192.0.2.10', 2201]],
  );
  assert.equal(ep('direct').jumps, undefined);
  assert.throws(() => ep('loop1'), /more than 8 hosts deep/);
  fs.rmSync(dir, { recursive: true });
});

test('ssh_config: Include (relative to ~/.ssh or absolute, globs, inside a Host block only for it) and Match host/originalhost/user/all', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-inc-'));
  fs.mkdirSync(path.join(dir, 'conf.d'));
  fs.writeFileSync(path.join(dir, 'conf.d', '10-db.conf'), 'Host db\n  HostName 10.9.0.1\n');
  fs.writeFileSync(path.join(dir, 'conf.d', '20-web.conf'), 'Host web\n  HostName 10.9.0.2\n  Port 2200\n');
  fs.writeFileSync(path.join(dir, 'conf.d', 'skip.txt'), 'Host db\n  HostName wrong\n');
  fs.writeFileSync(path.join(dir, 'only-db'), 'User dbadmin\n');
  const cfg = `
Include ${dir}/conf.d/*.conf
Host db
  Include ${dir}/only-db
  Port 5432
Match originalhost web user deploy
  IdentityFile ~/.ssh/deploy_key
Match host 10.9.0.* !user root
  HostKeyAlias internal-%h
Match exec "true"
  Port 1
Match all
  User fallback
`;
  const db = resolveHostConfig(cfg, 'db');
  assert.equal(db.hostName, '10.9.0.1');
  assert.equal(db.user, 'dbadmin', 'the Include inside Host db applies to db');
  assert.equal(db.port, 5432, 'the including block goes on after the Include');
  assert.equal(db.hostKeyAlias, 'internal-%h', 'Match host sees the HostName set so far');
  assert.deepEqual(db.unsupportedMatch, ['exec']);
  const web = resolveHostConfig(cfg, 'web', { user: 'deploy' });
  assert.equal(web.port, 2200);
  assert.equal(web.user, 'fallback');
  assert.deepEqual(web.identityFiles, [path.join(os.homedir(), '.ssh/deploy_key')]);
  assert.equal(resolveHostConfig(cfg, 'web', { user: 'root' }).hostKeyAlias, undefined, '!user root excludes root');
  assert.equal(resolveHostConfig(cfg, 'web').identityFiles.length, 0, 'Match user deploy: not for another user');
  assert.equal(resolveHostConfig(cfg, 'other').user, 'fallback');
  assert.equal(
    resolveHostConfig(cfg, 'other').hostName,
    undefined,
    'an Include at the top level applies only through its own Host blocks',
  );
  fs.rmSync(dir, { recursive: true });
});

test('ssh_config: IdentitiesOnly, first value wins', () => {
  const cfg = 'Host a\n  IdentitiesOnly yes\nHost *\n  IdentitiesOnly no\n';
  assert.equal(resolveHostConfig(cfg, 'a').identitiesOnly, true);
  assert.equal(resolveHostConfig(cfg, 'b').identitiesOnly, false);
});

test("the forwarder's peer: the owner of the connecting socket, from /proc/net/tcp", async () => {
  const { socketOwner } = await import('../../src/ssh/connection.js');
  const table = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:A1B2 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 20 4 30 10 -1',
    '   1: 0100007F:D431 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1',
  ].join('\n');
  assert.equal(socketOwner(0xa1b2, 0xd431, table), 1000);
  assert.equal(socketOwner(0xd431, 0xa1b2, table), 0);
  assert.equal(socketOwner(1234, 0xd431, table), undefined);
});
