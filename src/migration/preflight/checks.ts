// Preflight: the checks a careful operator would run by hand before freezing anything.
// Each check has a title and throws a PreflightError that names the fix. Nothing here
// changes either host except creating the two private work directories, which are
// removed on exit.
import fs from 'node:fs/promises';
import { statSync } from 'node:fs';
import path from 'node:path';
import { compareVersions, criu, criuHasTls, MIN_CRIU_VERSION, parseCriuVersion } from '../../criu.js';
import { openssl } from '../../openssl.js';
import { PreflightError } from '../../errors.js';
import type { Host } from '../../host.js';
import { DEFAULTS } from '../../options.js';
import { isNotExist, MIN_RUNC_VERSION, parseMemoryUsage, parseRuncVersion, parseState, runc } from '../../runc.js';
import { addr, parseAddrDev, parseRouteDev } from '../network/address.js';
import type { Context } from '../context.js';
import { makeCertificates } from '../pages/certs.js';
import { guardPort, sourceAddressSeen } from '../network/portguard.js';
import { localKeeper, remoteKeeper } from '../prepare/keeper.js';
import { Throttle } from '../pages/throttle.js';
import { workPaths } from '../prepare/paths.js';
import { commandLine, quote } from '../../shell.js';
import { OWNER_FILE, ownerLine, removeStale } from '../prepare/stale.js';
import { bundleLayout, compareFiles, describeMismatch, hostPath, mappedPaths, parseStat, type FileFact } from '../files/openfiles.js';
import { streamDir } from '../pages/transfer.js';
import { FilesSync, sameDirectory } from '../files/rootfs.js';
import { planSync, SyncPlanError } from '../files/syncplan.js';
import { containerPids, taskFiles } from '../files/tasks.js';
import { parseRsyncVersion, MIN_RSYNC_VERSION, rsyncCmd } from '../../rsync.js';
import { chooseMode, chooseTransport, pipeSizeAction } from '../plan/policy.js';

export interface Check {
  title: string;
  /** --force skips it: a failure here is likely, not certain, to break the migration. */
  skippable?: boolean;
  run: (ctx: Context) => Promise<string | void>;
}

async function toolVersion(host: Host, argv: string[], tool: string, flag: string): Promise<string> {
  let r;
  try {
    r = await host.run(argv, { allowFail: true, timeoutMs: 20_000 });
  } catch (err) {
    r = { code: 127, stdout: '', stderr: (err as Error).message };
  }
  if (r.code === 127 || /not found|No such file|ENOENT/i.test(r.stderr) && r.code !== 0) {
    throw new PreflightError(
      `${tool} is not installed on the ${host.name} (${argv[0]} not found)`,
      `Install ${tool} there${tool === 'criu' ? ` (${MIN_CRIU_VERSION} or newer)` : ''}, or give its path with ${flag} PATH.`,
    );
  }
  const v = tool === 'criu' ? parseCriuVersion(r.stdout) : parseRuncVersion(r.stdout);
  if (r.code !== 0 || !v) {
    throw new PreflightError(`${tool} on the ${host.name} did not report its version (${argv.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)})`, `Check the ${tool} installation on the ${host.name}.`);
  }
  const min = tool === 'criu' ? MIN_CRIU_VERSION : MIN_RUNC_VERSION;
  if (compareVersions(v, min) < 0) {
    throw new PreflightError(
      `${tool} ${v} on the ${host.name} is too old: ${min} or newer is needed` +
        (tool === 'criu' ? ' (older CRIU cannot dump TCP/IP sockets on kernels from 6.16)' : ''),
      `Install ${tool} ${min} or newer on the ${host.name}${tool === 'criu' ? ' (Debian: the criu package from unstable; see README "Requirements")' : ''}, or point ${flag} at it.`,
    );
  }
  return v;
}

async function criuCheck(host: Host, bin: string): Promise<string> {
  const r = await host.run([bin, 'check'], { allowFail: true, timeoutMs: 30_000 });
  const out = `${r.stdout}${r.stderr}`;
  if (r.code !== 0 || !/Looks good/.test(out)) {
    const errs = out.split('\n').filter((l) => /Error|error/.test(l)).slice(0, 3).join(' | ');
    throw new PreflightError(
      `criu check failed on the ${host.name}: ${errs || out.trim().split('\n').pop()}`,
      `This kernel lacks features CRIU needs: run criu check there for details (a newer kernel or CRIU may help), or --force to try anyway.`,
    );
  }
  return 'looks good';
}

/**
 * Whether the TLS transport can work: CRIU built with gnutls on both hosts (its --help
 * lists the --tls options only then; no other probe is free of side effects) and openssl
 * on the source to make the certificates.
 */
