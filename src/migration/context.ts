// What one migration knows as it goes: the hosts, the options, and facts found on the way.
import type { Host } from '../host.js';
import type { Options } from '../options.js';
import type { Progress } from '../progress.js';
import type { ContainerState, RuncGlobal } from '../runc.js';
import type { SshConnection } from '../ssh/connection.js';
import type { WorkPaths } from './prepare/paths.js';

export type ChosenTransport = 'tls' | 'tunnel' | 'stream' | 'direct';

export interface Context {
  opts: Options;
  progress: Progress;
  /** Shows a command as it runs (--verbose). */
  log: (host: string, line: string) => void;
  src: Host;
  dst: Host;
  ssh: SshConnection;
  srcRunc: RuncGlobal;
  dstRunc: RuncGlobal;
  /** Filled by preflight. */
  state?: ContainerState;
  /** The container's status on the source as preflight saw it ('missing' when runc knows no such container). */
  sourceStatus?: string;
  bundle?: string;
  memoryBytes?: number;
  srcCriuVersion?: string;
  dstCriuVersion?: string;
  moveIp?: { srcDev: string; dstDev: string; arping: string[] };
  /** The destination bundle's config.json, read by the bundle check (undefined: it has none yet). */
  dstBundleConfig?: string;
  /** The source bundle's config.json. */
  srcBundleConfig?: string;
  /** The rootfs and volumes to sync (rootfs.ts); undefined when nothing is synced. */
  files?: import('./files/rootfs.js').FilesSync;
  transport?: ChosenTransport;
  /** Why preflight chose that transport (shown by preflight and --dry-run). */
  transportWhy?: string;
  /** --auto-converge: the container's CPU throttle (throttle.ts). */
  throttle?: import('./pages/throttle.js').Throttle;
  /** --post-copy: the source's address as the destination reaches it (its lazy page server's). */
  sourceAddress?: string;
  /** The TLS transport's certificates for this migration (certs.ts). */
  certs?: import('./pages/certs.js').Certificates;
  /** iterative or one-shot, as decided by the preflight (dirty-memory tracking). */
  mode?: 'iterative' | 'one-shot';
  local?: WorkPaths;
  remote?: WorkPaths;
  /** The final dump's page server on the destination (not with --transport stream). */
  pageServer?: import('./pages/transfer.js').PageServer;
  /** The source was destroyed without a hold: its images are the only copy and must stay. */
  keepImages?: boolean;
  /** The work directories hold what `migrate recover` needs (in doubt), or the only images: cleanups leave them. */
  keepWorkDirs?: boolean;
  /** The destination's work directory, when the clean-up could not remove it (the link is down). */
  remoteLeft?: string;
  /** Migrated with nothing left on the source: the record goes once the clean-up has run (or says what it left). */
  recordDone?: boolean;
  /** The intent record of this migration (intent.ts). */
  intentFile: string;
  /** Undo actions, run last-in first-out on every exit path. */
  cleanups: Array<{ what: string; run: () => Promise<unknown> }>;
}

/** runc on each side as the options name it (criu from PATH unless one was given). */
export function runcOf(opts: Options): { srcRunc: RuncGlobal; dstRunc: RuncGlobal } {
  return {
    srcRunc: { runc: opts.runc, root: opts.runcRoot, criu: opts.criu === 'criu' ? undefined : opts.criu },
    dstRunc: { runc: opts.remoteRunc, root: opts.remoteRuncRoot, criu: opts.remoteCriu === 'criu' ? undefined : opts.remoteCriu },
  };
}
