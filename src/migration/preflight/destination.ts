// The destination's checks, over the SSH connection: tools, bundle, name, transport,
// post-copy's needs, the files to sync, the CPU, the open files, room, the service
// address. They change nothing on either host (a probe that writes, such as the shared
// storage marker or the CPU's dump, removes what it wrote before it returns).
import fs from 'node:fs/promises';
import { statSync } from 'node:fs';
import path from 'node:path';
import { compareVersions, criu, criuHasTls } from '../../criu.js';
import { PreflightError } from '../../errors.js';
import type { Host } from '../../host.js';
import { openssl } from '../../openssl.js';
import { DEFAULTS } from '../../options.js';
import { isNotExist, parseState, runc } from '../../runc.js';
import { commandLine, quote } from '../../shell.js';
import {
  bundleLayout,
  compareFiles,
  describeMismatch,
  hostPath,
  mappedPaths,
  parseStat,
  type FileFact,
} from '../files/openfiles.js';
import { containerPids, taskFiles } from '../files/tasks.js';
import { addr, parseAddrDev, parseRouteDev } from '../network/address.js';
import { sourceAddressSeen } from '../network/portguard.js';
import { streamDir } from '../pages/stream.js';
import { OWNER_FILE, ownerLine } from '../prepare/stale.js';
import { chooseTransport, pipeSizeAction } from '../plan/policy.js';
import type { Session } from '../session.js';
import type { BundleConfigs, DestinationFacts, FilesFacts, MoveIpFacts, PipeSize, SourceFacts } from './facts.js';
import { checkFiles, checkSharedForPostCopy } from './files.js';
import { destinationOf } from '../files/syncplan.js';
import type { Checks } from './run.js';
import { criuCheck, kdatProbe, kdatWarning, toolVersion } from './tools.js';

export async function checkDestination(s: Session, source: SourceFacts, checks: Checks): Promise<DestinationFacts> {
  const { opts, dst, ssh } = s;
  await checks.verify('root on the destination', async () => {
    const r = await dst.run(['id', '-u'], { allowFail: true });
    if (opts.sudo && r.code !== 0) {
      throw new PreflightError(
        `sudo on the destination did not run without a password: ${r.stderr.trim()}`,
        `Give ${ssh.endpoint.user} passwordless sudo there (a sudoers line with NOPASSWD), or connect as root.`,
      );
    }
    if (r.stdout.trim() !== '0') {
      throw new PreflightError(
        `the destination user ${ssh.endpoint.user} is not root: runc restore and criu need root there`,
        'Connect as root, or give a user with passwordless sudo and add --sudo.',
      );
    }
    return opts.sudo ? `${ssh.endpoint.user} through sudo` : ssh.endpoint.user;
  });
  await checks.verify(
    'runc on the destination',
    async () => `runc ${await toolVersion(dst, runc.version(s.dstRunc), 'runc', '--remote-runc')}`,
  );
  const criuVersion = await checks.fact('criu on the destination', async () => {
    const v = await toolVersion(dst, criu.version(opts.remoteCriu), 'criu', '--remote-criu');
    if (compareVersions(v, source.criuVersion) < 0) {
      throw new PreflightError(
        `criu ${v} on the destination is older than the source's ${source.criuVersion}: it may not read the images`,
        'Install the same or a newer CRIU on the destination.',
      );
    }
    return { fact: v, detail: `criu ${v}` };
  });
  await checks.verify(
    'criu check on the destination',
    async () => {
      const r = await criuCheck(dst, opts.remoteCriu);
      // criu check has just probed the kernel: whether CRIU kept it decides what the restore pays.
      const k = await dst.run(kdatProbe, { allowFail: true }).catch(() => ({ stdout: 'cached' }));
      const w = kdatWarning(k.stdout, dst.name);
      if (w) s.progress.warn(w);
      return w ? `${r}; kernel probe not cached` : r;
    },
    { skippable: true },
  );
  const bundleConfig = await checks.fact('bundle on the destination', () => checkBundle(s, source));
  await checks.verify('container name free on the destination', () => checkNameFree(s));
  const punchHoles = await checks.fact('work directories on both hosts', () => probeWorkDirs(s));
  const transport = await checks.fact('page transport', () => checkTransport(s, source));
  const pipeSizes = await checks.fact('post-copy (lazy pages)', async () =>
    opts.postCopy ? checkPostCopy(s) : { fact: [] as PipeSize[], detail: 'not used' },
  );
  const files = await checks.fact('files to sync (rootfs, volumes)', () => checkFiles(s, source, bundleConfig));
  await checks.verify('storage both hosts share (post-copy)', async () =>
    opts.postCopy ? checkSharedForPostCopy(s, source, bundleConfig) : 'not used',
  );
  await checks.verify('CPU compatible (criu cpuinfo)', () => checkCpu(s), { skippable: true });
  await checks.verify(
    'open files present and equal on the destination',
    () => checkOpenFiles(s, source, bundleConfig, files),
    { skippable: true },
  );
  await checks.verify('room for the images', () => checkRoom(s, source, transport.transport), { skippable: true });
  const moveIp = await checks.fact('service address', () => checkMoveIp(s));
  await checks.verify('network lock tool (iptables) on both hosts', () => checkNetworkLock(s));
  return {
    criuVersion,
    bundleConfig: bundleConfig.config,
    srcBundleConfig: bundleConfig.srcConfig,
    ...transport,
    pipeSizes,
    files,
    moveIp,
    punchHoles,
  };
}

