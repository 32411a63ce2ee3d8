// The container's files follow it: its root filesystem (and the volumes the user names)
// are brought to the source's state with rsync through the tool's SSH connection,
//   1. while it runs (the pre-sync: everything, or what changed since an earlier copy),
//   2. once more while it is frozen, after the final dump and before the restore (the
//      final delta: only what changed since; nothing can change during it).
// rsync's size-and-time check misses a change that leaves both alone: a write in the
// same clock tick as the pre-sync read the file, or a page of a shared file mapping
// written in memory. So the destination's copies of such files are marked stale (their
// time set to the epoch) and the final delta compares their contents: files modified
// around the pre-sync (found after it), files mapped shared-writable or open for
// writing by the frozen tasks (found after the freeze).
// A rollback leaves the destination's files synced; the source's are never written.
import fs from 'node:fs/promises';
import crypto from 'node:crypto';
import path from 'node:path';
import { parseRsyncStats, type RsyncFigures } from '../rsync.js';
import type { Context } from './context.js';
import { runRsync, writeBridge } from './rsync-bridge.js';
import { destinationOf, sharedWritableMappings, type SyncPlan, type SyncTree } from './syncplan.js';
import { containerPids, taskFiles } from './tasks.js';

export interface SyncPass {
  ms: number;
  /** rsync's figures, summed over the trees. */
  figures: RsyncFigures;
  /** Destination files marked stale before this pass (their contents compared). */
  marked: number;
}

/** What the report carries about the files. */
export interface FilesReport {
  trees: Array<{ what: string; src: string; dst: string }>;
  /** Trees left alone because both hosts see the same directory (shared storage). */
  shared: string[];
  notSynced: SyncPlan['notSynced'];
  /** The destination's config.json was created from the source's. */
  createdConfig: boolean;
  presync: SyncPass[];
  /** While frozen; its time is part of the downtime. */
  final?: SyncPass;
}

const sum = (a: RsyncFigures, b: RsyncFigures): RsyncFigures => ({
  filesTransferred: a.filesTransferred + b.filesTransferred,
  filesDeleted: a.filesDeleted + b.filesDeleted,
  transferredFileBytes: a.transferredFileBytes + b.transferredFileBytes,
  wireBytes: a.wireBytes + b.wireBytes,
  totalFileBytes: a.totalFileBytes + b.totalFileBytes,
});
const ZERO: RsyncFigures = { filesTransferred: 0, filesDeleted: 0, transferredFileBytes: 0, wireBytes: 0, totalFileBytes: 0 };

/**
 * How long before a presync began a file's last change must lie for its time stamp to
 * prove it unchanged since rsync looked: more than one time-stamp tick (jiffies on older
 * kernels; a second on file systems with whole-second times). A file changed later was
 * changed either after rsync looked (its stamp moved: the quick check sees it) or maybe
 * in the same tick as rsync's look: those are compared by content.
 */
const STAMP_MARGIN_S = 1;

export class FilesSync {
  readonly report: FilesReport;

  constructor(
    private readonly ctx: Context,
    private readonly plan: SyncPlan,
    private readonly o: { shared: string[]; srcConfig?: string; bridge: string },
  ) {
    this.report = { trees: plan.trees.map((t) => ({ what: t.what, src: t.src, dst: t.dst })), shared: o.shared, notSynced: plan.notSynced, createdConfig: !!o.srcConfig, presync: [] };
  }

  get trees(): SyncTree[] {
    return this.plan.trees;
  }

  static async create(ctx: Context, plan: SyncPlan, o: { shared: string[]; srcConfig?: string }): Promise<FilesSync> {
    const bridge = path.join(ctx.local!.base, 'rsync-shell.sh');
    await writeBridge(bridge);
    return new FilesSync(ctx, plan, { ...o, bridge });
  }

  /**
   * One rsync per tree; throws with rsync's words on a failure. running: the container
   * runs (the presync): the destination's directories are made first, and a signal stops it.
   */
  private async rsyncAll(timeoutMs: number, running: boolean): Promise<RsyncFigures> {
    let total = ZERO;
    for (const t of this.plan.trees) {
      if (running) await this.ctx.dst.run(['mkdir', '-p', t.dst]);
      const r = await runRsync(this.ctx, { src: t.src, dst: t.dst, bridge: this.o.bridge, timeoutMs, interruptible: running });
      // 24: files vanished on the source while it ran (only while the container runs).
      if (r.code !== 0 && r.code !== 24) {
        throw new Error(`rsync of the ${t.what} (${t.src} -> ${t.dst}) exited ${r.code}: ${lastLines(r.stderr)}`);
      }
      total = sum(total, parseRsyncStats(r.stdout));
    }
    return total;
  }

