// Typed, validated options. The only place where defaults live: the CLI's help text,
// the README's flag table and the migration code all read them from here.
import os from 'node:os';
import path from 'node:path';
import { UsageError } from './errors.js';
import { parsePort, parseTarget, withoutSshUrl } from './ssh/target.js';
import { parseThreshold } from './migration/plan/policy.js';
import { leaseMargin } from './migration/replica/lease.js';

export type Transport = 'auto' | 'tls' | 'tunnel' | 'stream' | 'direct';
/** auto: iterative when the source kernel tracks dirty memory, else one-shot with a warning. */
export type Mode = 'auto' | 'iterative' | 'one-shot';
export type PreDumpMode = 'splice' | 'read';
export const PRE_DUMP_MODES: readonly PreDumpMode[] = ['splice', 'read'];
export const TRANSPORTS: readonly Transport[] = ['auto', 'tls', 'tunnel', 'stream', 'direct'];
/** Former names still accepted: page-server is the tunnel's name before 0.3. */
export const TRANSPORT_ALIASES: Readonly<Record<string, Transport>> = { 'page-server': 'tunnel' };

export const DEFAULTS = {
  runcRoot: '/run/runc',
  remoteRuncRoot: '/run/runc',
  runc: 'runc',
  criu: 'criu',
  /** Parent of the private work directories when images stay in memory (--diskless). */
  disklessWorkDir: '/dev/shm',
  /** Parent of the private work directories with --no-diskless. */
  diskWorkDir: '/var/tmp',
  diskless: true,
  transport: 'auto' as Transport,
  pageServerPort: 27027,
  tcpEstablished: true,
  /** The user's known_hosts files when neither --known-hosts nor ssh_config's UserKnownHostsFile names one (OpenSSH's). */
  knownHostsFiles: [path.join(os.homedir(), '.ssh', 'known_hosts'), path.join(os.homedir(), '.ssh', 'known_hosts2')],
  globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
  sshConfig: path.join(os.homedir(), '.ssh', 'config'),
  identityFiles: ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => path.join(os.homedir(), '.ssh', f)),
  connectTimeoutMs: 10_000,
  /**
   * With --transport auto, in one shot: containers using less memory than this are dumped
   * to the work directory and streamed over SSH (no page-server disconnect, which costs
   * about 150 ms); larger ones go to a page server (tls, else tunnel). Measured on the test
   * hosts (bench/results/transport-crossover.md, 2026-11-23): the stream wins at 38 MiB
   * (696 against 733 ms with tls), tls at 72 MiB (808 against 913 ms).
   */
  autoStreamMaxBytes: 48 * 1024 * 1024,
  /** Room asked for on the destination beyond the container's memory use, for the images. */
  imageSpaceMarginBytes: 16 * 1024 * 1024,
  /** The stop rule: switch over once the predicted downtime is at most this (QEMU's default). */
  maxDowntimeMs: 300,
  maxIterations: 8,
  /**
   * How pre-dumps read memory (CRIU's --pre-dump-mode): splice (CRIU's default) drains the
   * dirty pages into pipes while the tasks are frozen; read copies them with
   * process_vm_readv after the tasks run again.
   */
  preDumpMode: 'splice' as PreDumpMode,
  /**
   * How long the frozen source waits for the verdict before resuming by itself (the
   * destination's guard gives up a little earlier): this floor, or twice the time the
   * container's memory takes at holdWorstBytesPerS (copy, then restore), whichever is
   * longer. --hold-timeout overrides it.
   */
  holdFloorS: 60,
  holdWorstBytesPerS: 20 * 1024 * 1024,
  /**
   * The destination's guard gives up this much before the source's hold would resume by
   * itself: its copy is gone before the source can run again (protocol.ts MIN_MARGIN_S is
   * the least of it that must be left once the guard has started).
   */
  guardMarginS: 10,
  /** The guard needs at least this long for the restore and the commit: --hold-timeout is at least guardMarginS more. */
  guardMinS: 5,
  /**
   * Post-copy only: a restored copy must keep running this long before it serves. (Other
   * methods restore the copy stopped and verify it from /proc: no window.)
   */
  lazyVerifyWindowMs: 100,
  /**
   * Post-copy: the least fs.pipe-max-size on both hosts. CRIU's lazy page server asks for
   * 4 MiB pipes; below that the transfer fails and the destination's restore hangs
   * (measured on the test hosts, whose default is 1 MiB).
   */
  lazyPipeMaxBytes: 4 * 1024 * 1024,
  /**
   * Post-copy: the lazy window is cut (the source resumes) once the destination's daemon
   * has read nothing for this long (a silent link, a stuck daemon). A transfer that moves
   * slowly is not cut: in the VMs a container that read all of its 32 MiB right after the
   * restore took a fault round trip per page (about 50 ms under TCG: CRIU's lazy page
   * server corks its answers), and a fixed 60 s limit cut a transfer that was moving.
   */
  lazyStallS: 30,
  /**
   * Post-copy: the window's own limit, from the daemon's start: the memory at this rate
   * (a transfer no slower than one page per 4 ms round trip), never less than the floor.
   */
  lazyWindowFloorS: 300,
  lazyWorstBytesPerS: 1024 * 1024,
  /**
   * Post-copy: the source's watchdog cuts this much later than the destination's guard
   * (its stall limit and its window limit): the guard's daemon is gone first, so the copy
   * it removes is never one that could have been whole.
   */
  lazySourceMarginS: 15,
  /** The container's root filesystem is synced to the destination (rootfs.ts); --no-sync-rootfs turns it off. */
  syncRootfs: true,
  /** Where the intent records of unfinished migrations live on the source (see intent.ts). */
  intentDir: '/run/runc-migrate',
  /** replicate: a checkpoint (and a lease renewal) this often (msc's DUMP_INTERVAL). */
  replicaIntervalMs: 5_000,
  /** replicate: a restorable checkpoint every this many intervals, pre-dumps between, where the kernel tracks dirty memory (msc's CHAIN_LENGTH). */
  replicaChainLength: 3,
  /** replicate: complete checkpoints kept on the standby. */
  replicaKeep: 2,
  /**
   * replicate: the lease lasts this many intervals and leaseSlackMs more: two renewals may
   * be lost before the source freezes, the third must come (the source counts the lease
   * less its margin, lease.ts leaseMargin: 1 s and 2 %).
   */
  leaseIntervals: 3,
  leaseSlackMs: 2_000,
  /** Where the standby keeps replicas: one directory per container. */
  replicaDir: '/var/lib/runc-migrate/replicas',
  /** replicate: the longest a checkpoint may keep the container frozen (its files' sync while frozen) before the dump is abandoned and the container resumes. */
  replicaFreezeLimitS: 30,
} as const;