async function tlsAvailable(ctx: Context): Promise<{ ok: boolean; why?: string }> {
  const o = await ctx.src.run(openssl.version(), { allowFail: true });
  if (o.code !== 0) return { ok: false, why: 'no openssl on the source to make the certificates' };
  for (const [host, bin] of [[ctx.src, ctx.opts.criu], [ctx.dst, ctx.opts.remoteCriu]] as const) {
    const r = await host.run(criu.help(bin), { allowFail: true });
    if (!criuHasTls(r.stdout + r.stderr)) return { ok: false, why: `criu on the ${host.name} was built without TLS (gnutls)` };
  }
  return { ok: true };
}

/**
 * The transport (policy.chooseTransport), with TLS probed only when it would be chosen;
 * for TLS, this migration's certificates are made and installed.
 */
async function settleTransport(ctx: Context): Promise<string> {
  const directRoute = ctx.ssh.remoteAddress !== undefined && !ctx.ssh.endpoint.jumps?.length;
  const facts = { mode: ctx.mode!, memoryBytes: ctx.memoryBytes, directRoute, jumpHosts: ctx.ssh.endpoint.jumps?.map((j) => j.label), streamMaxBytes: DEFAULTS.autoStreamMaxBytes, postCopy: ctx.opts.postCopy };
  let c = chooseTransport(ctx.opts.transport, { ...facts, tls: { ok: true } });
  if (c.transport === 'tls') c = chooseTransport(ctx.opts.transport, { ...facts, tls: await tlsAvailable(ctx) });
  if (c.refuse) throw new PreflightError(c.refuse.message, c.refuse.hint);
  ctx.transport = c.transport;
  ctx.transportWhy = c.why;
  if (ctx.opts.postCopy) ctx.sourceAddress = await sourceAddressSeen(ctx);
  if (ctx.opts.dryRun || c.transport === 'stream') return `${c.transport} (${c.why})`;
  const parts = [
    ctx.opts.postCopy
      ? `tls from ${ctx.sourceAddress}:${ctx.opts.pageServerPort} on the source (${c.why})`
      : c.transport === 'tunnel'
        ? `tunnel (${c.why})`
        : `${c.transport} to ${ctx.ssh.remoteAddress}:${ctx.opts.pageServerPort} (${c.why})`,
  ];
  if (c.transport === 'tls') {
    const certs = ctx.opts.hybrid
      ? await makeCertificates(ctx, [ctx.ssh.remoteAddress!, ctx.sourceAddress!], 'both')
      : ctx.opts.postCopy
        ? await makeCertificates(ctx, ctx.sourceAddress!, 'source')
        : await makeCertificates(ctx, ctx.ssh.remoteAddress!);
    ctx.certs = certs;
    ctx.cleanups.push({ what: 'remove the TLS keys on both hosts', run: () => certs.remove() });
    parts.push('certificates made for this migration');
  }
  const guard = await guardPort(ctx);
  if ('skipped' in guard) {
    ctx.progress.warn(`the page server's port is not closed to other clients (${guard.skipped}): another client reaching it first would make the dump fail (the source then resumes)`);
  } else {
    ctx.cleanups.push({ what: "remove the page server's port rules", run: () => guard.remove() });
    parts.push(guard.describe);
  }
  return parts.join('; ');
}

/**
 * What post-copy needs beyond TLS: userfaultfd for the destination's restore, and pipes
 * of DEFAULTS.lazyPipeMaxBytes on both hosts (raised with --tune-sysctl, and put back on
 * every exit path, the tool's death included).
 */
