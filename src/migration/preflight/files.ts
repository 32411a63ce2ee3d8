// The files' checks: which trees are synced and where they land, rsync on both hosts,
// shared storage (the same directory on both hosts is left alone), and post-copy's rule
// about storage both hosts share.
import fs from 'node:fs/promises';
import path from 'node:path';
import { compareVersions } from '../../criu.js';
import { PreflightError } from '../../errors.js';
import { MIN_RSYNC_VERSION, parseRsyncVersion, rsyncCmd } from '../../rsync.js';
import { sameDirectory } from '../files/rootfs.js';
import { pairTrees, planSync, SyncPlanError, type SyncTree } from '../files/syncplan.js';
import type { Session } from '../session.js';
import type { BundleConfigs, FilesFacts, SourceFacts } from './facts.js';

/** The files check: undefined when nothing is synced (--no-sync-rootfs and no --sync-volume). */
export async function checkFiles(
  s: Session,
  source: SourceFacts,
  bundle: BundleConfigs,
): Promise<{ fact: FilesFacts | undefined; detail: string }> {
  const o = s.opts;
  if (!o.syncRootfs && o.syncVolumes.length === 0) return { fact: undefined, detail: 'nothing (--no-sync-rootfs)' };
  const srcBundle = source.state.bundle;
  const srcConfig = bundle.srcConfig;
  if (srcConfig === undefined) {
    const why = await fs.readFile(path.join(srcBundle, 'config.json'), 'utf8').then(
      () => 'it changed while read',
      (err: Error) => err.message,
    );
    throw new PreflightError(
      `cannot read the source bundle's config.json (${why})`,
      "The container's bundle must be readable on the source to sync its files; or give --no-sync-rootfs.",
    );
  }
  let plan;
  try {
    plan = planSync({
      srcConfig,
      srcBundle,
      dstConfig: bundle.config,
      dstBundle: source.bundle,
      rootfs: o.syncRootfs,
      volumes: o.syncVolumes,
    });
  } catch (err) {
    if (err instanceof SyncPlanError) throw new PreflightError(err.message, err.hint);
    throw err;
  }
  for (const h of [s.src, s.dst]) {
    const r = await h.run(rsyncCmd.version(), { allowFail: true });
    const v = r.code === 0 ? parseRsyncVersion(r.stdout) : undefined;
    if (!v || compareVersions(v, MIN_RSYNC_VERSION) < 0) {
      throw new PreflightError(
        v
          ? `rsync ${v} on the ${h.name} is too old to sync the container's files (${MIN_RSYNC_VERSION} or newer)`
          : `rsync is not installed on the ${h.name}: it syncs the container's root filesystem`,
        `Install rsync ${MIN_RSYNC_VERSION} or newer there (Debian: apt-get install rsync), or migrate without syncing files (--no-sync-rootfs) if the destination's copy is kept identical another way.`,
      );
    }
  }
  const shared: string[] = [];
  const trees: SyncTree[] = [];
  for (const t of plan.trees) {
    const st = await fs.stat(t.src).catch(() => undefined);
    // A volume may be a single file (a bind-mounted configuration file, a socket's directory is not).
    const file = t.containerPath !== '/' && !!st?.isFile();
    if (!st?.isDirectory() && !file) {
      throw new PreflightError(
        `the ${t.what} at ${t.src} on the source is not a directory or a regular file the tool can read`,
        t.what === 'rootfs'
          ? 'Give --no-sync-rootfs and copy it yourself.'
          : `Leave out --sync-volume ${t.containerPath}.`,
      );
    }
    const tree = file ? { ...t, file: true } : t;
    // A file is shared when its directory is.
    if (await sameDirectory(s.dst, file ? path.dirname(t.src) : t.src, file ? path.dirname(t.dst) : t.dst))
      shared.push(t.what);
    else trees.push(tree);
  }
  const parts = trees.map((t) => `${t.what} ${t.src} -> ${t.dst}`);
  if (shared.length) parts.push(`shared storage, left alone: ${shared.join(', ')}`);
  if (plan.notSynced.length) parts.push(`not synced: ${plan.notSynced.map((m) => m.containerPath).join(', ')}`);
  if (plan.notSynced.length)
    s.progress.info(
      `  bind mounts not synced (the destination's own are used): ${plan.notSynced.map((m) => `${m.containerPath} (${m.source})`).join(', ')}; --sync-volume PATH syncs one`,
    );
  return {
    fact: { plan: { ...plan, trees }, shared, srcConfig: bundle.config ? undefined : srcConfig },
    detail: parts.join('; ') || 'nothing',
  };
}

/**
 * Post-copy: during the lazy window the destination's copy runs while the source can still
 * be resumed. What the copy writes to storage both hosts see stays when a broken window
 * resumes the source, which is then older than its files. Such directories (the rootfs and
 * the writable bind mounts, found as the file sync finds shared storage) are refused
 * unless --post-copy-shared-ok accepts it.
 */
export async function checkSharedForPostCopy(s: Session, source: SourceFacts, bundle: BundleConfigs): Promise<string> {
  const config = bundle.srcConfig;
  if (!config) return "the source bundle's config.json cannot be read: not checked";
  const pairs = pairTrees({
    srcConfig: config,
    srcBundle: source.state.bundle,
    dstConfig: bundle.config,
    dstBundle: source.bundle,
  });
  const dirs = [
    { what: 'rootfs', ...pairs.rootfs },
    ...pairs.mounts.map((m) => ({ what: `bind mount ${m.containerPath} (${m.src})`, ...m })),
  ];
  const shared: string[] = [];
  for (const d of dirs) {
    if (d.readOnly) continue;
    const st = await fs.stat(d.src).catch(() => undefined);
    if (!st?.isDirectory()) continue; // a single file (resolv.conf...) cannot be told this way
    if (await sameDirectory(s.dst, d.src, d.dst)) shared.push(d.what);
  }
  if (!shared.length) return 'none';
  const list = shared.join(', ');
  if (!s.opts.postCopySharedOk) {
    throw new PreflightError(
      `post-copy with storage both hosts share: ${list}`,
      "In the lazy window the destination's copy writes there while the source can still be resumed: a broken window resumes a source older than those files. Migrate without --post-copy, or give --post-copy-shared-ok to accept that.",
    );
  }
  s.progress.warn(
    `post-copy with storage both hosts share (${list}): if the lazy window breaks, the source resumes older than what the copy wrote there (--post-copy-shared-ok)`,
  );
  return `shared, accepted: ${list}`;
}