export interface MoveIp {
  address: string;
  prefix: number;
  dev?: string;
}

export interface Options {
  container: string;
  destination: string;
  identityFiles: string[];
  /** --known-hosts: the one user known_hosts file; undefined: ssh_config's or OpenSSH's defaults. */
  knownHosts?: string;
  sshConfig: string;
  acceptNewHostKey: boolean;
  sudo: boolean;
  runcRoot: string;
  remoteRuncRoot: string;
  /** runc and criu binaries on each side (names looked up in PATH, or paths). */
  runc: string;
  remoteRunc: string;
  criu: string;
  remoteCriu: string;
  /** Destination bundle; undefined: the source bundle's path. */
  bundle?: string;
  diskless: boolean;
  /** Parent directories of the private work directories on each side. */
  workDir: string;
  remoteWorkDir: string;
  transport: Transport;
  mode: Mode;
  maxDowntimeMs: number;
  threshold?: { bytes: number } | { percent: number };
  maxIterations: number;
  preDumpMode: PreDumpMode;
  /** --auto-converge: throttle the container's CPU while pre-copy does not converge. */
  autoConverge: boolean;
  /** --hybrid: pre-copy under the stop rule, then post-copy for what is left (postCopy is set too). */
  hybrid: boolean;
  /** --post-copy: restore at once on the destination, which fetches memory from the frozen source afterwards (CRIU's lazy pages). */
  postCopy: boolean;
  /** --tune-sysctl: raise fs.pipe-max-size where post-copy needs it, and put it back after. */
  tuneSysctl: boolean;
  /** --post-copy-shared-ok: post-copy with storage both hosts share (a broken window resumes a source older than those files). */
  postCopySharedOk: boolean;
  pageServerPort: number;
  tcpEstablished: boolean;
  moveIp?: MoveIp;
  json: boolean;
  quiet: boolean;
  verbose: boolean;
  dryRun: boolean;
  /** recover only: the destination's committed copy is lost; resume the frozen source. */
  resumeSource: boolean;
  /** Skip the preflight checks that can be skipped (CPU, open files, free space, criu check). */
  force: boolean;
  connectTimeoutMs: number;
  /** --hold-timeout: a fixed hold limit in seconds instead of the one derived from the container's size. */
  holdTimeoutS?: number;
  /** Sync the root filesystem to the destination (before and during the freeze). */
  syncRootfs: boolean;
  /** --sync-volume: bind mounts (path in the container or on the host) synced like the rootfs. */
  syncVolumes: string[];
  /** --verify-files: compare the trees after the final delta, while frozen; a difference rolls back. */
  verifyFiles: boolean;
  /** --replica-dir: where replicate keeps replicas on its standby (a migration there starts from this container's). */
  replicaDir: string;
}

