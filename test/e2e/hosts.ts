// The end-to-end tests' view of the local test hosts (test/hosts/setup.sh): build them,
// start example containers on the source, run the CLI inside the source namespace, and
// look at what runs where. Everything here touches real namespaces, runc and CRIU.
import assert from 'node:assert/strict';
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const HOSTS = path.join(ROOT, 'test/hosts');

export interface Hosts {
  dir: string;
  key: string;
  knownHosts: string;
  srcRoot: string;
  dstRoot: string;
  srcBundles: string;
  dstBundles: string;
  dstAddr: string;
  deadAddr: string;
  serviceAddr: string;
  sudoUser: string;
}

export function readEnv(): Record<string, string> {
  const text = fs.readFileSync(path.join(HOSTS, 'env.sh'), 'utf8');
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^(RM_\w+)=(.*)$/);
    if (!m) continue;
    env[m[1]] = m[2]
      .replace(/\$\{(\w+):-([^}]*)\}/, (_, k, d) => process.env[k] ?? d)
      .replace(/\$\{(\w+)\}/g, (_, k) => env[k] ?? '')
      .replace(/\$(\w+)/g, (_, k) => env[k] ?? '');
  }
  return env;
}

export async function setupHosts(): Promise<Hosts> {
  await execa('bash', [path.join(HOSTS, 'setup.sh')], { stdout: 'ignore' });
  // The locks of tools an earlier run killed (their pids gone): a run takes such a lock
  // over anyway, but the suites that check "nothing left" would count them.
  if (fs.existsSync(INTENT_DIR))
    for (const f of fs.readdirSync(INTENT_DIR).filter((n) => n.endsWith('.lock'))) {
      const pid = Number(fs.readFileSync(path.join(INTENT_DIR, f), 'utf8').split('\n')[0]);
      if (!(pid > 0 && fs.existsSync(`/proc/${pid}`))) fs.rmSync(path.join(INTENT_DIR, f), { force: true });
    }
  const e = readEnv();
  const dir = e.RM_HOSTS_DIR;
  return {
    dir,
    key: `${dir}/keys/id_ed25519`,
    knownHosts: `${dir}/keys/known_hosts`,
    srcRoot: `${dir}/src/runc`,
    dstRoot: `${dir}/dst/runc`,
    srcBundles: `${dir}/src/bundles`,
    dstBundles: `${dir}/dst/bundles`,
    dstAddr: e.RM_DST_ADDR,
    deadAddr: e.RM_DEAD_ADDR,
    serviceAddr: e.RM_SERVICE_ADDR,
    sudoUser: e.RM_SUDO_USER,
  };
}

export const ns = (name: 'src' | 'dst' | 'client') => ['nsenter', `--net=/run/netns/rm-${name}`];

export async function sh(argv: string[], opts: { reject?: boolean } = {}) {
  return execa(argv[0], argv.slice(1), { reject: opts.reject ?? true, stdin: 'ignore' });
}

/** Makes the example bundle on both hosts (different cgroups) and starts it on the source. */
export async function startExample(
  h: Hosts,
  kind: 'counter' | 'echo' | 'redis' | 'files',
  name: string,
  o: { dstRootfs?: boolean } = {},
): Promise<{ src: string; dst: string }> {
  const src = path.join(h.srcBundles, name);
  const dst = path.join(h.dstBundles, name);
  await removeEverywhere(h, name);
  await sh(['bash', path.join(ROOT, 'examples/make-bundle.sh'), kind, src, `/rm-src/${name}`]);
  await sh(['bash', path.join(ROOT, 'examples/make-bundle.sh'), kind, dst, `/rm-dst/${name}`]);
  // Only the destination's config.json (its own cgroup): the sync brings the rootfs.
  if (o.dstRootfs === false) fs.rmSync(path.join(dst, 'rootfs'), { recursive: true, force: true });
  await sh([
    'sh',
    '-c',
    `exec ${ns('src').join(' ')} runc --root ${h.srcRoot} run -d --bundle ${src} ${name} </dev/null >/dev/null 2>&1`,
  ]);
  return { src, dst };
}

