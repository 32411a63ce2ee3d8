// README's examples, run as written against the test hosts: the quickstart ("Using it")
// and the standby's commands. Each line is taken from README.md itself and run by a shell
// in which `migrate` is the tool with the test hosts' connection flags added; the names
// README uses (web1, echo, root@10.0.0.2, dst-host, root@standby, 10.0.1.10) become the
// test hosts'. An example added to README, or changed there, fails the first test until
// it is run here too: the README cannot rot.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import {
  echoClient,
  INTENT_DIR,
  jsonLines,
  leftovers,
  ns,
  readCounter,
  removeEverywhere,
  ROOT,
  serviceAddressOnSource,
  setupHosts,
  sh,
  sshdPid,
  startExample,
  status,
  stopClient,
  waitFor,
  type Hosts,
} from './hosts.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The commands of the first ```sh block after HEADING: comments and blank lines left out. */
function examples(heading: string): string[] {
  const at = README.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has no "${heading}"`);
  const block = README.slice(at).match(/```sh\n([\s\S]*?)```/)?.[1] ?? '';
  return block
    .split('\n')
    .map((l) => l.replace(/\s{2,}#.*$/, '').trim())
    .filter((l) => l && !l.startsWith('#'));
}

const QUICKSTART = [
  'migrate --dry-run web1 root@10.0.0.2',
  'migrate web1 root@10.0.0.2',
  'migrate --move-ip 10.0.1.10/32 --json echo dst-host > report.json',
  'migrate recover web1 root@10.0.0.2',
];
const STANDBY = [
  'migrate replicate web1 root@standby',
  'migrate failover web1 root@standby',
  'migrate failover --watch web1 local',
];

let h: Hosts;
const WEB = 'rd-web1';
const ECHO = 'rd-echo';
const REPLICAS = '/var/tmp/runc-migrate-hosts-readme-replicas';
let cwd: string;

before(async () => {
  h = await setupHosts();
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-readme-'));
  fs.rmSync(REPLICAS, { recursive: true, force: true });
});
after(async () => {
  for (const n of [WEB, ECHO]) await removeEverywhere(h, n);
  for (const n of ['rm-src', 'rm-dst'])
    await sh(['ip', '-n', n, 'addr', 'del', `${h.serviceAddr}/32`, 'dev', 'eth0'], { reject: false });
  fs.rmSync(REPLICAS, { recursive: true, force: true });
  fs.rmSync(cwd, { recursive: true, force: true });
});

/**
 * A shell in which `migrate` is bin/migrate with the test hosts' flags after README's
 * words (each command takes the ones it has); the line itself runs as README has it.
 */
function shellFor(line: string): string {
  const q = (s: string) => `'${s}'`;
  const conn = `-i ${q(h.key)} --known-hosts ${q(h.knownHosts)}`;
  const fn = `migrate() {
  case $1 in
    recover) set -- "$@" ${conn} --runc-root ${q(h.srcRoot)} --remote-runc-root ${q(h.dstRoot)} ;;
    replicate) set -- "$@" ${conn} --runc-root ${q(h.srcRoot)} --remote-runc-root ${q(h.dstRoot)} --bundle ${q(path.join(h.dstBundles, WEB))} --replica-dir ${q(REPLICAS)} --interval 1s --json ;;
    failover) set -- "$@" ${conn} --remote-runc-root ${q(h.dstRoot)} --replica-dir ${q(REPLICAS)} --json ;;
    *) set -- "$@" ${conn} --runc-root ${q(h.srcRoot)} --remote-runc-root ${q(h.dstRoot)} --bundle ${q(path.join(h.dstBundles, /\becho\b/.test(line) ? ECHO : WEB))} ;;
  esac
  exec node ${q(path.join(ROOT, 'bin/migrate'))} "$@"
}`;
  const words = line
    .replace(/\bweb1\b/g, WEB)
    .replace(/\becho\b/g, ECHO)
    .replace(/root@10\.0\.0\.2|dst-host|root@standby/g, `root@${h.dstAddr}`)
    .replace(/10\.0\.1\.10\//g, `${h.serviceAddr}/`);
  return `${fn}\ncd ${q(cwd)}\n${words}`;
}

/** Where the line runs: the source, a third machine, or the standby itself (its network and its mounts). */
function where(line: string): string[] {
  if (/ local$/.test(line)) return [...ns('dst'), `--mount=/proc/${sshdPid()}/ns/mnt`];
  if (line.startsWith('migrate failover')) return ns('client');
  return ns('src');
}

const env = { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' };

async function run(line: string, timeoutMs = 180_000) {
  const argv = [...where(line), 'sh', '-c', shellFor(line)];
  const r = await execa(argv[0], argv.slice(1), { reject: false, stdin: 'ignore', env, timeout: timeoutMs });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A README line started in the background (replicate): its JSON events as they come. */
function start(line: string) {
  const argv = [...where(line), 'sh', '-c', shellFor(line)];
  const proc = execa(argv[0], argv.slice(1), { reject: false, stdin: 'ignore', env });
  return { proc, events: jsonLines(proc) };
}

/** The source host dies: the tool, its fence and the container killed. */
async function killSource(rep: ReturnType<typeof start>): Promise<void> {
  rep.proc.kill('SIGKILL');
  await rep.proc;
  await sh(['pkill', '-KILL', '-f', `runc-migrate-fence .*${h.srcRoot}`], { reject: false });
  await sh(['runc', '--root', h.srcRoot, 'kill', WEB, 'KILL'], { reject: false });
  await waitFor('the source copy to stop', async () => (await status(h.srcRoot, WEB)) !== 'running');
  await sh(['runc', '--root', h.srcRoot, 'delete', '--force', WEB], { reject: false });
  fs.rmSync(path.join(INTENT_DIR, `${WEB}.lock`), { force: true });
  for (const d of fs.readdirSync('/dev/shm').filter((f) => f.startsWith('runc-migrate-replica.')))
    fs.rmSync(`/dev/shm/${d}`, { recursive: true, force: true });
}

/** Replicates WEB until its first complete checkpoint, then the source dies; returns the count checkpointed. */
async function replicatedThenDead(): Promise<number> {
  await removeEverywhere(h, WEB);
  fs.rmSync(path.join(REPLICAS, WEB), { recursive: true, force: true });
  const b = await startExample(h, 'counter', WEB, { dstRootfs: false });
  await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
  const rep = start(STANDBY[0]);
  try {
    await waitFor('a complete checkpoint', () => rep.events.some((e) => e.event === 'checkpoint'), 60_000);
  } finally {
    await killSource(rep);
  }
  return Number(rep.events.filter((e) => e.event === 'checkpoint').at(-1)?.seq);
}

test("README's examples are the ones run here", () => {
  assert.deepEqual(examples('## Using it'), QUICKSTART);
  assert.deepEqual(examples('## A standby: `migrate replicate` and `migrate failover`'), STANDBY);
});

describe("README's quickstart, in its order", { concurrency: false }, () => {
  test(QUICKSTART[0], async () => {
    const b = await startExample(h, 'counter', WEB);
    await waitFor('the counter to count', async () => (await readCounter(b.src)) >= 2);
    const r = await run(QUICKSTART[0]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /runc --root .* restore/);
    assert.equal(await status(h.srcRoot, WEB), 'running');
    assert.equal(await status(h.dstRoot, WEB), 'absent');
  });

  test(QUICKSTART[1], async () => {
    const before = await readCounter(path.join(h.srcBundles, WEB));
    const r = await run(QUICKSTART[1]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /migrated to/);
    assert.equal(await status(h.srcRoot, WEB), 'absent');
    const dst = path.join(h.dstBundles, WEB);
    await waitFor('the count to go on on the destination', async () => (await readCounter(dst)) > before + 1);
  });

  test(QUICKSTART[2], async () => {
    await serviceAddressOnSource(h);
    await startExample(h, 'echo', ECHO);
    const client = echoClient(h, 20);
    await client.connected;
    const r = await run(QUICKSTART[2]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '', 'the report went to report.json');
    const report = JSON.parse(fs.readFileSync(path.join(cwd, 'report.json'), 'utf8')) as {
      outcome: string;
      runningOn: string;
    };
    assert.equal(report.outcome, 'migrated');
    assert.equal(report.runningOn, 'destination');
    // The client kept its connection through the move, every answer in order.
    await stopClient(client);
    assert.equal(await status(h.dstRoot, ECHO), 'running');
    assert.equal(await status(h.srcRoot, ECHO), 'absent');
  });

  test(QUICKSTART[3], async () => {
    const r = await run(QUICKSTART[3]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /nothing to recover/);
    assert.equal(await status(h.dstRoot, WEB), 'running');
    assert.deepEqual(await leftovers(), []);
  });
});

describe("README's standby commands", { concurrency: false }, () => {
  test(`${STANDBY[0]}, the source dies, then: ${STANDBY[1]}`, async () => {
    const seq = await replicatedThenDead();
    // Until the lease expires failover refuses and says how long it has left: wait that.
    let r = await run(STANDBY[1]);
    for (let i = 0; i < 5 && r.code === 3; i++) {
      const left = Number(r.stdout.match(/is fresh for (\d+) s more/)?.[1]);
      assert.ok(left > 0, r.stdout + r.stderr);
      await new Promise((res) => setTimeout(res, left * 1000));
      r = await run(STANDBY[1]);
    }
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { restored: { seq: number } };
    assert.equal(report.restored.seq, seq, 'the newest complete checkpoint');
    const dst = path.join(h.dstBundles, WEB);
    const first = await readCounter(dst);
    await waitFor('the restored count to go on', async () => (await readCounter(dst)) > first);
  });

  test(`${STANDBY[0]}, the source dies, then on the standby: ${STANDBY[2]}`, async () => {
    const seq = await replicatedThenDead();
    const r = await run(STANDBY[2], 60_000);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { restored: { seq: number } };
    assert.equal(report.restored.seq, seq);
    const dst = path.join(h.dstBundles, WEB);
    const first = await readCounter(dst);
    await waitFor('the restored count to go on', async () => (await readCounter(dst)) > first);
    assert.equal(await status(h.srcRoot, WEB), 'absent');
  });
});