/** What commander hands over: strings and booleans as typed. */
export interface RawOptions {
  identity?: string[];
  knownHosts?: string;
  sshConfig?: string;
  acceptNewHostKey?: boolean;
  sudo?: boolean;
  runcRoot?: string;
  remoteRuncRoot?: string;
  runc?: string;
  remoteRunc?: string;
  criu?: string;
  remoteCriu?: string;
  bundle?: string;
  diskless?: boolean;
  workDir?: string;
  remoteWorkDir?: string;
  transport?: string;
  iterative?: boolean;
  oneShot?: boolean;
  maxDowntime?: string;
  threshold?: string;
  maxIterations?: string;
  preDumpMode?: string;
  postCopy?: boolean;
  hybrid?: boolean;
  tuneSysctl?: boolean;
  postCopySharedOk?: boolean;
  autoConverge?: boolean;
  pageServerPort?: string;
  tcpEstablished?: boolean;
  moveIp?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  dryRun?: boolean;
  resumeSource?: boolean;
  force?: boolean;
  connectTimeout?: string;
  holdTimeout?: string;
  syncRootfs?: boolean;
  verifyFiles?: boolean;
  syncVolume?: string[];
  replicaDir?: string;
  /** The flags the user gave (as on the command line, --long), not defaults: to refuse the ones a method ignores. */
  given?: string[];
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;

export function parseMoveIp(spec: string): MoveIp {
  const m = spec.match(/^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})(?:@([A-Za-z0-9_.:-]{1,15}))?$/);
  if (!m || m[1].split('.').some((o) => Number(o) > 255) || Number(m[2]) > 32) {
    throw new UsageError(
      `--move-ip "${spec}" is not ADDR/PREFIX[@DEV]`,
      'Example: --move-ip 10.0.0.10/32 or --move-ip 10.0.0.10/24@eth0 (IPv4).',
    );
  }
  return { address: m[1], prefix: Number(m[2]), dev: m[3] };
}

function absolute(p: string, flag: string): string {
  if (!path.isAbsolute(p)) throw new UsageError(`${flag} "${p}" must be an absolute path`);
  // Logs, messages and the commands' output are read line by line.
  if (/[\n\r]/.test(p)) throw new UsageError(`${flag} must not contain a line break`);
  return path.normalize(p);
}