async function checkBundle(s: Session, source: SourceFacts): Promise<{ fact: BundleConfigs; detail: string }> {
  const b = source.bundle;
  const srcConfig = await fs.readFile(path.join(source.state.bundle, 'config.json'), 'utf8').catch(() => undefined);
  const r = await s.dst.run(['cat', `${b}/config.json`], { allowFail: true });
  if (r.code === 0) return { fact: { config: r.stdout, srcConfig }, detail: b };
  if (!s.opts.syncRootfs) {
    throw new PreflightError(
      `no bundle at ${b} on the destination (${b}/config.json missing)`,
      `Copy the container's bundle (config.json and rootfs, identical to the source's) to ${b} on the destination, name its path there with --bundle DIR, or let the tool sync it (leave out --no-sync-rootfs).`,
    );
  }
  // The sync makes it, from the source's config.json and rootfs; it never fills a
  // directory that holds something else.
  const ls = await s.dst.run(['sh', '-c', '[ ! -e "$1" ] || [ -d "$1" ] && [ -z "$(ls -A "$1")" ]', 'sh', b], {
    allowFail: true,
  });
  if (ls.code !== 0) {
    throw new PreflightError(
      `${b} on the destination is not a bundle (no config.json) and not empty: the tool will not sync into it`,
      "Remove it there if it is stale, or name the bundle's path on the destination with --bundle DIR.",
    );
  }
  return { fact: { srcConfig }, detail: `${b}: none yet, made from the source's by the sync` };
}

async function checkNameFree(s: Session): Promise<void> {
  const { opts } = s;
  const r = await s.dst.run(runc.state(s.dstRunc, opts.container), { allowFail: true });
  if (r.code === 0) {
    const st = parseState(r.stdout);
    throw new PreflightError(
      `a container named "${opts.container}" already exists on the destination (${st.status}) in runc root ${opts.remoteRuncRoot}`,
      `Remove it there (runc --root ${opts.remoteRuncRoot} delete --force ${opts.container}) if it is stale, or migrate into another runc root with --remote-runc-root DIR.`,
    );
  }
  if (isNotExist(r.stderr)) {
    // runc's directory for the name without a container in it (no state.json): runc state
    // says "does not exist", but runc restore would refuse the name.
    const dir = path.posix.join(opts.remoteRuncRoot, opts.container);
    const left = await s.dst.run(['test', '-e', dir], { allowFail: true });
    if (left.code === 0) {
      throw new PreflightError(
        `runc's directory ${dir} exists on the destination with no container in it: runc would refuse the name`,
        `Remove it there if nothing is creating a container of that name right now (rm -rf ${dir}), or migrate into another runc root with --remote-runc-root DIR.`,
      );
    }
    return;
  }
  const denied = /permission denied/i.test(r.stderr);
  throw new PreflightError(
    `runc state on the destination failed: ${r.stderr.trim()}`,
    denied && !opts.sudo
      ? `The remote user cannot use runc's root ${opts.remoteRuncRoot}: connect as root, or give a user with passwordless sudo and --sudo.`
      : `Check runc's root ${opts.remoteRuncRoot} there (--remote-runc-root DIR).`,
  );
}