async function preparePostCopy(ctx: Context): Promise<string> {
  const uffd = await ctx.dst.run(criu.checkFeature(ctx.opts.remoteCriu, 'uffd-noncoop'), { allowFail: true });
  if (uffd.code !== 0) {
    throw new PreflightError(
      `the destination cannot restore lazily: criu check --feature uffd-noncoop fails there (${(uffd.stdout + uffd.stderr).trim().split('\n').pop()})`,
      'Post-copy needs userfaultfd with non-cooperative events (Linux 4.11 or newer, CONFIG_USERFAULTFD, and vm.unprivileged_userfaultfd is not needed as root). Migrate without --post-copy.',
    );
  }
  const needed = DEFAULTS.lazyPipeMaxBytes;
  const notes: string[] = ['userfaultfd on the destination'];
  for (const host of [ctx.src, ctx.dst]) {
    const r = await host.run(['cat', '/proc/sys/fs/pipe-max-size'], { allowFail: true });
    const current = r.code === 0 ? Number(r.stdout.trim()) : undefined;
    const a = pipeSizeAction(Number.isFinite(current) ? current : undefined, needed, ctx.opts.tuneSysctl);
    if ('refuse' in a) {
      throw new PreflightError(`on the ${host.name}, ${a.refuse}`, `Run sysctl -w fs.pipe-max-size=${needed} there (and on the other host), or give --tune-sysctl to have it raised for this migration and put back after.`);
    }
    if ('raise' in a) {
      const set = ['sh', '-c', `echo ${needed} > /proc/sys/fs/pipe-max-size`];
      const back = ['sh', '-c', `echo ${a.from} > /proc/sys/fs/pipe-max-size`];
      const w = await host.run(set, { allowFail: true });
      if (w.code !== 0) throw new PreflightError(`could not raise fs.pipe-max-size on the ${host.name}: ${w.stderr.trim()}`, `Run sysctl -w fs.pipe-max-size=${needed} there yourself.`);
      const keeper = host === ctx.dst ? await remoteKeeper(ctx, 'sysctl-keeper', back) : await localKeeper('sysctl-keeper', back);
      ctx.cleanups.push({ what: `put fs.pipe-max-size back to ${a.from} on the ${host.name}`, run: () => keeper() });
      notes.push(`fs.pipe-max-size raised from ${a.from} to ${needed} on the ${host.name} (put back after)`);
    } else {
      notes.push(`fs.pipe-max-size ${current} on the ${host.name}`);
    }
  }
  return notes.join('; ');
}

async function makeRemoteWorkDir(ctx: Context): Promise<string> {
  const r = await ctx.dst.run(['mktemp', '-d', '-p', ctx.opts.remoteWorkDir, 'runc-migrate.XXXXXXXX'], { allowFail: true });
  if (r.code !== 0) {
    throw new PreflightError(
      `cannot create a work directory in ${ctx.opts.remoteWorkDir} on the destination: ${r.stderr.trim()}`,
      `Make ${ctx.opts.remoteWorkDir} exist and writable there${ctx.opts.sudo ? '' : ' (or use --sudo)'}, or choose another with --remote-work-dir DIR.`,
    );
  }
  return r.stdout.trim();
}