export function resolveOptions(container: string, destination: string, raw: RawOptions): Options {
  if (!NAME_RE.test(container)) {
    throw new UsageError(`"${container}" is not a valid container name`, 'Use the name shown by `runc list`.');
  }
  // The destination's form, before anything runs (ssh_config is read at connect time).
  parseTarget(destination);
  if (raw.quiet && raw.verbose)
    throw new UsageError('--quiet and --verbose contradict each other', 'Give one of them.');
  const transport = (TRANSPORT_ALIASES[raw.transport ?? ''] ?? raw.transport ?? DEFAULTS.transport) as Transport;
  if (!TRANSPORTS.includes(transport)) {
    throw new UsageError(`--transport "${raw.transport}" is not one of ${TRANSPORTS.join(', ')}`);
  }
  if (raw.iterative && raw.oneShot)
    throw new UsageError(
      '--iterative and --one-shot contradict each other',
      'Give one of them, or neither to let the tool choose.',
    );
  const mode: Mode = raw.iterative || raw.hybrid ? 'iterative' : raw.oneShot ? 'one-shot' : 'auto';
  if (mode === 'iterative' && transport === 'stream') {
    throw new UsageError(
      '--iterative needs a page server: --transport stream cannot pre-copy',
      'Use --transport tls, tunnel or direct (auto chooses one of them for pre-copy).',
    );
  }
  if (raw.hybrid && raw.oneShot) {
    throw new UsageError(
      '--hybrid pre-copies first: it contradicts --one-shot',
      'Give --post-copy for post-copy without pre-copy.',
    );
  }
  if (raw.hybrid && transport !== 'auto' && transport !== 'tls') {
    throw new UsageError(
      `--hybrid needs --transport tls (or auto): its pre-dumps and its lazy pages go over CRIU's TLS`,
      'Leave out --transport, or give --transport tls.',
    );
  }
  // Flags the chosen method would ignore are refused, not dropped silently.
  const given = (flag: string) => raw.given?.includes(flag) ?? false;
  // (Not for recover, whose flags are the migration's own: raw.given is then undefined.)
  const preCopyOnly = raw.given
    ? ['--threshold', '--max-iterations', '--pre-dump-mode', '--max-downtime'].filter(
        (f) => given(f) || (f === '--threshold' && raw.threshold !== undefined),
      )
    : [];
  if (preCopyOnly.length && (mode === 'one-shot' || (raw.postCopy && !raw.hybrid)))
    throw new UsageError(
      `${preCopyOnly.join(', ')} ${preCopyOnly.length > 1 ? 'steer' : 'steers'} pre-copy: ${mode === 'one-shot' ? '--one-shot' : '--post-copy'} makes no pre-dumps, and would ignore ${preCopyOnly.length > 1 ? 'them' : 'it'}`,
      `Leave out ${preCopyOnly.join(', ')}, or migrate with pre-copy (--iterative, or --hybrid with post-copy).`,
    );
  if (raw.given && raw.tuneSysctl && !raw.postCopy && !raw.hybrid)
    throw new UsageError(
      '--tune-sysctl raises the pipe size post-copy needs: without --post-copy or --hybrid it would be ignored',
      'Leave out --tune-sysctl, or add --post-copy.',
    );
  if (raw.autoConverge && (mode === 'one-shot' || (raw.postCopy && !raw.hybrid))) {
    throw new UsageError(
      '--auto-converge throttles the container during pre-copy: it has no use with --one-shot or --post-copy',
      'Leave out --auto-converge, or migrate with pre-copy (--iterative, or the default where the kernel tracks dirty memory).',
    );
  }
  if (raw.postCopy && !raw.hybrid && mode === 'iterative') {
    throw new UsageError(
      '--post-copy and --iterative contradict each other: post-copy restores at once and moves memory after the restore, without pre-copy',
      'Give one of them.',
    );
  }
  if (raw.postCopy && transport !== 'auto' && transport !== 'tls') {
    throw new UsageError(
      `--post-copy needs --transport tls (or auto): the destination fetches pages from the frozen source over CRIU's TLS, the only channel whose breaking CRIU tells from its end`,
      'Leave out --transport, or give --transport tls.',
    );
  }
  const positiveInt = (text: string | undefined, flag: string, dflt: number) => {
    if (text === undefined) return dflt;
    if (!/^\d+$/.test(text) || Number(text) < 1)
      throw new UsageError(`${flag} "${text}" is not a positive whole number`);
    return Number(text);
  };
  const holdTimeout = (s: number) => {
    const least = DEFAULTS.guardMinS + DEFAULTS.guardMarginS;
    if (s < least) {
      throw new UsageError(
        `--hold-timeout ${s} is too short: the destination's guard must give up ${DEFAULTS.guardMarginS} s before the source's hold resumes it, and needs ${DEFAULTS.guardMinS} s itself`,
        `Give --hold-timeout ${least} or more.`,
      );
    }
    return s;
  };
  let threshold: Options['threshold'];
  if (raw.threshold !== undefined) {
    threshold = parseThreshold(raw.threshold);
    if (!threshold)
      throw new UsageError(
        `--threshold "${raw.threshold}" is not a size or a percentage`,
        'Examples: --threshold 16M, --threshold 10%.',
      );
  }
  const diskless = raw.diskless ?? DEFAULTS.diskless;
  const defaultWork = diskless ? DEFAULTS.disklessWorkDir : DEFAULTS.diskWorkDir;
  let connectTimeoutMs: number = DEFAULTS.connectTimeoutMs;
  if (raw.connectTimeout !== undefined) {
    const s = Number(raw.connectTimeout);
    if (!Number.isFinite(s) || s <= 0)
      throw new UsageError(`--connect-timeout "${raw.connectTimeout}" is not a positive number of seconds`);
    connectTimeoutMs = Math.round(s * 1000);
  }
  return {
    container,
    // ssh's URL form is kept as the host it names: records and replicas compare it.
    destination: withoutSshUrl(destination),
    identityFiles: raw.identity?.length ? raw.identity.map((f) => path.resolve(f)) : [],
    knownHosts: raw.knownHosts ? path.resolve(raw.knownHosts) : undefined,
    sshConfig: raw.sshConfig ? path.resolve(raw.sshConfig) : DEFAULTS.sshConfig,
    acceptNewHostKey: raw.acceptNewHostKey ?? false,
    sudo: raw.sudo ?? false,
    runcRoot: absolute(raw.runcRoot ?? DEFAULTS.runcRoot, '--runc-root'),
    remoteRuncRoot: absolute(raw.remoteRuncRoot ?? DEFAULTS.remoteRuncRoot, '--remote-runc-root'),
    runc: raw.runc ?? DEFAULTS.runc,
    remoteRunc: raw.remoteRunc ?? DEFAULTS.runc,
    criu: raw.criu ?? DEFAULTS.criu,
    remoteCriu: raw.remoteCriu ?? DEFAULTS.criu,
    bundle: raw.bundle ? absolute(raw.bundle, '--bundle') : undefined,
    diskless,
    workDir: absolute(raw.workDir ?? defaultWork, '--work-dir'),
    remoteWorkDir: absolute(raw.remoteWorkDir ?? defaultWork, '--remote-work-dir'),
    transport,
    mode,
    maxDowntimeMs: positiveInt(raw.maxDowntime, '--max-downtime', DEFAULTS.maxDowntimeMs),
    threshold,
    maxIterations: positiveInt(raw.maxIterations, '--max-iterations', DEFAULTS.maxIterations),
    preDumpMode: preDumpMode(raw.preDumpMode),
    postCopy: (raw.postCopy ?? false) || (raw.hybrid ?? false),
    hybrid: raw.hybrid ?? false,
    autoConverge: raw.autoConverge ?? false,
    tuneSysctl: raw.tuneSysctl ?? false,
    postCopySharedOk: raw.postCopySharedOk ?? false,
    pageServerPort:
      raw.pageServerPort !== undefined ? parsePort(raw.pageServerPort, '--page-server-port') : DEFAULTS.pageServerPort,
    tcpEstablished: raw.tcpEstablished ?? DEFAULTS.tcpEstablished,
    moveIp: raw.moveIp ? parseMoveIp(raw.moveIp) : undefined,
    json: raw.json ?? false,
    quiet: raw.quiet ?? false,
    verbose: raw.verbose ?? false,
    dryRun: raw.dryRun ?? false,
    resumeSource: raw.resumeSource ?? false,
    force: raw.force ?? false,
    connectTimeoutMs,
    holdTimeoutS:
      raw.holdTimeout !== undefined ? holdTimeout(positiveInt(raw.holdTimeout, '--hold-timeout', 0)) : undefined,
    syncRootfs: raw.syncRootfs ?? DEFAULTS.syncRootfs,
    syncVolumes: (raw.syncVolume ?? []).map((v) => absolute(v, '--sync-volume')),
    verifyFiles: raw.verifyFiles ?? false,
    replicaDir: absolute(raw.replicaDir ?? DEFAULTS.replicaDir, '--replica-dir'),
  };
}