/**
 * The work directories' parents can take a private directory on each host (made and
 * removed again here). Fact: whether the destination's file system punches
 * holes (CRIU's --auto-dedup needs it: the restore then frees the images as it reads
 * them; where it cannot, the restore leaves them whole rather than fail).
 */
async function probeWorkDirs(s: Session): Promise<{ fact: boolean; detail: string }> {
  const { opts } = s;
  try {
    await fs.rm(await fs.mkdtemp(path.join(opts.workDir, 'runc-migrate.probe.')), { recursive: true });
  } catch (err) {
    throw new PreflightError(
      `cannot create a work directory in ${opts.workDir} on the source: ${(err as Error).message}`,
      'Choose a writable directory with --work-dir DIR (tmpfs, such as /dev/shm, keeps images off disk).',
    );
  }
  const r = await s.dst.run(
    [
      'sh',
      '-c',
      'd=$(mktemp -d -p "$1" runc-migrate.probe.XXXXXXXX) || exit 1; head -c 8192 /dev/zero > "$d/p" 2>/dev/null && fallocate -p -o 0 -l 4096 "$d/p" 2>/dev/null && echo punch; rm -rf "$d"',
      'sh',
      opts.remoteWorkDir,
    ],
    { allowFail: true },
  );
  if (r.code !== 0) {
    throw new PreflightError(
      `cannot create a work directory in ${opts.remoteWorkDir} on the destination: ${r.stderr.trim()}`,
      `Make ${opts.remoteWorkDir} exist and writable there${opts.sudo ? '' : ' (or use --sudo)'}, or choose another with --remote-work-dir DIR.`,
    );
  }
  const punch = r.stdout.includes('punch');
  return {
    fact: punch,
    detail: `${opts.workDir} here, ${opts.remoteWorkDir} there${punch ? '' : ' (no hole punching there: the restore keeps the images whole)'}`,
  };
}

/**
 * Whether the TLS transport can work: CRIU built with gnutls on both hosts (its --help
 * lists the --tls options only then; no other probe is free of side effects) and openssl
 * on the source to make the certificates.
 */
async function tlsAvailable(s: Session): Promise<{ ok: boolean; why?: string }> {
  const o = await s.src.run(openssl.version(), { allowFail: true });
  if (o.code !== 0) return { ok: false, why: 'no openssl on the source to make the certificates' };
  for (const [host, bin] of [
    [s.src, s.opts.criu],
    [s.dst, s.opts.remoteCriu],
  ] as const) {
    const r = await host.run(criu.help(bin), { allowFail: true });
    if (!criuHasTls(r.stdout + r.stderr))
      return { ok: false, why: `criu on the ${host.name} was built without TLS (gnutls)` };
  }
  return { ok: true };
}

/** The transport (policy.chooseTransport), with TLS probed only when it would be chosen. */
async function checkTransport(s: Session, source: SourceFacts) {
  const { opts, ssh } = s;
  const directRoute = ssh.remoteAddress !== undefined && !ssh.endpoint.jumps?.length;
  const facts = {
    mode: source.mode,
    memoryBytes: source.memoryBytes,
    directRoute,
    jumpHosts: ssh.endpoint.jumps?.map((j) => j.label),
    streamMaxBytes: DEFAULTS.autoStreamMaxBytes,
    postCopy: opts.postCopy,
  };
  let c = chooseTransport(opts.transport, { ...facts, tls: { ok: true } });
  if (c.transport === 'tls') c = chooseTransport(opts.transport, { ...facts, tls: await tlsAvailable(s) });
  if (c.refuse) throw new PreflightError(c.refuse.message, c.refuse.hint);
  const sourceAddress = opts.postCopy ? await sourceAddressSeen(s.ssh) : undefined;
  if (opts.postCopy && !sourceAddress)
    throw new PreflightError(
      "post-copy: the source's address as the destination sees it is unknown",
      'Connect to the destination directly (no proxy command), or migrate without --post-copy.',
    );
  const detail = opts.postCopy
    ? `tls from ${sourceAddress}:${opts.pageServerPort} on the source (${c.why})`
    : c.transport === 'tunnel' || c.transport === 'stream'
      ? `${c.transport} (${c.why})`
      : `${c.transport} to ${ssh.remoteAddress}:${opts.pageServerPort} (${c.why})`;
  return {
    fact: {
      transport: c.transport,
      transportWhy: c.why,
      address: directRoute ? ssh.remoteAddress : undefined,
      sourceAddress,
    },
    detail,
  };
}