/** The checks, in the order they run. Source checks come first: they need no network. */
export const SOURCE_CHECKS: Check[] = [
  {
    title: 'runc on the source',
    run: async (ctx) => `runc ${await toolVersion(ctx.src, runc.version(ctx.srcRunc), 'runc', '--runc')}`,
  },
  {
    title: 'criu on the source',
    run: async (ctx) => {
      ctx.srcCriuVersion = await toolVersion(ctx.src, criu.version(ctx.opts.criu), 'criu', '--criu');
      return `criu ${ctx.srcCriuVersion}`;
    },
  },
  {
    title: 'criu check on the source',
    skippable: true,
    run: async (ctx) => criuCheck(ctx.src, ctx.opts.criu),
  },
  {
    title: 'container running on the source',
    run: async (ctx) => {
      const r = await ctx.src.run(runc.state(ctx.srcRunc, ctx.opts.container), { allowFail: true });
      if (r.code !== 0) {
        if (isNotExist(r.stderr)) ctx.sourceStatus = 'missing';
        throw new PreflightError(
          isNotExist(r.stderr)
            ? `no container "${ctx.opts.container}" in runc root ${ctx.opts.runcRoot} on the source`
            : `runc state ${ctx.opts.container} failed on the source: ${r.stderr.trim()}`,
          `List the containers with: runc --root ${ctx.opts.runcRoot} list (or give the right root with --runc-root DIR).`,
        );
      }
      ctx.state = parseState(r.stdout);
      ctx.sourceStatus = ctx.state.status;
      if (ctx.state.status !== 'running') {
        throw new PreflightError(
          `container "${ctx.opts.container}" is ${ctx.state.status}, not running`,
          ctx.state.status === 'paused' ? `Resume it first: runc --root ${ctx.opts.runcRoot} resume ${ctx.opts.container}.` : 'Only a running container can be live-migrated.',
        );
      }
      ctx.bundle = ctx.opts.bundle ?? ctx.state.bundle;
      const mem = await ctx.src.run(runc.stats(ctx.srcRunc, ctx.opts.container), { allowFail: true, timeoutMs: 10_000 });
      ctx.memoryBytes = mem.code === 0 ? parseMemoryUsage(mem.stdout) : undefined;
      return `pid ${ctx.state.pid}, bundle ${ctx.state.bundle}`;
    },
  },
  {
    title: 'dirty-memory tracking on the source (pre-copy)',
    run: async (ctx) => {
      const needsProbe = ctx.opts.mode !== 'one-shot' && (!ctx.opts.postCopy || ctx.opts.hybrid) && !(ctx.opts.mode === 'auto' && ctx.opts.transport === 'stream');
      const tracking = needsProbe ? (await ctx.src.run(criu.checkFeature(ctx.opts.criu, 'mem_dirty_track'), { allowFail: true })).code === 0 : undefined;
      const m = chooseMode(ctx.opts.mode, tracking, ctx.opts.transport, ctx.opts.postCopy, ctx.opts.hybrid);
      if (m.refuse && ctx.opts.hybrid) {
        throw new PreflightError(
          'this kernel does not track dirty memory (criu check --feature mem_dirty_track fails): --hybrid cannot pre-copy here',
          'Migrate with --post-copy (no pre-copy), or from a kernel built with CONFIG_MEM_SOFT_DIRTY.',
        );
      }
      if (m.refuse) {
        throw new PreflightError(
          'this kernel does not track dirty memory (criu check --feature mem_dirty_track fails): pre-copy cannot work here',
          'Migrate in one shot (--one-shot, or leave out --iterative), or use a kernel built with CONFIG_MEM_SOFT_DIRTY.',
        );
      }
      if (m.warning) ctx.progress.warn(m.warning);
      ctx.mode = m.mode;
      return m.note;
    },
  },
  {
    title: 'CPU throttle (auto-converge)',
    run: async (ctx) => {
      if (!ctx.opts.autoConverge) return 'not used';
      if (ctx.mode !== 'iterative') {
        throw new PreflightError('--auto-converge needs pre-copy, and this migration is one-shot (the source kernel does not track dirty memory)', 'Leave out --auto-converge, or migrate from a kernel with soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY).');
      }
      const t = await Throttle.locate(ctx.state!.pid);
      if ('refuse' in t) throw new PreflightError(`--auto-converge cannot throttle ${ctx.opts.container}: ${t.refuse}`, 'Leave out --auto-converge, or enable the cpu controller for the container\'s cgroup.');
      ctx.throttle = t;
      ctx.cleanups.push({ what: "lift the container's CPU throttle", run: () => t.lift() });
      return `${t.describe()}; raised only while pre-copy does not converge`;
    },
  },
  {
    title: 'work directory on the source',
    run: async (ctx) => {
      let base: string;
      try {
        base = await fs.mkdtemp(path.join(ctx.opts.workDir, 'runc-migrate.'));
      } catch (err) {
        throw new PreflightError(
          `cannot create a work directory in ${ctx.opts.workDir} on the source: ${(err as Error).message}`,
          'Choose a writable directory with --work-dir DIR (tmpfs, such as /dev/shm, keeps images off disk).',
        );
      }
      ctx.local = workPaths(base);
      ctx.cleanups.push({ what: `remove ${base} on the source`, run: async () => (ctx.keepWorkDirs ? undefined : fs.rm(base, { recursive: true, force: true })) });
      await fs.writeFile(path.join(base, OWNER_FILE), ownerLine());
      await fs.mkdir(ctx.local.images, { mode: 0o700 });
      await fs.mkdir(ctx.local.criuWork, { mode: 0o700 });
      const stale = await removeStale(ctx.src, ctx.opts.workDir, DEFAULTS.intentDir, [base]);
      return stale.length ? `${base}; removed ${stale.length} stale: ${stale.join(' ')}` : base;
    },
  },
];

