// Post-copy (--post-copy) between the namespace hosts: CRIU's lazy pages over TLS, with
// real runc, CRIU, userfaultfd and sshd. What moved is checked: the counter continues,
// Redis has every key with a live client, the echo client keeps its connection through
// the lazy window. Then the window's failures: the destination's daemon dies (the
// "link" breaks) and the source resumes whole; the pipe limit refused without
// --tune-sysctl and put back with it. Resets, silent drops and the tool's death at each
// step are postcopy-faults.test.ts's.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  baseArgs,
  lazyDaemonPid,
  echoClient,
  leftovers,
  migrate,
  ns,
  readCounter,
  removeEverywhere,
  serviceAddressOnSource,
  setupHosts,
  sh,
  startExample,
  status,
  stopClient,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let pipeMax: string;
const PIPE = '/proc/sys/fs/pipe-max-size';
before(async () => {
  h = await setupHosts();
  pipeMax = fs.readFileSync(PIPE, 'utf8').trim();
  // The tests start from the kernel's default (1 MiB): --tune-sysctl raises it for each run.
  fs.writeFileSync(PIPE, '1048576');
});
after(() => fs.writeFileSync(PIPE, pipeMax));

/** Nothing of a post-copy run left: the daemon, keepers, rules, work directories, and the pipe limit back. */
async function postCopyLeftovers(): Promise<string[]> {
  const found = await leftovers();
  const ps = await sh(['pgrep', '-af', 'criu lazy-pages|sysctl-keeper|watchdog.sh'], { reject: false });
  for (const l of ps.stdout.split('\n')) if (l.trim() && !l.includes('pgrep')) found.push(`process: ${l.trim()}`);
  const now = fs.readFileSync(PIPE, 'utf8').trim();
  if (now !== '1048576') found.push(`fs.pipe-max-size left at ${now}`);
  return found;
}

const pc = ['--post-copy', '--tune-sysctl', '--no-sync-rootfs'];

/** A Redis of about 140 MiB on the source: a lazy window long enough to act in. */
async function bigRedis(name: string): Promise<{ src: string; dst: string }> {
  const b = await startExample(h, 'redis', name);
  await waitFor('redis', async () =>
    (await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'ping'], { reject: false })).stdout.includes('PONG'),
  );
  await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'debug', 'populate', '128000', 'k', '1000']);
  return b;
}