  /** Sets the destination's copies of PATHS (destination paths) to the epoch, so the next pass compares their contents. */
  private async markStale(paths: string[]): Promise<number> {
    if (paths.length === 0) return 0;
    const input = paths.map((p) => p + '\0').join('');
    await this.ctx.dst.run(['xargs', '-0', '-r', 'touch', '-c', '-h', '-m', '-d', '@0', '--'], { input, allowFail: true });
    return paths.length;
  }

  /** Files of the source's trees modified since START (seconds since the epoch), as destination paths. */
  private async modifiedSince(startS: number): Promise<string[]> {
    const out: string[] = [];
    for (const t of this.plan.trees) {
      const r = await this.ctx.src.run(['find', t.src, '-xdev', '-type', 'f', '-newermt', `@${Math.floor(startS)}`, '-print0'], { allowFail: true });
      for (const p of r.stdout.split('\0')) if (p) out.push(path.join(t.dst, path.relative(t.src, p)));
    }
    return out;
  }

  /** The pre-sync: the container runs. The first pass also writes the destination's config.json when it has none. */
  async presync(): Promise<SyncPass> {
    const { ctx } = this;
    const t0 = performance.now();
    const startS = Date.now() / 1000;
    if (this.o.srcConfig && this.report.presync.length === 0) {
      const b = ctx.bundle!;
      await ctx.dst.run(['mkdir', '-p', '-m', '0755', b]);
      await ctx.dst.run(['sh', '-c', 'cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', path.join(b, 'config.json')], { input: this.o.srcConfig });
    }
    const figures = await this.rsyncAll(24 * 3600_000, true);
    // Modified from shortly before this pass began: a change within the same tick as
    // rsync's look at the file leaves its time stamp as rsync saw it.
    const marked = await this.markStale(await this.modifiedSince(startS - STAMP_MARGIN_S));
    const pass = { ms: performance.now() - t0, figures, marked };
    this.report.presync.push(pass);
    return pass;
  }

  /** The final delta, while the tasks are frozen: what changed since the pre-sync. */
  async finalDelta(timeoutMs: number): Promise<SyncPass> {
    const t0 = performance.now();
    const marked = await this.markStale(await this.heldForWriting());
    const figures = await this.rsyncAll(timeoutMs, false);
    const pass = { ms: performance.now() - t0, figures, marked };
    this.report.final = pass;
    return pass;
  }

  /** Destination paths of files the container's tasks map shared-writable or hold open for writing. */
  private async heldForWriting(): Promise<string[]> {
    const found = new Set<string>();
    for (const pid of await containerPids(this.ctx)) {
      const held = taskFiles(pid, { writing: true });
      if (!held) continue; // the task is gone
      for (const p of sharedWritableMappings(held.maps)) found.add(p);
      for (const f of held.open) if (f.writing) found.add(f.path);
    }
    return [...found].map((p) => this.destinationOf(p)).filter((d): d is string => d !== undefined);
  }

  /** Where a path inside the container lands on the destination, if it is in a synced tree. */
  destinationOf(containerPath: string): string | undefined {
    return destinationOf(this.plan, containerPath);
  }
}

function lastLines(s: string): string {
  return s.trim().split('\n').slice(-3).join(' | ');
}

/**
 * Whether SRC on the source and DST on the destination are one directory (shared
 * storage): a marker made in SRC is looked for in DST. undefined: SRC cannot be written
 * (read-only), so it cannot be told.
 */
export async function sameDirectory(ctx: Context, src: string, dst: string): Promise<boolean | undefined> {
  const name = `.runc-migrate-shared-${crypto.randomBytes(8).toString('hex')}`;
  try {
    await fs.writeFile(path.join(src, name), '', { flag: 'wx', mode: 0o600 });
  } catch {
    return undefined;
  }
  try {
    const r = await ctx.dst.run(['test', '-e', path.join(dst, name)], { allowFail: true });
    return r.code === 0;
  } finally {
    await fs.rm(path.join(src, name), { force: true });
  }
}