export const DESTINATION_CHECKS: Check[] = [
  {
    title: 'root on the destination',
    run: async (ctx) => {
      const r = await ctx.dst.run(['id', '-u'], { allowFail: true });
      if (ctx.opts.sudo && r.code !== 0) {
        throw new PreflightError(
          `sudo on the destination did not run without a password: ${r.stderr.trim()}`,
          `Give ${ctx.ssh.endpoint.user} passwordless sudo there (a sudoers line with NOPASSWD), or connect as root.`,
        );
      }
      if (r.stdout.trim() !== '0') {
        throw new PreflightError(
          `the destination user ${ctx.ssh.endpoint.user} is not root: runc restore and criu need root there`,
          'Connect as root, or give a user with passwordless sudo and add --sudo.',
        );
      }
      return ctx.opts.sudo ? `${ctx.ssh.endpoint.user} through sudo` : ctx.ssh.endpoint.user;
    },
  },
  {
    title: 'runc on the destination',
    run: async (ctx) => `runc ${await toolVersion(ctx.dst, runc.version(ctx.dstRunc), 'runc', '--remote-runc')}`,
  },
  {
    title: 'criu on the destination',
    run: async (ctx) => {
      const v = await toolVersion(ctx.dst, criu.version(ctx.opts.remoteCriu), 'criu', '--remote-criu');
      ctx.dstCriuVersion = v;
      if (ctx.srcCriuVersion && compareVersions(v, ctx.srcCriuVersion) < 0) {
        throw new PreflightError(
          `criu ${v} on the destination is older than the source's ${ctx.srcCriuVersion}: it may not read the images`,
          'Install the same or a newer CRIU on the destination.',
        );
      }
      return `criu ${v}`;
    },
  },
  {
    title: 'criu check on the destination',
    skippable: true,
    run: async (ctx) => criuCheck(ctx.dst, ctx.opts.remoteCriu),
  },
  {
    title: 'bundle on the destination',
    run: async (ctx) => {
      const b = ctx.bundle!;
      const r = await ctx.dst.run(['cat', `${b}/config.json`], { allowFail: true });
      ctx.dstBundleConfig = r.code === 0 ? r.stdout : undefined;
      if (r.code === 0) return b;
      if (!ctx.opts.syncRootfs) {
        throw new PreflightError(
          `no bundle at ${b} on the destination (${b}/config.json missing)`,
          `Copy the container's bundle (config.json and rootfs, identical to the source's) to ${b} on the destination, name its path there with --bundle DIR, or let the tool sync it (leave out --no-sync-rootfs).`,
        );
      }
      // The sync makes it, from the source's config.json and rootfs; it never fills a
      // directory that holds something else.
      const ls = await ctx.dst.run(['sh', '-c', '[ ! -e "$1" ] || [ -d "$1" ] && [ -z "$(ls -A "$1")" ]', 'sh', b], { allowFail: true });
      if (ls.code !== 0) {
        throw new PreflightError(
          `${b} on the destination is not a bundle (no config.json) and not empty: the tool will not sync into it`,
          `Remove it there if it is stale, or name the bundle's path on the destination with --bundle DIR.`,
        );
      }
      return `${b}: none yet, made from the source's by the sync`;
    },
  },
  {
    title: 'container name free on the destination',
    run: async (ctx) => {
      const r = await ctx.dst.run(runc.state(ctx.dstRunc, ctx.opts.container), { allowFail: true });
      if (r.code === 0) {
        const s = parseState(r.stdout);
        throw new PreflightError(
          `a container named "${ctx.opts.container}" already exists on the destination (${s.status}) in runc root ${ctx.opts.remoteRuncRoot}`,
          `Remove it there (runc --root ${ctx.opts.remoteRuncRoot} delete --force ${ctx.opts.container}) if it is stale, or migrate into another runc root with --remote-runc-root DIR.`,
        );
      }
      if (!isNotExist(r.stderr)) {
        const denied = /permission denied/i.test(r.stderr);
        throw new PreflightError(
          `runc state on the destination failed: ${r.stderr.trim()}`,
          denied && !ctx.opts.sudo
            ? `The remote user cannot use runc's root ${ctx.opts.remoteRuncRoot}: connect as root, or give a user with passwordless sudo and --sudo.`
            : `Check runc's root ${ctx.opts.remoteRuncRoot} there (--remote-runc-root DIR).`,
        );
      }
    },
  },
  {
    title: 'work directory on the destination',
    run: async (ctx) => {
      const base = await makeRemoteWorkDir(ctx);
      const p = workPaths(base);
      ctx.remote = p;
      ctx.cleanups.push({
        what: `remove ${base} on the destination`,
        run: async () => {
          if (ctx.keepWorkDirs) return;
          try {
            await ctx.dst.run(['rm', '-rf', '--one-file-system', base], { allowFail: true });
          } catch (err) {
            ctx.remoteLeft = base;
            throw err;
          }
        },
      });
      await ctx.dst.run(['mkdir', '-m', '0700', p.images, p.criuWork]);
      await ctx.dst.run(['tee', path.join(base, OWNER_FILE)], { input: ownerLine() });
      const stale = await removeStale(ctx.dst, ctx.opts.remoteWorkDir, DEFAULTS.intentDir, [base]);
      return stale.length ? `${base}; removed ${stale.length} stale: ${stale.join(' ')}` : base;
    },
  },
  {
    title: 'page transport',
    run: async (ctx) => settleTransport(ctx),
  },
  {
    title: 'post-copy (lazy pages)',
    run: async (ctx) => (ctx.opts.postCopy ? preparePostCopy(ctx) : 'not used'),
  },
  {
    title: 'files to sync (rootfs, volumes)',
    run: async (ctx) => prepareFilesSync(ctx),
  },
  {
    title: 'storage both hosts share (post-copy)',
    run: async (ctx) => (ctx.opts.postCopy ? checkSharedForPostCopy(ctx) : 'not used'),
  },
  {
    title: 'CPU compatible (criu cpuinfo)',
    skippable: true,
    run: async (ctx) => {
      const L = ctx.local!;
      const R = ctx.remote!;
      const dir = `${L.base}/cpuinfo`;
      await fs.mkdir(dir, { mode: 0o700 });
      await ctx.src.run(criu.cpuinfoDump(ctx.opts.criu, dir));
      const rdir = `${R.base}/cpuinfo`;
      await ctx.dst.run(['mkdir', '-m', '0700', rdir]);
      await streamDir(ctx, dir, rdir);
      const r = await ctx.dst.run(criu.cpuinfoCheck(ctx.opts.remoteCriu, rdir), { allowFail: true });
      if (r.code !== 0) {
        throw new PreflightError(
          `the destination's CPU lacks features the source's has (criu cpuinfo check: ${(r.stderr || r.stdout).trim().split('\n').pop()})`,
          'Migrate to a host with the same or a newer CPU model, or skip this check with --force if you know the container does not use those features.',
        );
      }
    },
  },
  {
    title: 'open files present and equal on the destination',
    skippable: true,
    run: async (ctx) => {
      if (!ctx.dstBundleConfig && !ctx.srcBundleConfig) return 'no bundle config';
      const facts = new Map<string, FileFact>();
      for (const pid of await containerPids(ctx)) {
        const held = taskFiles(pid);
        if (!held) continue; // the process ended
        const paths = new Set([...held.open.map((f) => f.path), ...mappedPaths(held.maps)]);
        for (const p of paths) {
          try {
            const st = statSync(`/proc/${pid}/root${p}`);
            const type = st.isFile() ? 'regular file' : st.isFIFO() ? 'fifo' : st.isDirectory() ? 'directory' : st.isSocket() ? 'socket' : 'other';
            if (type === 'socket' || type === 'other') continue;
            facts.set(p, { path: p, size: type === 'regular file' ? st.size : -1, type });
          } catch {
            /* not reachable from the host */
          }
        }
      }
      // Files in a synced tree will be equal: the final delta runs after the freeze.
      let synced = 0;
      if (ctx.files) {
        for (const p of [...facts.keys()]) {
          if (ctx.files.destinationOf(p)) {
            facts.delete(p);
            synced++;
          }
        }
      }
      if (facts.size === 0) return synced ? `${synced} files, all in synced trees` : 'no files';
      const layout = bundleLayout(ctx.dstBundleConfig ?? ctx.srcBundleConfig!, ctx.bundle!);
      const toHost = (p: string) => hostPath(p, layout.rootfs, layout.mounts);
      const r = await ctx.dst.run(['stat', '-L', '-c', '%s|%F|%n', '--', ...[...facts.keys()].map(toHost)], { allowFail: true });
      const bad = compareFiles(facts, parseStat(r.stdout), toHost);
      if (bad.length) {
        throw new PreflightError(
          `the destination's bundle differs in files the container holds: ${bad.slice(0, 3).map(describeMismatch).join('; ')}${bad.length > 3 ? ` (and ${bad.length - 3} more)` : ''}; the restore would fail`,
          ctx.opts.syncRootfs
            ? `These are in bind mounts the tool does not sync: sync them with --sync-volume PATH, or make them identical on the destination, then run again.`
            : `Make the destination's rootfs and volumes identical to the source's (or leave out --no-sync-rootfs to let the tool sync them), then run again.`,
        );
      }
      return `${facts.size} files${synced ? ` (and ${synced} in synced trees)` : ''}`;
    },
  },
  {
    title: 'room for the images',
    skippable: true,
    run: async (ctx) => {
      const need = (ctx.memoryBytes ?? 0) + DEFAULTS.imageSpaceMarginBytes;
      const sides: Array<[Host, string]> = [[ctx.dst, ctx.remote!.base]];
      if (ctx.transport === 'stream') sides.push([ctx.src, ctx.local!.base]);
      const out: string[] = [];
      for (const [host, dir] of sides) {
        const r = await host.run(['df', '-P', '-B1', dir], { allowFail: true });
        const avail = Number(r.stdout.trim().split('\n').pop()?.split(/\s+/)[3]);
        if (!Number.isFinite(avail)) continue;
        if (avail < need) {
          throw new PreflightError(
            `not enough room for the images on the ${host.name}: ${dir} has ${avail} bytes free, about ${need} needed`,
            `Free space there, or choose another directory with ${host === ctx.src ? '--work-dir' : '--remote-work-dir'} DIR (or --no-diskless for disk).`,
          );
        }
        out.push(`${host.name} ${Math.round(avail / 1048576)} MiB free`);
      }
      return `${Math.round(need / 1048576)} MiB needed; ${out.join(', ')}`;
    },
  },
  {
    title: 'service address',
    run: async (ctx) => {
      const m = ctx.opts.moveIp;
      if (!m) return 'not moved (no --move-ip)';
      const onSrc = await ctx.src.run(addr.showTo(m.address), { allowFail: true });
      const srcDev = m.dev ?? parseAddrDev(onSrc.stdout);
      if (!parseAddrDev(onSrc.stdout) || !srcDev) {
        throw new PreflightError(`--move-ip: ${m.address} is not an address of the source`, 'Give the address the container\'s peers connect to, as configured on the source (ip -4 addr).');
      }
      const onDst = await ctx.dst.run(addr.showTo(m.address), { allowFail: true });
      if (parseAddrDev(onDst.stdout)) {
        throw new PreflightError(`--move-ip: ${m.address} is already configured on the destination`, 'Remove it there first: two hosts must not answer for one address.');
      }
      const local = ctx.ssh.localAddress;
      const route = local ? await ctx.dst.run(addr.routeGet(local), { allowFail: true }) : undefined;
      const dstDev = m.dev ?? (route ? parseRouteDev(route.stdout) : undefined);
      if (!dstDev) throw new PreflightError('--move-ip: cannot tell which interface of the destination should carry the address', 'Name it: --move-ip ADDR/PREFIX@DEV.');
      const probe = await ctx.dst.run(['sh', '-c', 'command -v iptables >/dev/null || exit 3; command -v arping || { command -v busybox >/dev/null && echo busybox; }'], { allowFail: true });
      if (probe.code === 3) throw new PreflightError('--move-ip needs iptables on the destination (to silence a rolled-back copy)', 'Install iptables there.');
      const found = probe.stdout.trim();
      if (!found) throw new PreflightError('--move-ip needs arping on the destination (iputils-arping or busybox)', 'Install iputils-arping (or busybox) there.');
      const arping = found === 'busybox' ? ['busybox', 'arping'] : ['arping'];
      // What an earlier migration that did not finish may have left: a mute for the
      // address, a deaf interface. Either would silence the container after this one.
      const left = await ctx.dst.run(['sh', '-c', `iptables -w -S OUTPUT 2>/dev/null | grep -F -- ${quote(`-s ${m.address}/32 -j DROP`)}; cat ${quote(addr.arpIgnoreFile(dstDev))}`], { allowFail: true });
      const lines = left.stdout.trim().split('\n');
      if (lines.some((l) => l.includes('-j DROP'))) {
        throw new PreflightError(`--move-ip: the destination still drops ${m.address}'s output (left by an unfinished migration)`, `If no migration is running (migrate recover settles one), remove it there: ${commandLine(addr.unblockOutput(m))}`);
      }
      if (lines.at(-1) === '8') {
        throw new PreflightError(`--move-ip: ${dstDev} on the destination answers no ARP (arp_ignore 8, left by an unfinished migration)`, `If no migration is running (migrate recover settles one), set it back there: echo 0 > ${addr.arpIgnoreFile(dstDev)}`);
      }
      ctx.moveIp = { srcDev, dstDev, arping };
      return `${m.address}/${m.prefix}: ${srcDev} -> ${dstDev}`;
    },
  },
  {
    title: 'network lock tool (iptables) on both hosts',
    run: async (ctx) => {
      if (!ctx.opts.tcpEstablished) return 'not needed (--no-tcp-established)';
      for (const h of [ctx.src, ctx.dst]) {
        // CRIU's default network lock (the tool does not change it) runs iptables-restore.
        const r = await h.run(['sh', '-c', 'command -v iptables-restore'], { allowFail: true });
        if (r.code !== 0) {
          throw new PreflightError(
            `iptables-restore is not on the ${h.name}: CRIU needs it to lock TCP connections during the dump and restore`,
            `Install iptables on the ${h.name}, or migrate without TCP connections (--no-tcp-established).`,
          );
        }
      }
    },
  },
];