describe('post-copy', () => {
  test('without --tune-sysctl a pipe limit below 4 MiB is refused before anything is frozen, saying what to set', async () => {
    const b = await startExample(h, 'counter', 'pc-refuse');
    const r = await migrate([...baseArgs(h, 'pc-refuse', b.dst), '--post-copy', '--no-sync-rootfs']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /fs\.pipe-max-size is 1048576, below the 4194304/);
    assert.match(r.stderr, /sysctl -w fs\.pipe-max-size=4194304 .* or give --tune-sysctl/);
    assert.equal(await status(h.srcRoot, 'pc-refuse'), 'running');
    await removeEverywhere(h, 'pc-refuse');
  });

  test('--hybrid is refused where the kernel does not track dirty memory, with the reason, before anything is frozen', async () => {
    const b = await startExample(h, 'counter', 'pc-hybrid');
    const r = await migrate([...baseArgs(h, 'pc-hybrid', b.dst), '--hybrid', '--tune-sysctl', '--no-sync-rootfs']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /does not track dirty memory .*--hybrid cannot pre-copy here/);
    assert.match(r.stderr, /Migrate with --post-copy/);
    assert.equal(await status(h.srcRoot, 'pc-hybrid'), 'running');
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, 'pc-hybrid');
  });

  test('the counter continues on the destination; the report gives the lazy window; the limit is put back', async () => {
    const name = 'pc-counter';
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const r = await migrate([...baseArgs(h, name, b.dst), ...pc, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.mode, 'post-copy');
    assert.equal(j.transport, 'tls');
    assert.ok(j.postCopy.windowMs > 0 && j.postCopy.pagesTotal > 0, JSON.stringify(j.postCopy));
    assert.equal(j.postCopy.pagesOnDemand + j.postCopy.pagesPushed, j.postCopy.pagesTotal);
    assert.equal(await status(h.srcRoot, name), 'absent');
    const a = await readCounter(b.dst);
    await waitFor('the counter to go on', async () => (await readCounter(b.dst)) > a + 2);
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, name);
  });

  test('Redis with a live client: every key there, the client keeps its connection through the lazy window', async () => {
    await serviceAddressOnSource(h);
    const name = 'pc-redis';
    const b = await startExample(h, 'redis', name);
    await waitFor('redis', async () =>
      (await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'ping'], { reject: false })).stdout.includes('PONG'),
    );
    // About 140 MiB in use: the window is long enough to be seen.
    await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'debug', 'populate', '128000', 'k', '1000']);
    await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'set', 'marker', 'before']);
    // A client on the service address, on one connection, all through (redis-cli -r: one connection).
    const client = sh([...ns('client'), 'redis-cli', '-h', h.serviceAddr, '-r', '-1', '-i', '0.02', 'incr', 'ticks'], {
      reject: false,
    });
    await waitFor(
      'the client to count',
      async () => Number((await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'get', 'ticks'])).stdout) > 10,
    );
    const r = await migrate([...baseArgs(h, name, b.dst), ...pc, '--move-ip', `${h.serviceAddr}/32`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.ok(j.postCopy.pagesTotal > 30_000, `most of the memory moved lazily: ${JSON.stringify(j.postCopy)}`);
    const get = async (args: string[]) =>
      (await sh([...ns('dst'), 'redis-cli', '-h', '127.0.0.1', ...args])).stdout.trim();
    assert.equal(await get(['dbsize']), '128002');
    assert.equal(await get(['get', 'marker']), 'before');
    assert.equal(await get(['strlen', 'k:127999']), '1000');
    assert.match(await get(['getrange', 'k:64000', '0', '11']), /^value:64000/);
    const t1 = Number(await get(['get', 'ticks']));
    await new Promise((res) => setTimeout(res, 500));
    assert.ok(Number(await get(['get', 'ticks'])) > t1, 'the client goes on counting on the destination');
    await sh(['pkill', '-f', 'redis-cli -h 10.77'], { reject: false });
    const c = await client;
    assert.doesNotMatch(
      String(c.stderr) + String(c.stdout),
      /Could not connect|Connection reset|Error/i,
      'the client lost its connection',
    );
    assert.equal(await status(h.srcRoot, name), 'absent');
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, name);
  });

  test('the echo client keeps its connection, every answer in order, with --move-ip', async () => {
    await serviceAddressOnSource(h);
    const b = await startExample(h, 'echo', 'pc-echo');
    await new Promise((r) => setTimeout(r, 500));
    const client = echoClient(h);
    await client.connected;
    await new Promise((r) => setTimeout(r, 1000));
    const r = await migrate([...baseArgs(h, 'pc-echo', b.dst), ...pc, '--move-ip', `${h.serviceAddr}/32`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    await new Promise((res) => setTimeout(res, 2000));
    const out = await stopClient(client);
    assert.ok(out.sent > 100, JSON.stringify(out));
    assert.equal(await status(h.srcRoot, 'pc-echo'), 'absent');
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, 'pc-echo');
  });

  test("the destination's daemon dies in the lazy window: the source resumes whole, the destination is clean, the address is back", async () => {
    await serviceAddressOnSource(h);
    const name = 'pc-cut';
    const b = await bigRedis(name);
    const cli = (where: 'src' | 'dst', args: string[]) =>
      sh([...ns(where), 'redis-cli', '-h', '127.0.0.1', ...args], { reject: false });
    // A client on one connection (redis-cli -r), which CRIU dumps with the server.
    const client = sh([...ns('client'), 'redis-cli', '-h', h.serviceAddr, '-r', '-1', '-i', '0.02', 'incr', 'ticks'], {
      reject: false,
    });
    const clientAddr = async () => (await cli('src', ['client', 'list'])).stdout.match(/addr=(\S+) .*cmd=incr/)?.[1];
    await waitFor('the client to connect', async () => (await clientAddr()) !== undefined);
    const stale = (await clientAddr())!;
    const gate = `/tmp/pc-cut-gate-${process.pid}`;
    fs.rmSync(gate, { force: true });
    fs.rmSync(`${gate}.reached`, { force: true });
    const run = migrate([...baseArgs(h, name, b.dst), ...pc, '--move-ip', `${h.serviceAddr}/32`, '--json'], {
      RUNC_MIGRATE_PAUSE_AT: `lazy-window:${gate}`,
    });
    await waitFor('the lazy window', () => fs.existsSync(`${gate}.reached`), 60_000);
    // The copy runs on the destination, with the memory it has fetched so far.
    assert.equal(await status(h.dstRoot, name), 'running');
    // The daemon dies as if its host or its link went: its TLS session ends without a word.
    const daemon = await lazyDaemonPid();
    assert.ok(daemon, 'the lazy-pages daemon runs in the window');
    await sh(['kill', '-KILL', daemon]);
    fs.writeFileSync(gate, '');
    const r = await run;
    fs.rmSync(`${gate}.reached`, { force: true });
    fs.rmSync(gate, { force: true });
    assert.equal(r.code, 4, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.runningOn, 'source');
    assert.equal(j.postCopy.rolledBack, true);
    assert.match(j.error.message, /lazy window is lost, and its TCP peers were reset/);
    assert.equal(await status(h.dstRoot, name), 'absent');
    assert.equal(await status(h.srcRoot, name), 'running');
    // Whole: every key, answering on the service address, which is back on the source.
    assert.equal((await cli('src', ['dbsize'])).stdout.trim(), '128001', 'every key, and the client counter');
    const far = await sh([...ns('client'), 'redis-cli', '-h', h.serviceAddr, 'strlen', 'k:127999'], { reject: false });
    assert.equal(far.stdout.trim(), '1000', far.stderr);
    // The client's old connection, which CRIU left in repair mode on the source (its peer
    // talked to the destination since), was destroyed: Redis saw the error and let it go.
    await waitFor(
      `Redis on the source to drop the stale connection ${stale}`,
      async () => !(await cli('src', ['client', 'list'])).stdout.includes(`addr=${stale} `),
      5_000,
    );
    await sh(['pkill', '-f', 'redis-cli -h 10.77'], { reject: false });
    await client;
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, name);
  });

  test('an error as the window opens (before the restore, or as the memory starts to move): the tool cuts it, the source resumes whole, nothing left', async () => {
    const name = 'pc-fault';
    const b = await bigRedis(name);
    for (const point of ['window', 'pages']) {
      const r = await migrate([...baseArgs(h, name, b.dst), ...pc, '--json'], { RUNC_MIGRATE_FAIL_AT: point });
      assert.equal(r.code, 4, `${point}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout).runningOn, 'source');
      assert.equal(await status(h.dstRoot, name), 'absent');
      assert.equal(await status(h.srcRoot, name), 'running');
      const n = await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'dbsize']);
      assert.equal(n.stdout.trim(), '128000', `${point}: every key on the source`);
      assert.deepEqual(await postCopyLeftovers(), [], point);
    }
    await removeEverywhere(h, name);
  });

  test("a container with its own network namespace, rolled back from the window: CRIU's lock inside it is gone", async () => {
    // The counter runs in a network namespace of its own: CRIU locks it from inside, and
    // does not unlock it when a lazy transfer fails.
    const name = 'pc-netns';
    const b = await startExample(h, 'counter', name);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 3);
    const r = await migrate([...baseArgs(h, name, b.dst), ...pc, '--json'], { RUNC_MIGRATE_FAIL_AT: 'window' });
    assert.equal(r.code, 4, r.stderr);
    const st = await sh(['runc', '--root', h.srcRoot, 'state', name]);
    const pid = JSON.parse(st.stdout).pid as number;
    assert.notEqual(
      fs.readlinkSync(`/proc/${pid}/ns/net`),
      fs.readlinkSync('/proc/self/ns/net'),
      'the counter has its own network namespace',
    );
    const rules = await sh(['nsenter', '-t', String(pid), '-n', 'iptables', '-w', '-S']);
    assert.doesNotMatch(
      rules.stdout,
      /CRIU|0xc114/,
      `CRIU's lock stayed in the container's namespace:\n${rules.stdout}`,
    );
    assert.deepEqual(await postCopyLeftovers(), []);
    await removeEverywhere(h, name);
  });
});