function preDumpMode(raw: string | undefined): PreDumpMode {
  if (raw === undefined) return DEFAULTS.preDumpMode;
  if (!(PRE_DUMP_MODES as readonly string[]).includes(raw))
    throw new UsageError(`--pre-dump-mode "${raw}" is not one of ${PRE_DUMP_MODES.join(', ')}`);
  return raw as PreDumpMode;
}

/** replicate's own options (its connection, runc and files options are a migration's). */
export interface ReplicaOptions {
  intervalMs: number;
  /** Where the kernel tracks dirty memory: a checkpoint every chainLength intervals, pre-dumps between. */
  chainLength: number;
  keep: number;
  leaseMs: number;
  fence: 'freeze' | 'none';
  /** --for: stop by itself after this long. */
  forMs?: number;
  /** The replica's directory on the standby (--replica-dir/CONTAINER). */
  dir: string;
  /** --trigger-socket: the unix datagram socket the container asks through. */
  triggerSocket?: string;
}

/** failover's own options. */
export interface FailoverOptions {
  /** --watch: wait for the lease to expire, then fail over. */
  watch: boolean;
  /** --source HOST: confirm over SSH that the container does not run there (stop it there if it does). */
  source?: string;
  force: boolean;
  dir: string;
}

export interface RawReplicaOptions {
  interval?: string;
  chainLength?: string;
  keep?: string;
  lease?: string;
  fence?: string;
  for?: string;
  replicaDir?: string;
  watch?: boolean;
  source?: string;
  triggerSocket?: string;
}

