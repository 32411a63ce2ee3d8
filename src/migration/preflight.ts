// Preflight: the checks a careful operator would run by hand before freezing anything.
// Each check has a title and throws a PreflightError that names the fix. Nothing here
// changes either host except creating the two private work directories, which are
// removed on exit.
import fs from 'node:fs/promises';
import path from 'node:path';
import { compareVersions, criu, MIN_CRIU_VERSION, parseCriuVersion } from '../criu.js';
import { PreflightError } from '../errors.js';
import type { Host } from '../host.js';
import { DEFAULTS } from '../options.js';
import { isNotExist, MIN_RUNC_VERSION, parseMemoryUsage, parseRuncVersion, parseState, runc } from '../runc.js';
import { addr, parseAddrDev, parseRouteDev } from './address.js';
import type { ChosenTransport, Context } from './context.js';
import { workPaths } from './paths.js';

export interface Check {
  title: string;
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

function chooseTransport(ctx: Context): ChosenTransport {
  const t = ctx.opts.transport;
  if (t !== 'auto') return t;
  const mem = ctx.memoryBytes;
  return mem !== undefined && mem < DEFAULTS.autoStreamMaxBytes ? 'stream' : 'page-server';
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
    title: 'container running on the source',
    run: async (ctx) => {
      const r = await ctx.src.run(runc.state(ctx.srcRunc, ctx.opts.container), { allowFail: true });
      if (r.code !== 0) {
        throw new PreflightError(
          isNotExist(r.stderr)
            ? `no container "${ctx.opts.container}" in runc root ${ctx.opts.runcRoot} on the source`
            : `runc state ${ctx.opts.container} failed on the source: ${r.stderr.trim()}`,
          `List the containers with: runc --root ${ctx.opts.runcRoot} list (or give the right root with --runc-root DIR).`,
        );
      }
      ctx.state = parseState(r.stdout);
      if (ctx.state.status !== 'running') {
        throw new PreflightError(
          `container "${ctx.opts.container}" is ${ctx.state.status}, not running`,
          ctx.state.status === 'paused' ? `Resume it first: runc --root ${ctx.opts.runcRoot} resume ${ctx.opts.container}.` : 'Only a running container can be live-migrated.',
        );
      }
      ctx.bundle = ctx.opts.bundle ?? ctx.state.bundle;
      const mem = await ctx.src.run(runc.stats(ctx.srcRunc, ctx.opts.container), { allowFail: true, timeoutMs: 10_000 });
      ctx.memoryBytes = mem.code === 0 ? parseMemoryUsage(mem.stdout) : undefined;
      ctx.transport = chooseTransport(ctx);
      return `pid ${ctx.state.pid}, bundle ${ctx.state.bundle}`;
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
      ctx.cleanups.push({ what: `remove ${base} on the source`, run: () => fs.rm(base, { recursive: true, force: true }) });
      await fs.mkdir(ctx.local.images, { mode: 0o700 });
      await fs.mkdir(ctx.local.criuWork, { mode: 0o700 });
      return base;
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
    title: 'bundle on the destination',
    run: async (ctx) => {
      const b = ctx.bundle!;
      const r = await ctx.dst.run(['test', '-f', `${b}/config.json`], { allowFail: true });
      if (r.code !== 0) {
        throw new PreflightError(
          `no bundle at ${b} on the destination (${b}/config.json missing)`,
          `Copy the container's bundle (config.json and rootfs, identical to the source's) to ${b} on the destination, or name its path there with --bundle DIR.`,
        );
      }
      return b;
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
      ctx.cleanups.push({ what: `remove ${base} on the destination`, run: () => ctx.dst.run(['rm', '-rf', '--one-file-system', base], { allowFail: true }) });
      await ctx.dst.run(['mkdir', '-m', '0700', p.images, p.criuWork]);
      return base;
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
      ctx.moveIp = { srcDev, dstDev, arping };
      return `${m.address}/${m.prefix}: ${srcDev} -> ${dstDev}`;
    },
  },
  {
    title: 'network lock tool (iptables) on both hosts',
    run: async (ctx) => {
      if (!ctx.opts.tcpEstablished) return 'not needed (--no-tcp-established)';
      for (const h of [ctx.src, ctx.dst]) {
        const r = await h.run(['sh', '-c', 'command -v iptables-restore || command -v nft'], { allowFail: true });
        if (r.code !== 0) {
          throw new PreflightError(
            `neither iptables-restore nor nft is on the ${h.name}: CRIU needs one to lock TCP connections`,
            `Install iptables on the ${h.name}, or migrate without TCP connections (--no-tcp-established).`,
          );
        }
      }
    },
  },
];