/**
 * Post-copy: during the lazy window the destination's copy runs while the source can still
 * be resumed. What the copy writes to storage both hosts see stays when a broken window
 * resumes the source, which is then older than its files. Such directories (the rootfs and
 * the writable bind mounts, found as the file sync finds shared storage) are refused
 * unless --post-copy-shared-ok accepts it.
 */
async function checkSharedForPostCopy(ctx: Context): Promise<string> {
  const config = ctx.srcBundleConfig ?? (await fs.readFile(path.join(ctx.state!.bundle, 'config.json'), 'utf8').catch(() => undefined));
  if (!config) return "the source bundle's config.json cannot be read: not checked";
  const src = bundleLayout(config, ctx.state!.bundle);
  const dst = bundleLayout(ctx.dstBundleConfig ?? config, ctx.bundle!);
  const c = JSON.parse(config);
  const readOnly = (dest: string) => (c?.mounts ?? []).some((m: any) => m.destination === dest && (m.options ?? []).includes('ro'));
  const dirs = [{ what: 'rootfs', src: src.rootfs, dst: dst.rootfs, ro: !!c?.root?.readonly }];
  for (const m of src.mounts) dirs.push({ what: `bind mount ${m.destination} (${m.source})`, src: m.source, dst: dst.mounts.find((b) => b.destination === m.destination)?.source ?? m.source, ro: readOnly(m.destination) });
  const shared: string[] = [];
  for (const d of dirs) {
    if (d.ro) continue;
    const st = await fs.stat(d.src).catch(() => undefined);
    if (!st?.isDirectory()) continue; // a single file (resolv.conf...) cannot be told this way
    if (await sameDirectory(ctx, d.src, d.dst)) shared.push(d.what);
  }
  if (!shared.length) return 'none';
  const list = shared.join(', ');
  if (!ctx.opts.postCopySharedOk) {
    throw new PreflightError(
      `post-copy with storage both hosts share: ${list}`,
      "In the lazy window the destination's copy writes there while the source can still be resumed: a broken window resumes a source older than those files. Migrate without --post-copy, or give --post-copy-shared-ok to accept that.",
    );
  }
  ctx.progress.warn(`post-copy with storage both hosts share (${list}): if the lazy window breaks, the source resumes older than what the copy wrote there (--post-copy-shared-ok)`);
  return `shared, accepted: ${list}`;
}

