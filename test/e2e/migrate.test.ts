// End to end: real containers moved between the local test hosts (network namespaces
// with their own sshd, runc roots and bundles) by the real CLI, with real runc and CRIU.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  echoClient,
  leftovers,
  stopClient,
  migrate,
  ns,
  readCounter,
  readEnv,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;

before(async () => {
  h = await setupHosts();
});

async function counterRunning(name: string): Promise<{ src: string; dst: string }> {
  const b = await startExample(h, 'counter', name);
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
  return b;
}

async function assertNoLeftovers(): Promise<void> {
  assert.deepEqual(await leftovers(), [], 'work directories or page servers left behind');
}

describe('one-shot migration of a counter', () => {
  for (const variant of [
    { transport: 'auto', extra: [] as string[] },
    { transport: 'stream', extra: ['--no-diskless'] },
    { transport: 'tunnel', extra: [] },
    { transport: 'tls', extra: [] },
    { transport: 'direct', extra: [] },
  ]) {
    test(`continues counting on the destination (--transport ${variant.transport} ${variant.extra.join(' ')})`, async () => {
      const name = 'ctr';
      const b = await counterRunning(name);
      // The source counts on until the freeze: the destination must go on from at least here.
      const atStart = await readCounter(b.src);
      assert.ok(atStart >= 3);
      const r = await migrate([
        ...baseArgs(h, name, b.dst),
        '--transport',
        variant.transport,
        ...variant.extra,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const report = JSON.parse(r.stdout);
      const atFreeze = atStart;
      assert.equal(await status(h.srcRoot, name), 'absent', 'the source still has the container');
      assert.equal(await status(h.dstRoot, name), 'running');
      // The destination continues from the frozen value: a restart would begin at 1.
      await waitFor(
        'the counter to continue on the destination',
        async () => (await readCounter(b.dst)) > atFreeze + 2,
      );
      const first = await readCounter(b.dst);
      assert.ok(first > atFreeze, `destination at ${first}, source was at ${atFreeze}`);
      assert.equal(report.outcome, 'migrated');
      assert.equal(report.runningOn, 'destination');
      assert.ok(report.downtimeMs > 0 && report.downtimeMs < report.totalMs);
      assert.ok(report.bytesMoved > 10_000, `bytesMoved ${report.bytesMoved}`);
      if (variant.transport !== 'auto') assert.equal(report.transport, variant.transport);
      assert.equal(report.diskless, !variant.extra.includes('--no-diskless'));
      process.stderr.write(
        `# counter ${variant.transport}${variant.extra.join('')}: downtime ${report.downtimeMs} ms, total ${report.totalMs} ms, ${report.bytesMoved} B\n`,
      );
      await assertNoLeftovers();
      await removeEverywhere(h, name);
    });
  }
});

describe('a non-root remote user', () => {
  test('with --sudo the migration runs every remote command through sudo', async () => {
    const name = 'sudo1';
    const b = await counterRunning(name);
    const args = baseArgs(h, name, b.dst);
    args[1] = `${h.sudoUser}@${h.dstAddr}`;
    const refused = await migrate(args);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /--sudo/);
    assert.equal(await status(h.srcRoot, name), 'running');
    const atFreeze = await readCounter(b.src);
    const r = await migrate([...args, '--sudo', '--verbose']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /\[dst\] \$ sudo -n -- runc/);
    assert.equal(await status(h.srcRoot, name), 'absent');
    assert.equal(await status(h.dstRoot, name), 'running');
    await waitFor('the counter to continue on the destination', async () => (await readCounter(b.dst)) > atFreeze + 1);
    await assertNoLeftovers();
    await removeEverywhere(h, name);
  });
});

/** Stops the echo client and checks what it saw: one connection, every answer, in order. */
describe('TCP echo server with --move-ip', () => {
  const svc = () => `${h.serviceAddr}/32`;
  const addressOnSource = () => serviceAddressOnSource(h);
  before(addressOnSource);
  after(async () => {
    await removeEverywhere(h, 'echo');
    for (const n of ['rm-src', 'rm-dst'])
      await sh(['ip', '-n', n, 'addr', 'del', svc(), 'dev', 'eth0'], { reject: false });
  });

  for (const transport of ['auto', 'tls']) {
    test(`the client keeps its connection and gets every answer in order (--transport ${transport})`, async () => {
      await removeEverywhere(h, 'echo');
      await addressOnSource();
      const b = await startExample(h, 'echo', 'echo');
      await new Promise((r) => setTimeout(r, 300));
      const client = echoClient(h, 20);
      await client.connected;
      await new Promise((r) => setTimeout(r, 1000));
      const r = await migrate([...baseArgs(h, 'echo', b.dst), '--move-ip', svc(), '--transport', transport, '--json']);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const report = JSON.parse(r.stdout);
      if (transport === 'tls') assert.equal(report.transport, 'tls');
      // Keep talking to the migrated server for a while, then stop the client.
      await new Promise((res) => setTimeout(res, 2500));
      const result = await stopClient(client);
      process.stderr.write(
        `# echo ${transport}: downtime ${report.downtimeMs} ms, total ${report.totalMs} ms; client ${JSON.stringify(result)}\n`,
      );
      assert.ok(result.sent > 100, `sent ${result.sent}`);
      assert.equal(await status(h.srcRoot, 'echo'), 'absent');
      assert.equal(await status(h.dstRoot, 'echo'), 'running');
      const onDst = await sh(['ip', '-n', 'rm-dst', '-o', 'addr', 'show', 'to', h.serviceAddr]);
      const onSrc = await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', h.serviceAddr]);
      assert.match(onDst.stdout, /inet /);
      assert.equal(onSrc.stdout.trim(), '');
      // CRIU's lock rules are gone from the source.
      const rules = await sh([...ns('src'), 'iptables', '-S']);
      assert.doesNotMatch(rules.stdout, /0xc114|CRIU/);
      await assertNoLeftovers();
    });
  }

  test('a restore failure hands the connection back to the source, still answering in order', async () => {
    await removeEverywhere(h, 'echo');
    await addressOnSource();
    const b = await startExample(h, 'echo', 'echo');
    await new Promise((r) => setTimeout(r, 300));
    const client = echoClient(h, 20);
    await client.connected;
    await new Promise((r) => setTimeout(r, 1000));
    const r = await migrate([...baseArgs(h, 'echo', b.dst), '--move-ip', svc(), '--json'], {
      RUNC_MIGRATE_FAIL_AT: 'verify',
    });
    assert.equal(r.code, 4, r.stderr + r.stdout);
    await new Promise((res) => setTimeout(res, 2500));
    const result = await stopClient(client);
    process.stderr.write(`# echo rollback: client ${JSON.stringify(result)}\n`);
    assert.equal(await status(h.srcRoot, 'echo'), 'running');
    assert.equal(await status(h.dstRoot, 'echo'), 'absent');
    const onSrc = await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    const onDst = await sh(['ip', '-n', 'rm-dst', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    assert.match(onSrc.stdout, /inet /);
    assert.equal(onDst.stdout.trim(), '');
    await assertNoLeftovers();
  });
});

describe('TCP echo server with --move-ip onto a device named like a VLAN device (eth0.100)', () => {
  // eth0.100: a device name with a dot, which a dotted sysctl key would take apart (a macvlan
  // device under that name: this kernel has no 802.1Q, see test/hosts/setup.sh).
  const e = readEnv();
  const dev = `eth0.${e.RM_VLAN_ID}`;
  const svc = `${e.RM_VLAN_SERVICE_ADDR}/32`;
  after(async () => {
    await removeEverywhere(h, 'echov');
    for (const n of ['rm-src', 'rm-dst']) await sh(['ip', '-n', n, 'addr', 'del', svc, 'dev', dev], { reject: false });
  });

  test(`the address moves on ${dev}; the client keeps its connection and every answer (--transport tls)`, async () => {
    await serviceAddressOnSource(h, { address: e.RM_VLAN_SERVICE_ADDR, dev });
    const b = await startExample(h, 'echo', 'echov');
    await new Promise((r) => setTimeout(r, 300));
    const client = echoClient(h, 20, e.RM_VLAN_SERVICE_ADDR);
    await client.connected;
    await new Promise((r) => setTimeout(r, 1000));
    const arpBefore = (await sh([...ns('dst'), 'cat', `/proc/sys/net/ipv4/conf/${dev}/arp_ignore`])).stdout.trim();
    const r = await migrate([
      ...baseArgs(h, 'echov', b.dst),
      '--move-ip',
      `${svc}@${dev}`,
      '--transport',
      'tls',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    await new Promise((res) => setTimeout(res, 2500));
    const result = await stopClient(client);
    process.stderr.write(
      `# echo on ${dev}: downtime ${JSON.parse(r.stdout).downtimeMs} ms; client ${JSON.stringify(result)}\n`,
    );
    assert.ok(result.sent > 100, `sent ${result.sent}`);
    assert.equal(await status(h.srcRoot, 'echov'), 'absent');
    assert.equal(await status(h.dstRoot, 'echov'), 'running');
    assert.match(
      (await sh(['ip', '-n', 'rm-dst', '-o', 'addr', 'show', 'dev', dev, 'to', e.RM_VLAN_SERVICE_ADDR])).stdout,
      /inet /,
    );
    assert.equal(
      (await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', e.RM_VLAN_SERVICE_ADDR])).stdout.trim(),
      '',
    );
    // The guard set the VLAN device's arp_ignore while it held the address muted, and put it back.
    assert.equal(
      (await sh([...ns('dst'), 'cat', `/proc/sys/net/ipv4/conf/${dev}/arp_ignore`])).stdout.trim(),
      arpBefore,
    );
    assert.deepEqual(await leftovers(), []);
  });
});

describe('JSON report', () => {
  test('is one object on stdout with the figures, nothing else (destination given as an ssh_config alias)', async () => {
    const b = await counterRunning('json1');
    // The alias supplies HostName, User, Port and IdentityFile; no -i on the command line.
    const cfg = `${h.dir}/ssh_config`;
    fs.writeFileSync(cfg, `Host dst-alias\n  HostName ${h.dstAddr}\n  User root\n  Port 22\n  IdentityFile ${h.key}\n`);
    const args = baseArgs(h, 'json1', b.dst);
    args.splice(1, 3, 'dst-alias');
    const r = await migrate([...args, '--ssh-config', cfg, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1);
    const j = JSON.parse(lines[0]);
    for (const k of [
      'outcome',
      'exitCode',
      'container',
      'destination',
      'transport',
      'downtimeMs',
      'totalMs',
      'bytesMoved',
      'phases',
      'runningOn',
    ]) {
      assert.ok(k in j, `missing ${k}`);
    }
    const names = j.phases.map((p: { name: string }) => p.name);
    for (const p of ['connect', 'dump', 'copy', 'restore', 'commit', 'finish'])
      assert.ok(names.includes(p), `phase ${p} missing`);
    assert.ok(j.phases.every((p: { ms: number }) => typeof p.ms === 'number' && p.ms >= 0));
    // The downtime's parts: the switchover's steps inside it and the rest, adding up to it.
    const parts = j.downtimeParts as Record<string, number>;
    for (const p of ['dump', 'copy', 'restore', 'prepare', 'commit', 'other']) assert.ok(parts[p] >= 0, `part ${p}`);
    assert.equal(parts.finish, undefined, "the source's removal, after the commit, is not downtime");
    const sum = Object.values(parts).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - j.downtimeMs) < 1, `parts ${sum} against ${j.downtimeMs}`);
    await removeEverywhere(h, 'json1');
  });
});

describe('a failure after the freeze rolls back to the source', () => {
  // Each fault point, with the transport that exercises it.
  const faults: Array<[string, string]> = [
    ['page-server', 'tunnel'],
    ['page-server', 'tls'],
    ['dump', 'stream'],
    ['after-dump', 'tunnel'],
    ['copy', 'stream'],
    ['restore', 'tls'],
    ['ssh-drop', 'stream'],
    ['verify', 'direct'],
  ];
  for (const [point, transport] of faults) {
    test(`fault at ${point} (--transport ${transport}): the container runs on the source only, counter intact`, async () => {
      const name = 'rb';
      const b = await counterRunning(name);
      const atStart = await readCounter(b.src);
      const r = await migrate([...baseArgs(h, name, b.dst), '--transport', transport, '--json'], {
        RUNC_MIGRATE_FAIL_AT: point,
      });
      assert.equal(r.code, 4, r.stderr + r.stdout);
      const j = JSON.parse(r.stdout);
      assert.equal(j.outcome, 'rolled-back');
      assert.equal(j.runningOn, 'source');
      // The resumed source goes on from where it was, not from a restart.
      const atFreeze = await readCounter(b.src);
      assert.ok(atFreeze >= atStart, `the counter went from ${atStart} back to ${atFreeze}`);
      assert.equal(await status(h.srcRoot, name), 'running');
      assert.equal(await status(h.dstRoot, name), 'absent');
      await waitFor('the source to count on', async () => (await readCounter(b.src)) > atFreeze + 1);
      assert.ok((await readCounter(b.src)) > atFreeze, 'the counter went back');
      await assertNoLeftovers();
      await removeEverywhere(h, name);
    });
  }

  test('a restore that CRIU refuses (file missing on the destination) resumes the source', async () => {
    const name = 'rb2';
    const b = await counterRunning(name);
    fs.rmSync(`${b.dst}/rootfs/tmp/tick`);
    // Preflight sees the missing file; --force skips that check so CRIU meets it.
    // Without the rootfs sync (which would bring the file back).
    const refused = await migrate([...baseArgs(h, name, b.dst), '--no-sync-rootfs']);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /\/tmp\/tick is missing on the destination/);
    const r = await migrate([...baseArgs(h, name, b.dst), '--force', '--no-sync-rootfs']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /Error \(/, 'CRIU error lines shown');
    assert.match(r.stderr, /running on the source/);
    assert.equal(await status(h.srcRoot, name), 'running');
    assert.equal(await status(h.dstRoot, name), 'absent');
    const v = await readCounter(b.src);
    await waitFor('the source to count on', async () => (await readCounter(b.src)) > v + 1);
    await assertNoLeftovers();
    await removeEverywhere(h, name);
  });
});