/** The lazy-pages daemon's pid on the destination (CRIU itself, not the guard's shell that names it). */
export async function lazyDaemonPid(): Promise<string | undefined> {
  const ps = await sh(['ps', '-eo', 'pid=,comm=,args='], { reject: false });
  const line = ps.stdout
    .split('\n')
    .find((l) => l.includes('lazy-pages --page-server') && l.trim().split(/\s+/)[1] !== 'sh');
  return line?.trim().split(/\s+/)[0];
}

export async function removeEverywhere(h: Hosts, name: string): Promise<void> {
  for (const root of [h.srcRoot, h.dstRoot]) {
    await sh(['runc', '--root', root, 'delete', '--force', name], { reject: false });
  }
}

export async function status(root: string, name: string): Promise<string> {
  const r = await sh(['runc', '--root', root, 'state', name], { reject: false });
  return r.exitCode === 0 ? JSON.parse(r.stdout).status : 'absent';
}

/**
 * The count the example shows in its own /dev/shm (a tmpfs CRIU moves with it), read
 * through /proc/PID/root of the container started from this bundle; NaN if not running.
 */
export async function readCounter(bundle: string): Promise<number> {
  const e = readEnv();
  const side = bundle.startsWith(`${e.RM_HOSTS_DIR}/dst/`) ? 'dst' : 'src';
  const r = await sh(['runc', '--root', `${e.RM_HOSTS_DIR}/${side}/runc`, 'state', path.basename(bundle)], {
    reject: false,
  });
  if (r.exitCode !== 0) return NaN;
  try {
    return Number(fs.readFileSync(`/proc/${JSON.parse(r.stdout).pid}/root/dev/shm/count`, 'utf8').trim());
  } catch {
    return NaN;
  }
}

/** Starts a migration that pauses after the pre-sync; returns it and a release function. */
export async function pausedMigration(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000) {
  const gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rm-gate-')), 'go');
  const run = migrate(args, { RUNC_MIGRATE_PAUSE_AT: `presynced:${gate}`, ...env });
  await waitFor('the pre-sync to finish', () => fs.existsSync(`${gate}.reached`), timeoutMs);
  return { run, release: () => fs.writeFileSync(gate, '') };
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The common flags for the test hosts; tests add or override. */
export function baseArgs(h: Hosts, name: string, bundle: string): string[] {
  return [
    name,
    `root@${h.dstAddr}`,
    '-i',
    h.key,
    '--known-hosts',
    h.knownHosts,
    '--runc-root',
    h.srcRoot,
    '--remote-runc-root',
    h.dstRoot,
    '--bundle',
    bundle,
  ];
}

export async function migrate(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 180_000,
): Promise<CliResult> {
  // RM_MIGRATE_BIN: another build's bin/migrate (the benchmarks' before-and-after runs).
  const bin = process.env.RM_MIGRATE_BIN ?? path.join(ROOT, 'bin/migrate');
  const r = await execa(ns('src')[0], [...ns('src').slice(1), 'node', bin, ...args], {
    reject: false,
    stdin: 'ignore',
    env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home', ...env },
    timeout: timeoutMs,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** TLS key material in any work directory, on either host (they share the file systems). */
export function keyMaterial(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    // A directory a keeper removes meanwhile holds nothing any more.
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && !e.isSymbolicLink()) walk(p);
      if (/\.(key|crt)$/.test(e.name) || e.name === 'tls') found.push(p);
    }
  };
  for (const d of ['/dev/shm', '/var/tmp'])
    for (const f of fs.readdirSync(d)) if (f.startsWith('runc-migrate.')) walk(path.join(d, f));
  return found;
}

/** Leftovers a run must not leave: work directories, page servers. */
export async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  for (const d of ['/dev/shm', '/var/tmp']) {
    for (const f of fs.readdirSync(d)) if (f.startsWith('runc-migrate.')) found.push(path.join(d, f));
  }
  const ps = await sh(
    ['pgrep', '-af', 'criu page-server|criu lazy-pages|hold.sh|runc-migrate\\.|tls-keeper|port-guard|sysctl-keeper'],
    { reject: false },
  );
  for (const l of ps.stdout.split('\n')) if (l.trim() && !l.includes('pgrep')) found.push(`process: ${l.trim()}`);
  // The page server's port rules (portguard.ts), tagged with the work directory's name.
  for (const n of ['src', 'dst'] as const) {
    const rules = await sh([...ns(n), 'iptables', '-w', '-S'], { reject: false });
    for (const l of rules.stdout.split('\n')) if (l.includes('runc-migrate.')) found.push(`rule on ${n}: ${l}`);
  }
  // Links CRIU's config names the hold or the TLS files by.
  if (fs.existsSync('/run/runc-migrate/hold'))
    for (const f of fs.readdirSync('/run/runc-migrate/hold')) found.push(`link: /run/runc-migrate/hold/${f}`);
  // Mounts, here and in the destination sshd's own mount namespace.
  const mountTables = ['/proc/self/mounts'];
  const pid = sshdPid();
  if (pid) mountTables.push(`/proc/${pid}/mounts`);
  for (const t of mountTables) {
    for (const l of fs.readFileSync(t, 'utf8').split('\n'))
      if (/runc-migrate\.|criu\.cgyard|criu\.work|criu-root/.test(l)) found.push(`mount: ${l}`);
  }
  return found;
}

