// End to end: the TLS transport's guarantees on the local test hosts. The page server
// takes only this migration's dumper (a certificate of another migration is refused),
// its port is closed to everyone else while it waits, and no key or rule outlives the
// migration, however it ends.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { commandLine } from '../../src/shell.js';
import {
  ROOT,
  baseArgs,
  keyMaterial,
  leftovers,
  migrate,
  ns,
  readCounter,
  removeEverywhere,
  setupHosts,
  sh,
  startExample,
  status,
  waitFor,
  type Hosts,
} from './hosts.js';

let h: Hosts;
let tmp: string;

before(async () => {
  h = await setupHosts();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-tls-'));
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function counter(name: string) {
  const b = await startExample(h, 'counter', name);
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
  return b;
}

/** Starts a migration that stops when its page server listens; returns the run and the endpoint. */
async function pausedAtPageServer(
  name: string,
  b: { dst: string },
  extra: string[],
): Promise<{ run: ReturnType<typeof migrate>; endpoint: string; release: () => void }> {
  const gate = path.join(tmp, `gate-${name}`);
  fs.rmSync(gate, { force: true });
  fs.rmSync(`${gate}.reached`, { force: true });
  const run = migrate([...baseArgs(h, name, b.dst), '--json', ...extra], {
    RUNC_MIGRATE_PAUSE_AT: `page-server:${gate}`,
  });
  await waitFor(`${name}'s page server to listen`, () => fs.existsSync(`${gate}.reached`), 60_000);
  return { run, endpoint: fs.readFileSync(`${gate}.reached`, 'utf8'), release: () => fs.writeFileSync(gate, '') };
}

/** A TCP connection attempt from a namespace (as a user): 'refused', 'timeout' or 'connected'. */
async function tryConnect(
  where: 'src' | 'dst' | 'client' | 'tenant',
  endpoint: string,
  user?: string,
): Promise<string> {
  const [host, port] = endpoint.split(':');
  const as = user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups'] : [];
  const enter = where === 'tenant' ? ['nsenter', `--net=/run/netns/${TENANT}`] : ns(where);
  const r = await sh(
    [...enter, ...as, 'timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port} && echo connected`],
    { reject: false },
  );
  return r.stdout.includes('connected') ? 'connected' : r.exitCode === 124 ? 'timeout' : 'refused';
}

/**
 * A co-tenant of the source: a namespace routed through it and masqueraded to its
 * address (a container or VM on the source host), so the destination sees its
 * connections coming from the source. Removed by the returned function.
 */
const TENANT = 'rm-tenant';
async function tenantBehindSource(): Promise<() => Promise<void>> {
  const run = (argv: string[]) => sh(argv, { reject: false });
  await run(['ip', 'netns', 'add', TENANT]);
  await run([
    'ip',
    'link',
    'add',
    'v-tenant',
    'netns',
    'rm-src',
    'type',
    'veth',
    'peer',
    'name',
    'eth0',
    'netns',
    TENANT,
  ]);
  await run(['ip', '-n', 'rm-src', 'addr', 'replace', '10.88.0.1/24', 'dev', 'v-tenant']);
  await run(['ip', '-n', 'rm-src', 'link', 'set', 'v-tenant', 'up']);
  await run(['ip', '-n', TENANT, 'addr', 'replace', '10.88.0.2/24', 'dev', 'eth0']);
  await run(['ip', '-n', TENANT, 'link', 'set', 'eth0', 'up']);
  await run(['ip', '-n', TENANT, 'link', 'set', 'lo', 'up']);
  await run(['ip', '-n', TENANT, 'route', 'replace', 'default', 'via', '10.88.0.1']);
  await run([...ns('src'), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await run([
    ...ns('src'),
    'iptables',
    '-w',
    '-t',
    'nat',
    '-A',
    'POSTROUTING',
    '-s',
    '10.88.0.0/24',
    '-j',
    'MASQUERADE',
  ]);
  return async () => {
    await run([
      ...ns('src'),
      'iptables',
      '-w',
      '-t',
      'nat',
      '-D',
      'POSTROUTING',
      '-s',
      '10.88.0.0/24',
      '-j',
      'MASQUERADE',
    ]);
    await run([...ns('src'), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
    await run(['ip', 'netns', 'del', TENANT]);
  };
}

describe('the TLS transport', () => {
  test("the page server's port is closed to every other client while it waits; the dump still gets through", async () => {
    const b = await counter('tls1');
    const at = await readCounter(b.src);
    const p = await pausedAtPageServer('tls1', b, ['--transport', 'tls']);
    assert.equal(p.endpoint, `${h.dstAddr}:27027`, 'the page server listens on the destination address');
    assert.equal(await tryConnect('client', p.endpoint), 'refused', 'another host reached the page server');
    assert.equal(await tryConnect('dst', p.endpoint, '65534'), 'refused', 'a local user on the destination reached it');
    assert.equal(await tryConnect('dst', p.endpoint), 'refused', 'the destination itself reached it');
    assert.equal(await tryConnect('src', p.endpoint, '65534'), 'refused', 'another user on the source reached it');
    const untenant = await tenantBehindSource();
    try {
      // The co-tenant's way out works (the destination's sshd answers it), but not to the page server.
      assert.equal(
        await tryConnect('tenant', `${h.dstAddr}:22`),
        'connected',
        'the co-tenant cannot reach the destination at all: the test proves nothing',
      );
      assert.equal(
        await tryConnect('tenant', p.endpoint),
        'refused',
        "a container on the source, NATed to the source's address, reached it",
      );
    } finally {
      await untenant();
    }
    p.release();
    const r = await p.run;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const j = JSON.parse(r.stdout);
    assert.equal(j.transport, 'tls');
    await waitFor('the counter to go on on the destination', async () => (await readCounter(b.dst)) > at);
    assert.deepEqual(keyMaterial(), []);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'tls1');
  });

  test("the tunnel: only the SSH session's user reaches the page server on the destination's loopback", async () => {
    const b = await counter('tls2');
    const p = await pausedAtPageServer('tls2', b, ['--transport', 'tunnel']);
    assert.equal(
      await tryConnect('dst', '127.0.0.1:27027', '65534'),
      'refused',
      'a local user on the destination reached the page server',
    );
    p.release();
    const r = await p.run;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'tls2');
  });

  test("a dumper holding another migration's certificate is refused; that migration rolls back, the other goes on", async () => {
    const a = await counter('tlsa');
    const bb = await counter('tlsb');
    const withKeys = () =>
      fs
        .readdirSync('/dev/shm')
        .filter((d) => d.startsWith('runc-migrate.') && fs.existsSync(`/dev/shm/${d}/tls/source.key`));
    const pa = await pausedAtPageServer('tlsa', a, ['--transport', 'tls']);
    const mine = withKeys();
    const pb = await pausedAtPageServer('tlsb', bb, ['--transport', 'tls', '--page-server-port', '27028']);
    const bDirs = withKeys().filter((d) => !mine.includes(d));
    assert.equal(bDirs.length, 1, "B's work directory on the source");
    // An intruder, root on the source (past the port rules), dumps a third container to
    // A's page server. It trusts A's CA (a certificate is no secret) and presents B's
    // dumper certificate and key: only the page server's own check can stop it.
    const intruder = await counter('tlsc');
    const img = fs.mkdtempSync(path.join(tmp, 'intruder-'));
    const conf = path.join(img, 'criu.conf');
    const bTls = `/dev/shm/${bDirs[0]}/tls`;
    fs.writeFileSync(
      conf,
      `tls\ntls-cacert /dev/shm/${mine[0]}/tls/ca.crt\ntls-cert ${bTls}/source.crt\ntls-key ${bTls}/source.key\n`,
    );
    // CRIU's dumper can hang after a failed TLS session (it sends on the session it just
    // freed): the intruder gets 20 s.
    const r = await sh(
      [
        'sh',
        '-c',
        `CRIU_CONFIG_FILE=${conf} exec timeout -s KILL 20 ${ns('src').join(' ')} runc --root ${h.srcRoot} checkpoint --leave-running --image-path ${img}/i --work-path ${img}/w --page-server ${pa.endpoint} tlsc`,
      ],
      { reject: false },
    );
    await sh(['pkill', '-KILL', '-f', 'criu: dump'], { reject: false });
    assert.notEqual(r.exitCode, 0, "the dump with another migration's certificate got through");
    const psLog = (await sh(['sh', '-c', 'cat /dev/shm/runc-migrate.*/work/page-server.log'], { reject: false }))
      .stdout;
    assert.match(
      psLog,
      /Invalid certificate[\s\S]*issuer is unknown/,
      'the page server did not refuse the certificate',
    );
    assert.doesNotMatch(
      fs.readFileSync(`${img}/w/dump.log`, 'utf8'),
      /Error \(criu\/tls\.c[^\n]*\n[^\n]*NOT trusted/,
      "the intruder refused A's page server: the test proves nothing",
    );
    assert.equal(await status(h.srcRoot, 'tlsc'), 'running', "the intruder's container stopped");
    void intruder;
    pa.release();
    const ra = await pa.run;
    assert.notEqual(ra.code, 0, ra.stdout);
    // A's report carries its page server's side: why the connection before its own failed.
    assert.match(ra.stdout, /\[dst page server\][^"]*Invalid certificate/, ra.stdout);
    assert.match(ra.stdout, /another program may have taken its port/, ra.stdout);
    assert.equal(await status(h.srcRoot, 'tlsa'), 'running');
    assert.equal(await status(h.dstRoot, 'tlsa'), 'absent');
    const va = await readCounter(a.src);
    await waitFor('A to count on on the source', async () => (await readCounter(a.src)) > va);
    pb.release();
    const rb = await pb.run;
    assert.equal(rb.code, 0, rb.stderr + rb.stdout);
    assert.equal(await status(h.dstRoot, 'tlsb'), 'running');
    assert.deepEqual(keyMaterial(), []);
    assert.deepEqual(await leftovers(), []);
    for (const n of ['tlsa', 'tlsb', 'tlsc']) await removeEverywhere(h, n);
  });

  test('SIGKILL while the page server waits: keys and port rules go with the tool on both hosts', async () => {
    const b = await counter('tls3');
    const p = await pausedAtPageServer('tls3', b, ['--transport', 'tls']);
    assert.ok(
      keyMaterial().some((f) => f.endsWith('source.key')) && keyMaterial().some((f) => f.endsWith('destination.key')),
      'keys were made',
    );
    await sh(['pkill', '-KILL', '-f', 'bin/migrate tls3']);
    const r = await p.run;
    assert.equal(r.code, -1);
    await waitFor('the keys to go', () => keyMaterial().length === 0, 5000);
    await waitFor(
      'the port rules and the page server to go',
      async () => !(await leftovers()).some((l) => /^rule on|page-server|keeper|port-guard/.test(l)),
      5000,
    );
    assert.equal(await status(h.srcRoot, 'tls3'), 'running');
    assert.equal(await status(h.dstRoot, 'tls3'), 'absent');
    // The next migration removes the stale work directories and succeeds.
    const again = await migrate(baseArgs(h, 'tls3', b.dst));
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await leftovers(), []);
    await removeEverywhere(h, 'tls3');
  });

  test("on a terminal, the dump's line shows the bytes arriving; the meter goes with the phase", async () => {
    const b = await counter('tls4');
    // script(1) gives the tool a terminal; its output is what the user would see. A Redis
    // of 256 MB: its dump (about a second) lasts long enough for the line to show a rate.
    await removeEverywhere(h, 'tls4');
    const rb = await startExample(h, 'redis', 'tls4');
    await waitFor('redis', async () =>
      (await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'ping'], { reject: false })).stdout.includes('PONG'),
    );
    await sh([...ns('src'), 'redis-cli', '-h', '127.0.0.1', 'debug', 'populate', '256000', 'k', '1000']);
    const cli = (sized: boolean, bundle: string) =>
      (sized ? 'stty cols 120 rows 40; ' : '') +
      commandLine([
        'env',
        '-u',
        'CI',
        'TERM=xterm',
        'HOME=/nonexistent-home',
        'SSH_AUTH_SOCK=',
        'node',
        path.join(ROOT, 'bin/migrate'),
        ...baseArgs(h, 'tls4', bundle),
        '--transport',
        'tls',
        '--no-sync-rootfs',
      ]);
    const onTerminal = (sized: boolean, bundle: string) =>
      execa(ns('src')[0], [...ns('src').slice(1), 'script', '-qfec', cli(sized, bundle), '/dev/null'], {
        reject: false,
        stdin: 'ignore',
        timeout: 120_000,
      });
    const r = await onTerminal(true, rb.dst);
    const out = String(r.stdout);
    assert.equal(r.exitCode, 0, out);
    assert.match(
      out,
      /freeze and dump[^\n\r]*\d+(\.\d)? (KiB|MiB) of ~\d+(\.\d)? MiB, \d+(\.\d)? MiB\/s, \d+ s left/,
      'no transfer line on the terminal',
    );
    assert.match(out, /migrated to/);
    assert.deepEqual(await leftovers(), []);
    // A terminal that reports no size (script(1) without stty) gets plain lines, not a
    // spinner that clears lines without end.
    await removeEverywhere(h, 'tls4');
    void b;
    const c = await counter('tls4');
    const plain = await onTerminal(false, c.dst);
    assert.equal(plain.exitCode, 0, String(plain.stdout).slice(-2000));
    assert.match(String(plain.stdout), /ok {3}freeze and dump/);
    await removeEverywhere(h, 'tls4');
  });
});
