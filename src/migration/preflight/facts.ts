// What the preflight found, read-only: the source's facts (before any connection), the
// destination's (over it). The plan is made from these, and nothing later changes them.
import type { MoveIp } from '../../options.js';
import type { ContainerState } from '../../runc.js';
import type { SyncPlan } from '../files/syncplan.js';

export type ChosenTransport = 'tls' | 'tunnel' | 'stream' | 'direct';

export interface SourceFacts {
  /** The container as runc showed it: running, with its init's pid and bundle. */
  readonly state: ContainerState;
  /** Where the bundle is on the destination: --bundle, or the source's path. */
  readonly bundle: string;
  /** Memory in use (runc events --stats); undefined when runc could not say. */
  readonly memoryBytes?: number;
  readonly criuVersion: string;
  /** Dirty-memory tracking decided it: pre-dumps first, or one freeze for all. */
  readonly mode: 'iterative' | 'one-shot';
  /** --auto-converge: the cgroup file the throttle will write (checked, not yet touched). */
  readonly throttle?: string;
}

/** --move-ip with the interfaces found on each side. */
export interface MoveIpFacts extends MoveIp {
  readonly srcDev: string;
  readonly dstDev: string;
  /** arping on the destination, or busybox's. */
  readonly arping: string[];
  /** arping on the source (for a rollback's give-back), or busybox's. */
  readonly srcArping: string[];
}

/** The files to sync: which trees, where they land, and what is left alone. */
export interface FilesFacts {
  readonly plan: SyncPlan;
  /** Trees on storage both hosts share: left alone. */
  readonly shared: string[];
  /** The source's config.json, to write on the destination when it has no bundle yet. */
  readonly srcConfig?: string;
}

/** fs.pipe-max-size on one host, and whether --tune-sysctl raises it for post-copy. */
export interface PipeSize {
  readonly on: 'source' | 'destination';
  readonly raiseFrom?: number;
}

export interface DestinationFacts {
  readonly criuVersion: string;
  /** The bundle's config.json on the destination; undefined: there is none yet (the sync makes it). */
  readonly bundleConfig?: string;
  /** The source bundle's config.json, when it could be read. */
  readonly srcBundleConfig?: string;
  readonly transport: ChosenTransport;
  readonly transportWhy: string;
  /** The destination's address as this host reaches it (undefined through a jump host or a proxy). */
  readonly address?: string;
  /** Post-copy: the source's address as the destination reaches it (where the lazy page server listens). */
  readonly sourceAddress?: string;
  /** Post-copy: the pipe sizes the lazy transfer needs, on both hosts. */
  readonly pipeSizes: readonly PipeSize[];
  readonly files?: FilesFacts;
  readonly moveIp?: MoveIpFacts;
  /** The destination's work directory punches holes: the restore can free the images as it reads them. */
  readonly punchHoles: boolean;
}

/** The bundles' config.json texts, as the bundle check read them. */
export interface BundleConfigs {
  /** The destination's (undefined: it has none yet; the sync makes it). */
  readonly config?: string;
  /** The source's, when it could be read. */
  readonly srcConfig?: string;
}

export interface Facts {
  readonly source: SourceFacts;
  readonly destination: DestinationFacts;
}

/** A value the plan guarantees (a page server's address under tls or direct...): an internal error when missing. */
export function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`internal: ${what} is missing`);
  return value;
}