/**
 * What post-copy needs beyond TLS: userfaultfd for the destination's restore, and pipes
 * of DEFAULTS.lazyPipeMaxBytes on both hosts (raised with --tune-sysctl by the prepare
 * step, and put back on every exit path, the tool's death included).
 */
async function checkPostCopy(s: Session): Promise<{ fact: PipeSize[]; detail: string }> {
  const uffd = await s.dst.run(criu.checkFeature(s.opts.remoteCriu, 'uffd-noncoop'), { allowFail: true });
  if (uffd.code !== 0) {
    throw new PreflightError(
      `the destination cannot restore lazily: criu check --feature uffd-noncoop fails there (${(uffd.stdout + uffd.stderr).trim().split('\n').pop()})`,
      'Post-copy needs userfaultfd with non-cooperative events (Linux 4.11 or newer, CONFIG_USERFAULTFD, and vm.unprivileged_userfaultfd is not needed as root). Migrate without --post-copy.',
    );
  }
  const needed = DEFAULTS.lazyPipeMaxBytes;
  const notes: string[] = ['userfaultfd on the destination'];
  const sizes: PipeSize[] = [];
  for (const [on, host] of [
    ['source', s.src],
    ['destination', s.dst],
  ] as const) {
    const r = await host.run(['cat', '/proc/sys/fs/pipe-max-size'], { allowFail: true });
    const current = r.code === 0 ? Number(r.stdout.trim()) : undefined;
    const a = pipeSizeAction(Number.isFinite(current) ? current : undefined, needed, s.opts.tuneSysctl);
    if ('refuse' in a) {
      throw new PreflightError(
        `on the ${host.name}, ${a.refuse}`,
        `Run sysctl -w fs.pipe-max-size=${needed} there (and on the other host), or give --tune-sysctl to have it raised for this migration and put back after.`,
      );
    }
    if ('raise' in a) {
      sizes.push({ on, raiseFrom: a.from });
      notes.push(
        `fs.pipe-max-size ${a.from} on the ${host.name}: raised to ${needed} for the migration (--tune-sysctl)`,
      );
    } else {
      sizes.push({ on });
      notes.push(`fs.pipe-max-size ${current} on the ${host.name}`);
    }
  }
  return { fact: sizes, detail: notes.join('; ') };
}