export function sshdPid(): string | undefined {
  const e = readEnv();
  try {
    return fs.readFileSync(`${e.RM_HOSTS_DIR}/dst/run/sshd.pid`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The service address (h.serviceAddr/32) on the source only; the client forgets any other home. */
export async function serviceAddressOnSource(h: Hosts, o: { address?: string; dev?: string } = {}): Promise<void> {
  const svc = `${o.address ?? h.serviceAddr}/32`;
  const dev = o.dev ?? 'eth0';
  await sh(['ip', '-n', 'rm-dst', 'addr', 'del', svc, 'dev', dev], { reject: false });
  await sh(['ip', '-n', 'rm-src', 'addr', 'replace', svc, 'dev', dev]);
  await sh(['ip', '-n', 'rm-client', 'neigh', 'flush', 'all']);
}

/**
 * A client program (node SCRIPT ARGS) in the client namespace; `connected` resolves once
 * it says "connected" on stderr. Stopped with SIGTERM, it prints one JSON line.
 */
export function clientProcess(script: string, args: string[]): { proc: ResultPromise; connected: Promise<void> } {
  const proc = execa(ns('client')[0], [...ns('client').slice(1), 'node', script, ...args], {
    reject: false,
    stdin: 'ignore',
  });
  const connected = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${path.basename(script)} did not connect within 10 s`)), 10_000);
    proc.stderr!.on('data', (d: Buffer) => {
      if (d.toString().includes('connected')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.then((r) => reject(new Error(`${path.basename(script)} ended before connecting: ${r.stderr}`)));
  });
  return { proc, connected };
}

export function echoClient(
  h: Hosts,
  intervalMs = 20,
  address = h.serviceAddr,
): { proc: ResultPromise; connected: Promise<void> } {
  return clientProcess(path.join(ROOT, 'dist/test/e2e/echo-client.js'), [address, '7777', String(intervalMs)]);
}

/** Stops an echo client and checks what it saw: its connection never broke, every answer came back in order. */
export async function stopClient(client: ReturnType<typeof echoClient>) {
  client.proc.kill('SIGTERM');
  const c = await client.proc;
  const result = JSON.parse(String(c.stdout).trim().split('\n').pop()!);
  assert.equal(result.error, undefined);
  assert.equal(result.closedByPeer, false);
  assert.equal(result.inOrder, true);
  assert.ok(result.answered >= result.sent - 5, `answered ${result.answered} of ${result.sent}`);
  return result;
}

/** Where the intent records live on the source. */
export const INTENT_DIR = '/run/runc-migrate';

/** What a finished migration must not leave: CRIU's and our rules, arp_ignore, records, leftovers(). */
export async function hostState(): Promise<string[]> {
  const found: string[] = [];
  for (const ns of ['rm-src', 'rm-dst']) {
    const rules = await sh(['nsenter', `--net=/run/netns/${ns}`, 'iptables', '-w', '-S'], { reject: false });
    for (const l of rules.stdout.split('\n')) if (/0xc114|CRIU|-j DROP/.test(l)) found.push(`${ns} iptables: ${l}`);
    const nft = await sh(['nsenter', `--net=/run/netns/${ns}`, 'nft', 'list', 'tables'], { reject: false });
    for (const l of nft.stdout.split('\n')) if (/CRIU/.test(l)) found.push(`${ns} nft: ${l}`);
  }
  const arp = fs.readFileSync('/proc/sys/net/ipv4/conf/all/arp_ignore', 'utf8').trim();
  const dstArp = await sh(['nsenter', '--net=/run/netns/rm-dst', 'cat', '/proc/sys/net/ipv4/conf/eth0/arp_ignore'], {
    reject: false,
  });
  if (dstArp.stdout.trim() !== '0') found.push(`rm-dst eth0 arp_ignore ${dstArp.stdout.trim()} (all: ${arp})`);
  if (fs.existsSync(INTENT_DIR)) for (const f of fs.readdirSync(INTENT_DIR)) found.push(`intent record ${f}`);
  return [...found, ...(await leftovers())];
}

/** Where the container runs, by the counter moving: a frozen copy does not count. */
export async function whereRunning(name: string, b: { src: string; dst: string }): Promise<string[]> {
  const a = [await readCounter(b.src), await readCounter(b.dst)];
  await new Promise((r) => setTimeout(r, 700));
  const z = [await readCounter(b.src), await readCounter(b.dst)];
  const on: string[] = [];
  if (z[0] > a[0]) on.push('source');
  if (z[1] > a[1]) on.push('destination');
  void name;
  return on;
}

/** A `migrate replicate` run in the source's namespace with --json, and its events as they come. */
export interface Replicating {
  proc: ResultPromise;
  events: Array<Record<string, unknown>>;
  /** Its checkpoint events so far. */
  checkpoints: () => Array<Record<string, unknown>>;
  ended: Promise<CliResult>;
}

/** The JSON objects PROC prints on stdout, one per line (replicate --json's events), as they come. */
export function jsonLines(proc: ResultPromise): Array<Record<string, unknown>> {
  const events: Array<Record<string, unknown>> = [];
  let buf = '';
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  return events;
}

/** Starts `migrate replicate NAME` to the destination (the standby), its replicas in REPLICAS. */
export function replicating(h: Hosts, name: string, replicas: string, extra: string[]): Replicating {
  const proc = execa(
    ns('src')[0],
    [
      ...ns('src').slice(1),
      'node',
      path.join(ROOT, 'bin/migrate'),
      'replicate',
      name,
      `root@${h.dstAddr}`,
      '-i',
      h.key,
      '--known-hosts',
      h.knownHosts,
      '--remote-runc-root',
      h.dstRoot,
      '--replica-dir',
      replicas,
      '--runc-root',
      h.srcRoot,
      '--bundle',
      path.join(h.dstBundles, name),
      '--json',
      ...extra,
    ],
    { reject: false, stdin: 'ignore', env: { SSH_AUTH_SOCK: '', HOME: '/nonexistent-home' } },
  );
  const events = jsonLines(proc);
  const ended = proc.then((r) => ({ code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }));
  return { proc, events, checkpoints: () => events.filter((e) => e.event === 'checkpoint'), ended };
}
