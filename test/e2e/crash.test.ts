// The tool itself dies mid-switchover (RUNC_MIGRATE_KILL_AT makes it kill itself at a
// named point, as SIGKILL from outside or a closed terminal would): the container must
// never run on both hosts, and after `migrate recover` it runs on exactly one, its counter
// never gone back, nothing left on either host (work directories, processes, mounts,
// the intent record, iptables rules, CRIU lock rules, arp_ignore).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { before, describe, test } from 'node:test';
import { baseArgs, echoClient, leftovers, stopClient, migrate, readCounter, removeEverywhere, serviceAddressOnSource, setupHosts, sh, startExample, status, waitFor, type Hosts } from './hosts.js';

let h: Hosts;
before(async () => {
  h = await setupHosts();
});

const INTENT_DIR = '/run/runc-migrate';

async function hostState(): Promise<string[]> {
  const found: string[] = [];
  for (const ns of ['rm-src', 'rm-dst']) {
    const rules = await sh(['nsenter', `--net=/run/netns/${ns}`, 'iptables', '-w', '-S'], { reject: false });
    for (const l of rules.stdout.split('\n')) if (/0xc114|CRIU|-j DROP/.test(l)) found.push(`${ns} iptables: ${l}`);
    const nft = await sh(['nsenter', `--net=/run/netns/${ns}`, 'nft', 'list', 'tables'], { reject: false });
    for (const l of nft.stdout.split('\n')) if (/CRIU/.test(l)) found.push(`${ns} nft: ${l}`);
  }
  const arp = fs.readFileSync('/proc/sys/net/ipv4/conf/all/arp_ignore', 'utf8').trim();
  const dstArp = await sh(['nsenter', '--net=/run/netns/rm-dst', 'cat', '/proc/sys/net/ipv4/conf/eth0/arp_ignore'], { reject: false });
  if (dstArp.stdout.trim() !== '0') found.push(`rm-dst eth0 arp_ignore ${dstArp.stdout.trim()} (all: ${arp})`);
  if (fs.existsSync(INTENT_DIR)) for (const f of fs.readdirSync(INTENT_DIR)) found.push(`intent record ${f}`);
  return [...found, ...(await leftovers())];
}

/** Where the container runs, by the counter moving: a frozen copy does not count. */
async function whereRunning(name: string, b: { src: string; dst: string }): Promise<string[]> {
  const a = [await readCounter(b.src), await readCounter(b.dst)];
  await new Promise((r) => setTimeout(r, 700));
  const z = [await readCounter(b.src), await readCounter(b.dst)];
  const on: string[] = [];
  if (z[0] > a[0]) on.push('source');
  if (z[1] > a[1]) on.push('destination');
  void name;
  return on;
}

describe('the tool killed during the switchover', () => {
  const points: Array<[string, string]> = [
    ['after-dump', 'source'],
    ['copy', 'source'],
    ['restored', 'source'],
    ['before-prepare', 'source'],
    ['prepared', 'source'],
    ['destination-committed', 'destination'],
    ['committed', 'destination'],
  ];
  for (const [point, expected] of points) {
    test(`SIGKILL at ${point}: never on both hosts; after migrate recover on the ${expected} only, counter intact, nothing left`, async () => {
      const name = 'crash';
      const b = await startExample(h, 'counter', name);
      await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
      const atStart = await readCounter(b.src);
      const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], { RUNC_MIGRATE_KILL_AT: `${point}:SIGKILL` });
      assert.equal(r.code, -1, `the tool should have died at ${point}: exit ${r.code}\n${r.stderr}`);
      // The last value the source showed (it is gone once the source committed).
      const seenNow = await readCounter(b.src);
      const lastSeen = Number.isFinite(seenNow) ? seenNow : atStart;
      // The participants act alone: never both running, whatever the point.
      const alone = await whereRunning(name, b);
      assert.ok(alone.length <= 1, `running on ${alone.join(' and ')} after the tool died at ${point}`);
      const rec = await migrate(['recover', ...baseArgs(h, name, b.dst), '--json']);
      assert.equal(rec.code, 0, rec.stderr + rec.stdout);
      const j = JSON.parse(rec.stdout);
      assert.equal(j.outcome, 'recovered', rec.stdout);
      assert.equal(j.runningOn, expected);
      const on = await whereRunning(name, b);
      assert.deepEqual(on, [expected], `died at ${point}, recovered: ${rec.stderr}`);
      const now = await readCounter(expected === 'source' ? b.src : b.dst);
      assert.ok(now >= lastSeen, `the counter went back: ${now} < ${lastSeen}`);
      assert.equal(await status(expected === 'source' ? h.dstRoot : h.srcRoot, name), 'absent');
      assert.deepEqual(await hostState(), []);
      await removeEverywhere(h, name);
    });
  }

  test('SIGHUP (the terminal closed) in the middle of the switchover: it finishes, on the destination only', async () => {
    const name = 'hup';
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const r = await migrate([...baseArgs(h, name, b.dst), '--transport', 'stream'], { RUNC_MIGRATE_KILL_AT: 'restored:SIGHUP' });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await whereRunning(name, b), ['destination']);
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, name);
  });

  test('SIGKILL with --move-ip after the restore: the address, its DROP rule and arp_ignore return; the client goes on with the source', async () => {
    await serviceAddressOnSource(h);
    const b = await startExample(h, 'echo', 'echo-crash');
    await new Promise((r) => setTimeout(r, 500));
    const client = echoClient(h);
    await client.connected;
    const r = await migrate([...baseArgs(h, 'echo-crash', b.dst), '--move-ip', `${h.serviceAddr}/32`], { RUNC_MIGRATE_KILL_AT: 'restored:SIGKILL' });
    assert.equal(r.code, -1, r.stderr);
    await waitFor('the source to run again', async () => (await status(h.srcRoot, 'echo-crash')) === 'running');
    const rec = await migrate(['recover', ...baseArgs(h, 'echo-crash', b.dst)]);
    assert.equal(rec.code, 0, rec.stderr);
    await new Promise((res) => setTimeout(res, 2000));
    const out = await stopClient(client);
    assert.ok(out.sent > 50, JSON.stringify(out));
    const onSrc = await sh(['ip', '-n', 'rm-src', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    const onDst = await sh(['ip', '-n', 'rm-dst', '-o', 'addr', 'show', 'to', h.serviceAddr]);
    assert.match(onSrc.stdout, /inet /);
    assert.equal(onDst.stdout.trim(), '');
    assert.equal(await status(h.dstRoot, 'echo-crash'), 'absent');
    assert.deepEqual(await hostState(), []);
    await removeEverywhere(h, 'echo-crash');
  });
});
