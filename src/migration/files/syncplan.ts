// Which directories follow the container to the destination, and where each lands there:
// its root filesystem, and the bind-mounted volumes the user names. Pure: the bundles'
// config.json texts in, the plan out.
import path from 'node:path';
import { bundleLayout, type BundleMount } from './openfiles.js';

export interface SyncTree {
  /** "rootfs" or "volume /data" (its path in the container), for messages. */
  what: string;
  /** The tree's path inside the container ("/" for the rootfs). */
  containerPath: string;
  /** Its directory on the source host, and on the destination host (or the file: file). */
  src: string;
  dst: string;
  /**
   * A single-file bind mount (set by preflight, which looks at the source): the file is
   * synced, and compared by content in every final delta (no change log watches it).
   */
  file?: boolean;
}

export interface SyncPlan {
  trees: SyncTree[];
  /** The source bundle's bind mounts (where a path of the container lives: destinationOf). */
  mounts: BundleMount[];
  /** Bind mounts that are not synced, and why (listed by preflight). */
  notSynced: Array<{ containerPath: string; source: string; why: string }>;
}

export class SyncPlanError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/** A tree of the container with its place on both hosts, and whether the container mounts it read-only. */
export interface PairedTree {
  containerPath: string;
  src: string;
  dst: string;
  readOnly: boolean;
}

/**
 * The container's rootfs and each bind mount, each paired with where it is on the
 * destination (a bind mount by its path in the container; the source's path when the
 * destination's config has no such mount). dstConfig undefined: the destination gets the
 * source's config. Pure.
 */
export function pairTrees(o: { srcConfig: string; srcBundle: string; dstConfig?: string; dstBundle: string }): {
  rootfs: PairedTree;
  mounts: Array<PairedTree & { mount: BundleMount }>;
} {
  const src = bundleLayout(o.srcConfig, o.srcBundle);
  const dst = bundleLayout(o.dstConfig ?? o.srcConfig, o.dstBundle);
  const c = JSON.parse(o.srcConfig) as {
    root?: { readonly?: boolean };
    mounts?: Array<{ destination?: string; options?: string[] }>;
  } | null;
  const readOnly = (dest: string) =>
    (c?.mounts ?? []).some((m) => m.destination === dest && (m.options ?? []).includes('ro'));
  return {
    rootfs: { containerPath: '/', src: src.rootfs, dst: dst.rootfs, readOnly: !!c?.root?.readonly },
    mounts: src.mounts.map((m) => ({
      containerPath: m.destination,
      src: m.source,
      dst: dst.mounts.find((b) => norm(b.destination) === norm(m.destination))?.source ?? m.source,
      readOnly: readOnly(m.destination),
      mount: m,
    })),
  };
}

const norm = (p: string) => path.normalize(p).replace(/(.)\/+$/, '$1');

/**
 * srcConfig / dstConfig: the bundles' config.json texts (dstConfig undefined when the
 * destination has none yet: it gets the source's). volumes: --sync-volume values, each a
 * bind mount's path in the container or its source directory on the source host.
 */
export function planSync(o: {
  srcConfig: string;
  srcBundle: string;
  dstConfig?: string;
  dstBundle: string;
  rootfs: boolean;
  volumes: string[];
}): SyncPlan {
  const pairs = pairTrees(o);
  const mounts = pairs.mounts.map((p) => p.mount);
  const trees: SyncTree[] = [];
  if (o.rootfs) trees.push({ what: 'rootfs', containerPath: '/', src: pairs.rootfs.src, dst: pairs.rootfs.dst });
  const wanted = new Set<BundleMount>();
  for (const v of o.volumes) {
    const m = mounts.find((b) => norm(b.destination) === norm(v)) ?? mounts.find((b) => norm(b.source) === norm(v));
    if (!m) {
      const list = mounts.map((b) => `${b.destination} (from ${b.source})`).join(', ');
      throw new SyncPlanError(
        `--sync-volume ${v} is not a bind mount of the container`,
        list
          ? `Its bind mounts: ${list}. Name one by its path in the container or on the host.`
          : 'The container has no bind mounts (config.json "mounts").',
      );
    }
    wanted.add(m);
  }
  const notSynced: SyncPlan['notSynced'] = [];
  for (const p of pairs.mounts) {
    const m = p.mount;
    if (!wanted.has(m)) {
      notSynced.push({ containerPath: m.destination, source: m.source, why: 'not asked for (--sync-volume PATH)' });
      continue;
    }
    trees.push({ what: `volume ${m.destination}`, containerPath: m.destination, src: p.src, dst: p.dst });
  }
  for (const t of trees) {
    for (const p of [t.src, t.dst]) {
      if (!path.isAbsolute(p) || norm(p) === '/') {
        throw new SyncPlanError(
          `cannot sync the ${t.what} at "${p}": not an absolute path below /`,
          "Check the bundle's config.json (root.path, mounts).",
        );
      }
    }
  }
  return { trees, mounts, notSynced };
}

/**
 * Where a path inside the container lands on the destination, if it is in a synced tree:
 * under the deepest bind mount that holds it (synced or not), else in the rootfs.
 */
export function destinationOf(plan: SyncPlan, containerPath: string): string | undefined {
  return treePathOf(plan, containerPath, 'dst');
}

/** Where a path on the source host lands on the destination, if it is in one of TREES. */
export function destinationOfHostPath(trees: readonly SyncTree[], p: string): string | undefined {
  const t = trees.find((x) => p === x.src || p.startsWith(x.src.replace(/\/+$/, '') + '/'));
  return t ? path.join(t.dst, path.relative(t.src, p)) : undefined;
}

/** Where a path inside the container is on the source host, if it is in a synced tree. */
export function sourceOf(plan: SyncPlan, containerPath: string): string | undefined {
  return treePathOf(plan, containerPath, 'src');
}

function treePathOf(plan: SyncPlan, containerPath: string, side: 'src' | 'dst'): string | undefined {
  const inside = (p: string, d: string) => {
    const dd = d.replace(/\/+$/, '') || '/';
    return dd === '/' || p === dd || p.startsWith(dd + '/');
  };
  const mount = plan.mounts
    .filter((m) => inside(containerPath, m.destination))
    .sort((a, b) => b.destination.length - a.destination.length)[0];
  const root = mount ? mount.destination : '/';
  const tree = plan.trees.find((t) => path.normalize(t.containerPath) === path.normalize(root));
  if (!tree) return undefined;
  return path.join(tree[side], path.relative(root, containerPath));
}

/**
 * Files whose content may have changed without rsync's size-and-time check seeing it:
 * shared writable file mappings (their pages change in memory with no write(), and the
 * time stamp only on the first write after a writeback) and files open for writing.
 * From /proc/PID/maps text: the paths of "rw?s" mappings.
 */
export function sharedWritableMappings(maps: string): string[] {
  const out = new Set<string>();
  for (const line of maps.split('\n')) {
    const m = line.match(/^\S+\s+(\S{4})\s+\S+\s+\S+\s+\d+\s+(\/.*)$/);
    if (m && m[1][1] === 'w' && m[1][3] === 's' && !m[2].endsWith(' (deleted)')) out.add(m[2]);
  }
  return [...out];
}

/** From /proc/PID/fdinfo/N text: open for writing (O_WRONLY or O_RDWR in flags, octal). */
export function openForWriting(fdinfo: string): boolean {
  const m = fdinfo.match(/^flags:\s*([0-7]+)/m);
  return !!m && (parseInt(m[1], 8) & 3) !== 0;
}
