// SSH as OpenSSH users know it, against the destination's real sshd: an RSA-only host,
// a host a certificate authority vouches for, HostKeyAlias and UserKnownHostsFile from
// ssh_config. Dry runs: they connect, check both hosts and freeze nothing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  leftovers,
  migrate,
  readCounter,
  readEnv,
  removeEverywhere,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let b: { src: string; dst: string };
const NAME = 'sshc';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-ssh-'));

before(async () => {
  h = await setupHosts();
  b = await startExample(h, 'counter', NAME);
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
});

after(async () => {
  await removeEverywhere(h, NAME);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The ed25519 host key line of the destination's main sshd ("type base64"). */
const hostKey = () =>
  fs.readFileSync(`${h.dir}/dst/etc/ssh_host_ed25519_key.pub`, 'utf8').split(' ').slice(0, 2).join(' ');

/** baseArgs without --known-hosts (ssh_config decides), for another destination spelling. */
function argsFor(dest: string, extra: string[] = []): string[] {
  const a = baseArgs(h, NAME, b.dst);
  a[1] = dest;
  const i = a.indexOf('--known-hosts');
  a.splice(i, 2);
  return [...a, ...extra];
}

async function refusedUntouched(args: string[], message: RegExp, hint: RegExp): Promise<void> {
  const r = await migrate(args);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, message);
  assert.match(r.stderr, hint);
  assert.equal(await status(h.srcRoot, NAME), 'running');
  assert.deepEqual(await leftovers(), []);
}

describe('SSH like OpenSSH', () => {
  test("ProxyJump through a bastion, with an alias: the source cannot reach the destination's sshd, the migration goes through", async () => {
    const e = readEnv();
    const cfg = path.join(tmp, 'ssh_config_jump');
    fs.writeFileSync(
      cfg,
      `Host dst-behind\n  HostName ${h.dstAddr}\n  User root\n  ProxyJump bastion\nHost bastion\n  HostName ${e.RM_JUMP_ADDR}\n  User root\n`,
    );
    // The source's own way to the destination's sshd is shut for this test.
    const rule = ['-s', e.RM_SRC_ADDR, '-p', 'tcp', '--dport', '22', '-j', 'REJECT'];
    await sh(['ip', 'netns', 'exec', 'rm-dst', 'iptables', '-w', '-I', 'INPUT', ...rule]);
    try {
      const direct = await migrate([
        ...argsFor(`root@${h.dstAddr}`, ['--known-hosts', h.knownHosts]),
        '--dry-run',
        '--connect-timeout',
        '3',
      ]);
      assert.equal(direct.code, 3, 'the destination should be unreachable from the source without the jump');
      const refusedDirect = await migrate([
        ...argsFor('dst-behind', ['--known-hosts', h.knownHosts, '--ssh-config', cfg]),
        '--transport',
        'direct',
      ]);
      assert.equal(refusedDirect.code, 3, refusedDirect.stderr);
      assert.match(refusedDirect.stderr, /--transport direct needs the destination's address .* jump host \(bastion\)/);
      assert.equal(await status(h.srcRoot, NAME), 'running');
      const before = fs.readFileSync(`${h.dir}/dst/sshd.log`, 'utf8').length;
      const at = await readCounter(b.src);
      const r = await migrate([
        ...argsFor('dst-behind', ['--known-hosts', h.knownHosts, '--ssh-config', cfg]),
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const log = fs.readFileSync(`${h.dir}/dst/sshd.log`, 'utf8').slice(before);
      assert.match(
        log,
        new RegExp(`Accepted publickey for root from ${e.RM_JUMP_ADDR.replace(/\./g, '\\.')}`),
        'the destination saw the bastion, not the source',
      );
      await waitFor('the counter to go on on the destination', async () => (await readCounter(b.dst)) > at);
      assert.equal(await status(h.srcRoot, NAME), 'absent');
      assert.deepEqual(await leftovers(), []);
    } finally {
      await sh(['ip', 'netns', 'exec', 'rm-dst', 'iptables', '-w', '-D', 'INPUT', ...rule]);
      // Back to the source for the next tests.
      await removeEverywhere(h, NAME);
      b = await startExample(h, 'counter', NAME);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    }
  });

  test("the page server's forwarded port serves the migration's own user only: another local user is cut off, the dump still gets through", async () => {
    const gate = path.join(tmp, 'gate-ps');
    fs.rmSync(gate, { force: true });
    fs.rmSync(`${gate}.reached`, { force: true });
    const at = await readCounter(b.src);
    const run = migrate([...baseArgs(h, NAME, b.dst), '--transport', 'tunnel', '--json'], {
      RUNC_MIGRATE_PAUSE_AT: `page-server:${gate}`,
    });
    await waitFor('the page server to listen', () => fs.existsSync(`${gate}.reached`), 60_000);
    const [host, port] = fs.readFileSync(`${gate}.reached`, 'utf8').split(':');
    assert.equal(host, '127.0.0.1');
    // Another user on the source connects first, and would hold the page server's one connection.
    const other = await sh(
      [
        'nsenter',
        '--net=/run/netns/rm-src',
        'runuser',
        '-u',
        readEnv().RM_SUDO_USER,
        '--',
        'timeout',
        '3',
        'bash',
        '-c',
        `exec 3<>/dev/tcp/127.0.0.1/${port} && cat <&3 >/dev/null; echo closed`,
      ],
      { reject: false },
    );
    assert.notEqual(other.exitCode, 124, "the other user's connection was kept open (forwarded)");
    fs.writeFileSync(gate, '');
    const r = await run;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    await waitFor('the counter to go on on the destination', async () => (await readCounter(b.dst)) > at);
    await removeEverywhere(h, NAME);
    b = await startExample(h, 'counter', NAME);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
  });

  test('a destination with an RSA host key only is reached (rsa-sha2 signatures; OpenSSH refuses ssh-rsa)', async () => {
    const port = readEnv().RM_SSH_RSA_PORT;
    const r = await migrate([...argsFor(`root@${h.dstAddr}:${port}`, ['--known-hosts', h.knownHosts]), '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`connect to root@${h.dstAddr.replace(/\./g, '\\.')}:${port}`));
  });

  test('a host a certificate authority vouches for is refused, even with --accept-new-host-key; nothing is written', async () => {
    const ca = path.join(tmp, 'ca');
    if (!fs.existsSync(ca)) await sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'test-ca', '-f', ca]);
    const kh = path.join(tmp, 'kh_ca');
    const text = `@cert-authority ${h.dstAddr} ${fs.readFileSync(`${ca}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`;
    fs.writeFileSync(kh, text);
    const a = argsFor(`root@${h.dstAddr}`, ['--known-hosts', kh]);
    await refusedUntouched(
      a,
      /vouched for by a certificate authority \(.*kh_ca line 1\), but this tool cannot verify host certificates/,
      /never accepts a key for a host a CA covers/,
    );
    await refusedUntouched([...a, '--accept-new-host-key'], /vouched for by a certificate authority/, /ssh-keyscan/);
    assert.equal(fs.readFileSync(kh, 'utf8'), text, 'the known_hosts file was changed');
  });

  test('ssh_config: HostName, HostKeyAlias and UserKnownHostsFile; a new key is recorded under the alias in that file', async () => {
    const kh = path.join(tmp, 'kh alias');
    fs.writeFileSync(kh, `rm-dst-alias ${hostKey()}\n`);
    const cfg = path.join(tmp, 'ssh_config');
    fs.writeFileSync(
      cfg,
      `Host dstbox\n  HostName ${h.dstAddr}\n  HostKeyAlias rm-dst-alias\n  UserKnownHostsFile "${kh}"\n  GlobalKnownHostsFile none\n`,
    );
    const r = await migrate([...argsFor('root@dstbox', ['--ssh-config', cfg]), '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    // Under another alias the stored key is unknown; accepted as new, it goes where OpenSSH puts it.
    const kh2 = path.join(tmp, 'kh_new');
    fs.writeFileSync(kh2, '');
    fs.writeFileSync(
      cfg,
      `Host dstbox\n  HostName ${h.dstAddr}\n  HostKeyAlias Fresh-Alias\n  UserKnownHostsFile ${kh2} "${kh}"\n  GlobalKnownHostsFile none\n`,
    );
    const refusedNew = await migrate([...argsFor('root@dstbox', ['--ssh-config', cfg]), '--dry-run']);
    assert.equal(refusedNew.code, 3, refusedNew.stderr);
    assert.match(refusedNew.stderr, /is not in .*kh_new, .*kh alias/);
    const accepted = await migrate([
      ...argsFor('root@dstbox', ['--ssh-config', cfg]),
      '--dry-run',
      '--accept-new-host-key',
    ]);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.equal(fs.readFileSync(kh2, 'utf8'), `fresh-alias ${hostKey()}\n`);
  });
});