/** A duration: 500ms, 5s, 2m, 1h, or a number of seconds. */
export function parseDuration(text: string, flag: string): number {
  const m = text.trim().match(/^(\d+(?:\.\d+)?)(ms|s|m|h)?$/);
  if (!m)
    throw new UsageError(
      `${flag} "${text}" is not a duration`,
      'Examples: 500ms, 5s, 2m, 1h (a bare number is seconds).',
    );
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

function count(text: string | undefined, flag: string, fallback: number, least = 1): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < least)
    throw new UsageError(`${flag} "${text}" must be a whole number of at least ${least}`);
  return Number(text);
}

function replicaDirOf(raw: RawReplicaOptions, container: string): string {
  return path.join(absolute(raw.replicaDir ?? DEFAULTS.replicaDir, '--replica-dir'), container);
}

export function resolveReplicaOptions(container: string, raw: RawReplicaOptions): ReplicaOptions {
  const intervalMs =
    raw.interval === undefined ? DEFAULTS.replicaIntervalMs : parseDuration(raw.interval, '--interval');
  if (intervalMs < 1000)
    throw new UsageError(`--interval ${raw.interval} is below 1 s`, 'A checkpoint every second at most.');
  const leaseMs =
    raw.lease === undefined
      ? intervalMs * DEFAULTS.leaseIntervals + DEFAULTS.leaseSlackMs
      : parseDuration(raw.lease, '--lease');
  if (leaseMs < 2 * intervalMs + leaseMargin(leaseMs))
    throw new UsageError(
      `--lease ${leaseMs / 1000}s leaves no room for a lost renewal: it must be at least two intervals and ${leaseMargin(leaseMs)} ms`,
      `Give --lease ${Math.ceil((2 * intervalMs + leaseMargin(leaseMs)) / 1000)}s or more, or a shorter --interval.`,
    );
  const fence = raw.fence ?? 'freeze';
  if (fence !== 'freeze' && fence !== 'none')
    throw new UsageError(
      `--fence "${raw.fence}" is not freeze or none`,
      'freeze (the default) pauses the container when the lease cannot be renewed; none never does.',
    );
  return {
    intervalMs,
    chainLength: count(raw.chainLength, '--chain-length', DEFAULTS.replicaChainLength),
    keep: count(raw.keep, '--keep', DEFAULTS.replicaKeep),
    leaseMs,
    fence,
    forMs: raw.for === undefined ? undefined : parseDuration(raw.for, '--for'),
    dir: replicaDirOf(raw, container),
    triggerSocket: raw.triggerSocket === undefined ? undefined : absolute(raw.triggerSocket, '--trigger-socket'),
  };
}

export function resolveFailoverOptions(
  container: string,
  raw: RawReplicaOptions & { force?: boolean },
): FailoverOptions {
  return { watch: !!raw.watch, source: raw.source, force: !!raw.force, dir: replicaDirOf(raw, container) };
}