/** criu cpuinfo dump here, check there, in temporary directories removed before it returns. */
async function checkCpu(s: Session): Promise<void> {
  // Each with an owner line, as a work directory has: a run killed here leaves them to the next run's stale clean-up.
  const dir = await fs.mkdtemp(path.join(s.opts.workDir, 'runc-migrate.cpuinfo.'));
  let rdir: string | undefined;
  try {
    await fs.writeFile(path.join(dir, OWNER_FILE), ownerLine());
    await s.src.run(criu.cpuinfoDump(s.opts.criu, dir));
    const made = ['sh', '-c', 'd=$(mktemp -d -p "$1" runc-migrate.cpuinfo.XXXXXXXX) && cat > "$d/$2" && echo "$d"'];
    rdir = (await s.dst.run([...made, 'sh', s.opts.remoteWorkDir, OWNER_FILE], { input: ownerLine() })).stdout.trim();
    await streamDir(s, dir, rdir);
    const r = await s.dst.run(criu.cpuinfoCheck(s.opts.remoteCriu, rdir), { allowFail: true });
    if (r.code !== 0) {
      throw new PreflightError(
        `the destination's CPU lacks features the source's has (criu cpuinfo check: ${(r.stderr || r.stdout).trim().split('\n').pop()})`,
        'Migrate to a host with the same or a newer CPU model, or skip this check with --force if you know the container does not use those features.',
      );
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
    if (rdir) await s.dst.run(['rm', '-rf', '--one-file-system', rdir], { allowFail: true }).catch(() => undefined);
  }
}

async function checkOpenFiles(
  s: Session,
  source: SourceFacts,
  bundle: BundleConfigs,
  files: FilesFacts | undefined,
): Promise<string> {
  const config = bundle.config ?? bundle.srcConfig;
  if (!config) return 'no bundle config';
  const facts = new Map<string, FileFact>();
  for (const pid of await containerPids(s, source.state.pid)) {
    const held = taskFiles(pid);
    if (!held) continue; // the process ended
    const paths = new Set([...held.open.map((f) => f.path), ...mappedPaths(held.maps)]);
    for (const p of paths) {
      try {
        const st = statSync(`/proc/${pid}/root${p}`);
        const type = st.isFile()
          ? 'regular file'
          : st.isFIFO()
            ? 'fifo'
            : st.isDirectory()
              ? 'directory'
              : st.isSocket()
                ? 'socket'
                : 'other';
        if (type === 'socket' || type === 'other') continue;
        facts.set(p, { path: p, size: type === 'regular file' ? st.size : -1, type });
      } catch {
        /* not reachable from the host */
      }
    }
  }
  // Files in a synced tree will be equal: the final delta runs after the freeze.
  let synced = 0;
  if (files?.plan.trees.length) {
    for (const p of [...facts.keys()]) {
      if (destinationOf(files.plan, p)) {
        facts.delete(p);
        synced++;
      }
    }
  }
  if (facts.size === 0) return synced ? `${synced} files, all in synced trees` : 'no files';
  const layout = bundleLayout(config, source.bundle);
  const toHost = (p: string) => hostPath(p, layout.rootfs, layout.mounts);
  const r = await s.dst.run(['stat', '-L', '-c', '%s|%F|%n', '--', ...[...facts.keys()].map(toHost)], {
    allowFail: true,
  });
  const bad = compareFiles(facts, parseStat(r.stdout), toHost);
  if (bad.length) {
    throw new PreflightError(
      `the destination's bundle differs in files the container holds: ${bad.slice(0, 3).map(describeMismatch).join('; ')}${bad.length > 3 ? ` (and ${bad.length - 3} more)` : ''}; the restore would fail`,
      s.opts.syncRootfs
        ? 'These are in bind mounts the tool does not sync: sync them with --sync-volume PATH, or make them identical on the destination, then run again.'
        : "Make the destination's rootfs and volumes identical to the source's (or leave out --no-sync-rootfs to let the tool sync them), then run again.",
    );
  }
  return `${facts.size} files${synced ? ` (and ${synced} in synced trees)` : ''}`;
}

/** Room for the images in the work directories' file systems (the source's too when the images are written there first). */
async function checkRoom(s: Session, source: SourceFacts, transport: string): Promise<string> {
  const need = (source.memoryBytes ?? 0) + DEFAULTS.imageSpaceMarginBytes;
  const sides: Array<[Host, string]> = [[s.dst, s.opts.remoteWorkDir]];
  if (transport === 'stream') sides.push([s.src, s.opts.workDir]);
  const out: string[] = [];
  for (const [host, dir] of sides) {
    const r = await host.run(['df', '-P', '-B1', dir], { allowFail: true });
    const avail = Number(r.stdout.trim().split('\n').pop()?.split(/\s+/)[3]);
    if (!Number.isFinite(avail)) continue;
    if (avail < need) {
      throw new PreflightError(
        `not enough room for the images on the ${host.name}: ${dir} has ${avail} bytes free, about ${need} needed`,
        `Free space there, or choose another directory with ${host === s.src ? '--work-dir' : '--remote-work-dir'} DIR (or --no-diskless for disk).`,
      );
    }
    out.push(`${host.name} ${Math.round(avail / 1048576)} MiB free`);
  }
  return `${Math.round(need / 1048576)} MiB needed; ${out.join(', ')}`;
}

async function checkMoveIp(s: Session): Promise<{ fact: MoveIpFacts | undefined; detail: string }> {
  const m = s.opts.moveIp;
  if (!m) return { fact: undefined, detail: 'not moved (no --move-ip)' };
  const onSrc = await s.src.run(addr.showTo(m.address), { allowFail: true });
  const srcDev = m.dev ?? parseAddrDev(onSrc.stdout);
  if (!parseAddrDev(onSrc.stdout) || !srcDev) {
    throw new PreflightError(
      `--move-ip: ${m.address} is not an address of the source`,
      "Give the address the container's peers connect to, as configured on the source (ip -4 addr).",
    );
  }
  // The release of the address and its give-back on a rollback are ordered by a lock (address.ts).
  // util-linux's: the give-back waits at most a few seconds (-w), which busybox's cannot.
  if ((await s.src.run(['flock', '-w', '1', '/dev/null', 'true'], { allowFail: true })).code !== 0)
    throw new PreflightError(
      "--move-ip needs util-linux's flock on the source (busybox's has no -w)",
      'Install util-linux there.',
    );
  const onDst = await s.dst.run(addr.showTo(m.address), { allowFail: true });
  if (parseAddrDev(onDst.stdout)) {
    throw new PreflightError(
      `--move-ip: ${m.address} is already configured on the destination`,
      'Remove it there first: two hosts must not answer for one address.',
    );
  }
  const local = s.ssh.localAddress;
  const route = local ? await s.dst.run(addr.routeGet(local), { allowFail: true }) : undefined;
  const dstDev = m.dev ?? (route ? parseRouteDev(route.stdout) : undefined);
  if (!dstDev)
    throw new PreflightError(
      '--move-ip: cannot tell which interface of the destination should carry the address',
      'Name it: --move-ip ADDR/PREFIX@DEV.',
    );
  // One round trip: iptables (exit 3 without it), then which arping (addr.arpingProbe).
  const probe = await s.dst.run(['sh', '-c', `command -v iptables >/dev/null || exit 3; ${addr.arpingProbe.at(-1)}`], {
    allowFail: true,
  });
  if (probe.code === 3)
    throw new PreflightError(
      '--move-ip needs iptables on the destination (to silence a rolled-back copy)',
      'Install iptables there.',
    );
  const arping = addr.arpingOf(probe.stdout);
  if (!arping)
    throw new PreflightError(
      '--move-ip needs arping on the destination (iputils-arping or busybox)',
      'Install iputils-arping (or busybox) there.',
    );
  // The source announces the address itself when a rollback gives it back: its own arping
  // (best effort: without one, its peers learn the address back when their ARP entry ages).
  const srcArping = addr.arpingOf((await s.src.run(addr.arpingProbe, { allowFail: true })).stdout) ?? ['arping'];
  // What an earlier migration that did not finish may have left: a mute for the
  // address, a deaf interface. Either would silence the container after this one.
  const left = await s.dst.run(
    [
      'sh',
      '-c',
      `iptables -w -S OUTPUT 2>/dev/null | grep -F -- ${quote(`-s ${m.address}/32 -j DROP`)}; cat ${quote(addr.arpIgnoreFile(dstDev))}`,
    ],
    { allowFail: true },
  );
  const lines = left.stdout.trim().split('\n');
  if (lines.some((l) => l.includes('-j DROP'))) {
    throw new PreflightError(
      `--move-ip: the destination still drops ${m.address}'s output (left by an unfinished migration)`,
      `If no migration is running (migrate recover settles one), remove it there: ${commandLine(addr.unblockOutput(m))}`,
    );
  }
  if (lines.at(-1) === '8') {
    throw new PreflightError(
      `--move-ip: ${dstDev} on the destination answers no ARP (arp_ignore 8, left by an unfinished migration)`,
      `If no migration is running (migrate recover settles one), set it back there: echo 0 > ${addr.arpIgnoreFile(dstDev)}`,
    );
  }
  return {
    fact: { ...m, srcDev, dstDev, arping, srcArping },
    detail: `${m.address}/${m.prefix}: ${srcDev} -> ${dstDev}`,
  };
}

async function checkNetworkLock(s: Session): Promise<string | void> {
  if (!s.opts.tcpEstablished) return 'not needed (--no-tcp-established)';
  for (const h of [s.src, s.dst]) {
    // CRIU's default network lock (the tool does not change it) runs iptables-restore.
    const r = await h.run(['sh', '-c', 'command -v iptables-restore'], { allowFail: true });
    if (r.code !== 0) {
      throw new PreflightError(
        `iptables-restore is not on the ${h.name}: CRIU needs it to lock TCP connections during the dump and restore`,
        `Install iptables on the ${h.name}, or migrate without TCP connections (--no-tcp-established).`,
      );
    }
  }
}