/**
 * The files check: which trees are synced and where they land, rsync on both hosts, and
 * shared storage (the same directory on both hosts is left alone). Sets ctx.files.
 */
async function prepareFilesSync(ctx: Context): Promise<string> {
  const o = ctx.opts;
  if (!o.syncRootfs && o.syncVolumes.length === 0) return 'nothing (--no-sync-rootfs)';
  const srcBundle = ctx.state!.bundle;
  try {
    ctx.srcBundleConfig = await fs.readFile(path.join(srcBundle, 'config.json'), 'utf8');
  } catch (err) {
    throw new PreflightError(`cannot read the source bundle's config.json (${(err as Error).message})`, 'The container\'s bundle must be readable on the source to sync its files; or give --no-sync-rootfs.');
  }
  let plan;
  try {
    plan = planSync({ srcConfig: ctx.srcBundleConfig, srcBundle, dstConfig: ctx.dstBundleConfig, dstBundle: ctx.bundle!, rootfs: o.syncRootfs, volumes: o.syncVolumes });
  } catch (err) {
    if (err instanceof SyncPlanError) throw new PreflightError(err.message, err.hint);
    throw err;
  }
  for (const h of [ctx.src, ctx.dst]) {
    const r = await h.run(rsyncCmd.version(), { allowFail: true });
    const v = r.code === 0 ? parseRsyncVersion(r.stdout) : undefined;
    if (!v || compareVersions(v, MIN_RSYNC_VERSION) < 0) {
      throw new PreflightError(
        v ? `rsync ${v} on the ${h.name} is too old to sync the container's files (${MIN_RSYNC_VERSION} or newer)` : `rsync is not installed on the ${h.name}: it syncs the container's root filesystem`,
        `Install rsync ${MIN_RSYNC_VERSION} or newer there (Debian: apt-get install rsync), or migrate without syncing files (--no-sync-rootfs) if the destination's copy is kept identical another way.`,
      );
    }
  }
  const shared: string[] = [];
  const trees = [];
  for (const t of plan.trees) {
    const st = await fs.stat(t.src).catch(() => undefined);
    // A volume may be a single file (a bind-mounted configuration file, a socket's directory is not).
    const file = t.containerPath !== '/' && !!st?.isFile();
    if (!st?.isDirectory() && !file) {
      throw new PreflightError(`the ${t.what} at ${t.src} on the source is not a directory or a regular file the tool can read`, t.what === 'rootfs' ? 'Give --no-sync-rootfs and copy it yourself.' : `Leave out --sync-volume ${t.containerPath}.`);
    }
    if (file) t.file = true;
    // A file is shared when its directory is.
    if (await sameDirectory(ctx, file ? path.dirname(t.src) : t.src, file ? path.dirname(t.dst) : t.dst)) shared.push(t.what);
    else trees.push(t);
  }
  plan.trees = trees;
  ctx.files = await FilesSync.create(ctx, plan, { shared, srcConfig: ctx.dstBundleConfig ? undefined : ctx.srcBundleConfig, verify: ctx.opts.verifyFiles });
  const parts = trees.map((t) => `${t.what} ${t.src} -> ${t.dst}`);
  if (shared.length) parts.push(`shared storage, left alone: ${shared.join(', ')}`);
  if (plan.notSynced.length) parts.push(`not synced: ${plan.notSynced.map((m) => m.containerPath).join(', ')}`);
  if (plan.notSynced.length) ctx.progress.info(`  bind mounts not synced (the destination's own are used): ${plan.notSynced.map((m) => `${m.containerPath} (${m.source})`).join(', ')}; --sync-volume PATH syncs one`);
  return parts.join('; ') || 'nothing';
}
