// The container's files follow it: its root filesystem (and the volumes the user names)
// are brought to the source's state with rsync through the tool's SSH connection,
//   1. while it runs (the pre-sync: everything, or what changed since an earlier copy),
//   2. once more while it is frozen, after the final dump and before the restore (the
//      final delta): only the paths the change log (changelog.ts) saw change since the
//      pre-sync began, and the files the frozen tasks map shared-writable or hold open
//      for writing; all compared by content. Its cost grows with what changed, not with
//      the trees. Why that misses nothing: changes.ts.
// Without a change log that holds (no perl, too many directories to watch, a queue
// overflow), the final delta walks the trees instead: rsync's size-and-time check, and
// the contents of every file whose inode changed (ctime) since the pre-sync began, as
// found by a walk while frozen. ctime cannot be set back by a writer, only by a clock
// that steps backwards.
// A rollback leaves the destination's files synced; the source's are never written.
// A replica of the container on the destination (replicate's latest checkpoint, taken
// from this source) is the first pre-sync's basis: its tree is copied into place there
// (cp: holes, hard links and xattrs kept), so rsync sends only what differs; then the
// files whose inode changed since that checkpoint's freeze are sent by content, since a
// rewrite that kept size and time passes rsync's check against the replica's copy.
import fs from 'node:fs/promises';
import crypto from 'node:crypto';
import path from 'node:path';
import fsSync from 'node:fs';
import { comparedDifferences, parseRsyncStats, unsupportedMetadata, type RsyncFigures } from '../../rsync.js';
import { ChangeLog } from './changelog.js';
import { deltaList, type DeltaList, type PathFacts } from './changes.js';
import type { WorkPaths } from '../prepare/paths.js';
import { MarkWatch } from '../prepare/keeper.js';
import type { Undo } from '../prepare/undo.js';
import type { Session } from '../session.js';
import type { Host } from '../../host.js';
import { runRsync, writeBridge, type RsyncHosts, type RsyncJob, type RsyncRun } from './rsync-bridge.js';
import { deltaHead, deltaTar } from '../../filetar.js';
import type { Proc } from '../../host.js';
import { pipeTar } from '../pages/stream.js';
import { destinationOfHostPath, sourceOf, sharedWritableMappings, type SyncPlan, type SyncTree } from './syncplan.js';
import { containerPids, taskFiles } from './tasks.js';

export interface SyncPass {
  ms: number;
  /** rsync's figures, summed over the trees. */
  figures: RsyncFigures;
  /** Destination files marked stale before this pass (their contents compared): the walk's. */
  marked: number;
}

/** The final delta: from the change log (the paths it lists), or a walk of the trees. */
export interface FinalPass extends SyncPass {
  how: 'log' | 'walk';
  /** How the log's paths went: one tar archive (small), or rsync (its delta algorithm, for large files). */
  engine?: 'tar' | 'rsync' | 'none';
  /** Why the change log was not used. */
  why?: string;
  /** Entries sent from the log (paths, and directories sent with their contents). */
  listed?: number;
  /** --verify-files: the trees compared after the delta. */
  verify?: { ms: number; differences: number };
}

/** A replica's tree on the destination that the first pre-sync of the root filesystem starts from. */
export interface FilesBasis {
  /** Its path on the destination. */
  rootfs: string;
  /** When it was the container's tree: its checkpoint's freeze (the source's clock, seconds since the epoch). */
  frozenAtS: number;
}

/** The container's root filesystem among the trees synced (a replica's tree is its basis). */
export const isRootfs = (t: SyncTree) => t.containerPath === '/' && !t.file;

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
  final?: FinalPass;
  /** The change log: directories watched, or why there is none. */
  changeLog?: { watched?: number; lost?: string };
  /** The replica's tree the first pre-sync started from: copied in (seeded: the destination had none), and how many files were sent by content after. */
  basis?: FilesBasis & { seeded: boolean; marked: number };
}

const sum = (a: RsyncFigures, b: RsyncFigures): RsyncFigures => ({
  filesTransferred: a.filesTransferred + b.filesTransferred,
  filesDeleted: a.filesDeleted + b.filesDeleted,
  transferredFileBytes: a.transferredFileBytes + b.transferredFileBytes,
  wireBytes: a.wireBytes + b.wireBytes,
  totalFileBytes: a.totalFileBytes + b.totalFileBytes,
});
const ZERO: RsyncFigures = {
  filesTransferred: 0,
  filesDeleted: 0,
  transferredFileBytes: 0,
  wireBytes: 0,
  totalFileBytes: 0,
};

/**
 * How long before the pre-sync began an inode's last change (ctime) must lie for the walk
 * to leave it to rsync's size-and-time check: more than one time-stamp tick (a jiffy, or a
 * second on file systems with whole-second times). Later ones are compared by content.
 */
const STAMP_MARGIN_S = 1;

/** How long the change log may take to watch every directory (a walk of the trees, while the container runs). */
const LOG_START_MS = 600_000;
/** How long the freeze waits for the log to read its mark back. */
const LOG_DRAIN_MS = 2_000;
/**
 * Up to this many bytes of changed files, the final delta goes as one tar archive; above,
 * through rsync, whose delta algorithm sends only the parts of a file that differ (a
 * database file with a few pages written).
 */
const DELTA_TAR_MAX_BYTES = 64 << 20;

export class FilesSync {
  readonly report: FilesReport;
  private log?: ChangeLog;
  /** When the first pre-sync began (seconds since the epoch, this host's clock). */
  private startS?: number;
  /** The final delta's two ways per directory tree, started after the pre-sync and waiting for their lists. */
  private waiting = new Map<SyncTree, Waiting>();
  /** Started rsyncs and tars that were let go: awaited after the freeze. */
  private ending: Array<Promise<unknown>> = [];
  /**
   * Marks the destination's rsyncs and tar receivers, which read data from their channels
   * and cannot take keepalive lines: one watcher kills them after a silent partition.
   */
  private readonly watch: MarkWatch;

  constructor(
    private readonly ctx: Session,
    /** This host's work directory, the bundle's path on the destination, the container's init. */
    private readonly at: { work: WorkPaths; bundle: string; pid: number },
    private readonly plan: SyncPlan,
    private readonly o: { shared: string[]; srcConfig?: string; bridge: string; verify: boolean; basis?: FilesBasis },
  ) {
    this.watch = new MarkWatch(ctx.dst, () => ctx.ssh);
    this.report = {
      trees: plan.trees.map((t) => ({ what: t.what, src: t.src, dst: t.dst })),
      shared: o.shared,
      notSynced: plan.notSynced,
      createdConfig: !!o.srcConfig,
      presync: [],
    };
  }

  /** The hosts for runRsync, with the mark of this migration's watcher. */
  private get rsyncHosts(): RsyncHosts {
    return { src: this.ctx.src, dst: this.ctx.dst, log: this.ctx.log, watch: this.watch };
  }

  get trees(): SyncTree[] {
    return this.plan.trees;
  }

  /** The directory trees (the change log watches them); single files are compared whole. */
  private get dirTrees(): SyncTree[] {
    return this.plan.trees.filter((t) => !t.file);
  }

  static async create(
    ctx: Session,
    at: { work: WorkPaths; bundle: string; pid: number },
    plan: SyncPlan,
    undo: Undo,
    o: { shared: string[]; srcConfig?: string; verify: boolean; basis?: FilesBasis },
  ): Promise<FilesSync> {
    const bridge = path.join(at.work.base, 'rsync-shell.sh');
    await writeBridge(bridge);
    const f = new FilesSync(ctx, at, plan, { ...o, bridge });
    undo.add('stop the change log and the waiting rsyncs', async () => {
      f.cancelPending();
      await Promise.allSettled(f.ending);
      f.watch.end();
      f.log?.stop();
    });
    return f;
  }

  /**
   * One rsync per tree (of TREES); throws with rsync's words on a failure. running: the
   * container runs (the presync): the destination's directories are made first, and a
   * signal stops it.
   */
  private async rsyncAll(timeoutMs: number, running: boolean, trees = this.plan.trees): Promise<RsyncFigures> {
    let total = ZERO;
    for (const t of trees) {
      if (running) await this.ctx.dst.run(['mkdir', '-p', t.file ? path.dirname(t.dst) : t.dst]);
      // A single file is compared by content in the freeze: nothing watches it.
      const r = await runRsync(this.rsyncHosts, {
        src: t.src,
        dst: t.dst,
        bridge: this.o.bridge,
        timeoutMs,
        interruptible: running,
        file: t.file,
        ignoreTimes: t.file && !running,
      });
      // 24: files vanished on the source while it ran (only while the container runs).
      if (r.code !== 0 && r.code !== 24) {
        const lacking = unsupportedMetadata(r.stderr);
        const err = new Error(
          lacking
            ? `the destination's file system at ${t.dst} does not support the ${lacking.what} the ${t.what}'s files carry (rsync: ${lastLines(r.stderr)})`
            : `rsync of the ${t.what} (${t.src} -> ${t.dst}) exited ${r.code}: ${lastLines(r.stderr)}`,
        );
        throw Object.assign(err, { hint: lacking?.hint });
      }
      total = sum(total, parseRsyncStats(r.stdout));
    }
    return total;
  }

  /**
   * Sends the files PATHS (relative to tree T) compared by content, whatever their size
   * and time stamps (rsync's list mode): a rewrite that kept both is not taken for
   * unchanged, even one whose time is the epoch (reproducible images), which no mark on
   * the destination's copy could tell apart.
   */
  private async sendByContent(
    t: SyncTree,
    paths: string[],
    timeoutMs: number,
    running: boolean,
  ): Promise<RsyncFigures> {
    if (paths.length === 0) return ZERO;
    const r = await runRsync(this.rsyncHosts, {
      src: t.src,
      dst: t.dst,
      bridge: this.o.bridge,
      timeoutMs,
      interruptible: running,
      feed: Promise.resolve(paths.map((p) => `${p}\0`).join('')),
    });
    if (r.code !== 0 && r.code !== 24)
      throw new Error(`rsync of the ${t.what}'s changed files exited ${r.code}: ${lastLines(r.stderr)}`);
    return parseRsyncStats(r.stdout);
  }

  /** Files of tree T on the source whose inode changed (ctime) since START (seconds since the epoch), relative to it. */
  private async changedSince(startS: number, t: SyncTree): Promise<string[]> {
    const r = await this.ctx.src.run(
      ['find', t.src, '-xdev', '-type', 'f', '-newerct', `@${Math.floor(startS)}`, '-printf', '%P\\0'],
      { allowFail: true },
    );
    return r.stdout.split('\0').filter(Boolean);
  }

  /**
   * Seeds the destination's root filesystem from the replica's tree BASIS when it has
   * none yet (cp keeps holes, hard links, ACLs and xattrs; a reflink where the file
   * system can): rsync then finds the files unchanged since and sends only the rest.
   * False when the destination already had a tree (then it is the one rsync starts from).
   */
  private async seed(t: SyncTree, basis: FilesBasis): Promise<boolean> {
    const r = await this.ctx.dst.run(
      [
        'sh',
        '-c',
        'if [ -d "$2" ] && [ -n "$(ls -A "$2")" ]; then echo kept; exit 0; fi; mkdir -p "$2" && cp -a --sparse=always --reflink=auto "$1/." "$2/" && echo seeded',
        'sh',
        basis.rootfs,
        t.dst,
      ],
      { allowFail: true },
    );
    if (r.code !== 0) {
      // A partial copy is only a start: rsync brings the tree to the source's anyway.
      this.ctx.progress.warn(
        `the replica's tree ${basis.rootfs} could not be copied (${lastLines(r.stderr)}): the rootfs is sent whole`,
      );
      return false;
    }
    return r.stdout.trim() === 'seeded';
  }

  /** Starts the change log before the first pre-sync; without one, the final delta walks. */
  private async startLog(): Promise<void> {
    if (this.dirTrees.length === 0) return;
    try {
      this.log = await ChangeLog.start({
        roots: this.dirTrees.map((t) => t.src),
        markDir: path.join(this.at.work.base, 'changelog'),
        timeoutMs: LOG_START_MS,
        log: (l) => this.ctx.log('source', l),
      });
      this.report.changeLog = { watched: this.log.watched };
    } catch (err) {
      const why = (err as Error).message;
      this.report.changeLog = { lost: why };
      this.ctx.progress.warn(
        `no change log of the container's files (${why}): the final delta walks the trees while the container is frozen`,
      );
    }
  }

  /** The pre-sync: the container runs. The first pass also writes the destination's config.json when it has none. */
  async presync(): Promise<SyncPass> {
    const { ctx } = this;
    const t0 = performance.now();
    if (this.report.presync.length === 0) {
      // Before rsync looks at anything: from here on, a change is seen by rsync or logged.
      this.startS = Date.now() / 1000;
      await this.startLog();
    }
    if (this.o.srcConfig && this.report.presync.length === 0) {
      const b = this.at.bundle;
      await ctx.dst.run(['mkdir', '-p', '-m', '0755', b]);
      await ctx.dst.run(['sh', '-c', 'cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', path.join(b, 'config.json')], {
        input: this.o.srcConfig,
      });
    }
    this.cancelPending();
    const basis = this.report.presync.length === 0 ? this.o.basis : undefined;
    const root = this.dirTrees.find(isRootfs);
    const seeded = !!(basis && root && (await this.seed(root, basis)));
    let figures = await this.rsyncAll(24 * 3600_000, true);
    let marked = 0;
    if (basis && root && seeded) {
      // What changed since the replica's freeze (and a margin for the clock's grain) is
      // compared by content: rsync's size-and-time check passed a rewrite that kept both.
      const changed = await this.changedSince(basis.frozenAtS - 2, root);
      figures = sum(figures, await this.sendByContent(root, changed, 24 * 3600_000, true));
      marked = changed.length;
    }
    if (basis) this.report.basis = { ...basis, seeded, marked };
    await this.prestart();
    const pass = { ms: performance.now() - t0, figures, marked };
    this.report.presync.push(pass);
    return pass;
  }

  /**
   * Starts the final delta's two ways for each directory tree, waiting for their lists: a
   * tar archiver here and its receiver on the destination, and an rsync connected to its
   * remote side. Their start-up, tens of milliseconds, is paid now and not in the freeze.
   */
  private async prestart(): Promise<void> {
    if (!this.log || this.log.lost) return;
    for (const t of this.dirTrees) {
      // Marked: killed if the tool's link goes silent while it waits (keeper.ts MarkWatch).
      const receiver = await this.ctx.dst.spawn(this.watch.mark(deltaTar.receiver(t.dst)));
      receiver.stdin.on('error', () => undefined);
      const sender = await this.ctx.src.spawn(deltaTar.create(t.src), { streamStdout: true });
      sender.stdin.on('error', () => undefined);
      let give!: (list: string) => void;
      let cancel!: () => void;
      const feed = new Promise<string>((resolve, reject) => {
        give = resolve;
        cancel = () => reject(new Error('cancelled'));
      });
      feed.catch(() => undefined);
      const job: RsyncJob = { src: t.src, dst: t.dst, bridge: this.o.bridge, timeoutMs: 24 * 3600_000, feed };
      this.waiting.set(t, {
        tar: { sender, receiver },
        rsync: { job, give, cancel, run: runRsync(this.rsyncHosts, job) },
      });
    }
  }

  /** Lets every waiting way go: nothing is written (see letGo). */
  cancelPending(): void {
    for (const w of this.waiting.values()) this.letGo(w);
    this.waiting.clear();
  }

  /**
   * Lets the ways of W go but KEEP: an rsync is killed before it reads a list; a receiver
   * whose input ends before its header exits and changes nothing (the archiver's empty
   * archive goes nowhere).
   */
  private letGo(w: Waiting, keep?: 'tar' | 'rsync'): void {
    if (keep !== 'rsync') {
      w.rsync.cancel();
      this.ending.push(w.rsync.run.catch(() => undefined));
    }
    if (keep !== 'tar') {
      w.tar.receiver.stdin.end();
      w.tar.sender.stdout.resume();
      w.tar.sender.stdin.end();
      this.ending.push(
        w.tar.receiver.done.catch(() => undefined),
        w.tar.sender.done.catch(() => undefined),
      );
    }
  }

  /** The final delta, while the tasks are frozen: what changed since the pre-sync began. */
  async finalDelta(timeoutMs: number): Promise<FinalPass> {
    const t0 = performance.now();
    // The log read to its end, while /proc is read for what the tasks hold.
    const [held] = await Promise.all([this.heldForWriting(), this.log?.drain(LOG_DRAIN_MS)]);
    let pass: FinalPass;
    // From the log: it holds, and each directory tree has its ways waiting (the pre-sync
    // started them); with single files alone there is no log and nothing waits.
    const log = this.log && !this.log.lost && this.dirTrees.every((t) => this.waiting.has(t)) ? this.log : undefined;
    if (log || this.dirTrees.length === 0) {
      let figures = ZERO;
      let listed = 0;
      const engines = new Set<'tar' | 'rsync'>();
      for (const t of log ? this.dirTrees : []) {
        const w = this.waiting.get(t);
        if (!w || !log) continue;
        // Out of the map as it is used: a failure leaves the trees not reached to the cleanup.
        this.waiting.delete(t);
        const d = this.deltaFor(t, held, log);
        if (d.list.entries.length === 0) {
          this.letGo(w);
          continue;
        }
        listed += d.list.entries.length;
        this.ctx.log(
          'source',
          `final delta of the ${t.what}: ${d.list.paths.length} paths, ${d.list.whole.length} directories whole, ${d.bytes} bytes of files (${d.list.paths.slice(0, 10).join(', ')}${d.list.paths.length > 10 ? ', ...' : ''})`,
        );
        // One way is chosen before either starts, and the other let go.
        const tar = d.bytes <= DELTA_TAR_MAX_BYTES ? this.tarPlan(t, d) : undefined;
        this.letGo(w, tar ? 'tar' : 'rsync');
        if (tar) {
          figures = sum(figures, await this.sendTar(t, tar, w.tar, timeoutMs));
          engines.add('tar');
          continue;
        }
        w.rsync.job.timeoutMs = timeoutMs;
        w.rsync.give(d.list.entries.map((e) => e + '\0').join(''));
        const r = await w.rsync.run;
        if (r.code !== 0)
          throw new Error(`rsync of the ${t.what} (${t.src} -> ${t.dst}) exited ${r.code}: ${lastLines(r.stderr)}`);
        figures = sum(figures, parseRsyncStats(r.stdout));
        engines.add('rsync');
      }
      // Single files: compared whole.
      const files = this.plan.trees.filter((t) => t.file);
      if (files.length) {
        figures = sum(figures, await this.rsyncAll(timeoutMs, false, files));
        engines.add('rsync');
      }
      const engine = engines.size === 0 ? 'none' : engines.has('rsync') ? 'rsync' : 'tar';
      pass = { how: 'log', engine, ms: performance.now() - t0, figures, marked: 0, listed };
    } else {
      this.cancelPending();
      const why = this.log?.lost ?? this.report.changeLog?.lost ?? 'no change log';
      if (this.log?.lost) this.report.changeLog = { ...this.report.changeLog, lost: this.log.lost };
      // rsync's walk, then by content: what the frozen tasks hold, and every inode changed
      // since the pre-sync began.
      let figures = await this.rsyncAll(timeoutMs, false);
      const heldDst = held.map((p) => destinationOfHostPath(this.dirTrees, p)).filter((d): d is string => !!d);
      let marked = 0;
      for (const t of this.dirTrees) {
        const since = await this.changedSince((this.startS ?? 0) - STAMP_MARGIN_S, t);
        const mine = heldDst.filter((d) => d.startsWith(`${t.dst}/`)).map((d) => path.relative(t.dst, d));
        const stale = [...new Set([...since, ...mine])];
        figures = sum(figures, await this.sendByContent(t, stale, timeoutMs, false));
        marked += stale.length;
      }
      pass = { how: 'walk', why, ms: performance.now() - t0, figures, marked };
    }
    if (this.o.verify) pass.verify = await this.verify(timeoutMs);
    pass.ms = performance.now() - t0;
    this.report.final = pass;
    return pass;
  }

  /**
   * The final delta of tree T: the log's changes in it and the held files, what the changed
   * files weigh, and the walks below the directories that appeared (each walked once).
   */
  private deltaFor(t: SyncTree, held: string[], log: ChangeLog): Delta {
    const cache = new Map<string, Facts | undefined>();
    const facts = (p: string): Facts | undefined => {
      if (cache.has(p)) return cache.get(p);
      let f: Facts | undefined;
      try {
        const st = fsSync.lstatSync(p);
        f = {
          ino: st.ino,
          nlink: st.nlink,
          file: st.isFile(),
          dir: st.isDirectory(),
          size: st.size,
          socket: st.isSocket(),
        };
      } catch {
        f = undefined;
      }
      cache.set(p, f);
      return f;
    };
    const walks = new Map<string, Walk>();
    const under = (dir: string): Walk => {
      let w = walks.get(dir);
      if (!w) walks.set(dir, (w = walkBelow(dir)));
      return w;
    };
    const list = deltaList({
      root: t.src,
      touched: [...log.changes.touched, ...held],
      appeared: log.changes.whole,
      dirsUnder: (d) => under(d).dirs,
      links: log.links,
      inodeOf: (p) => log.inodeOf.get(p),
      linkedOutside: log.linkedOutside,
      facts,
    });
    let bytes = 0;
    for (const p of list.paths) bytes += facts(path.join(t.src, p))?.size ?? 0;
    for (const w of list.whole) for (const e of under(path.join(t.src, w)).all) bytes += facts(e)?.size ?? 0;
    return { list, facts, under, bytes };
  }

  /**
   * The delta of tree T as one tar archive, or undefined when tar cannot carry it (a
   * socket; a name with a newline). First removed on the destination: what the source no
   * longer has, what is not a directory there (replaced whole: a file, a link, a FIFO;
   * every name of a linked file comes again), and the directories that appeared (sent
   * whole); then extracted: the paths that exist, and every entry below a directory that
   * appeared.
   */
  private tarPlan(t: SyncTree, d: Delta): TarPlan | undefined {
    const abs = (p: string) => path.join(t.src, p);
    const removals = new Set<string>(d.list.whole);
    const members = new Set<string>();
    let files = 0;
    let bytes = 0;
    for (const p of d.list.paths) {
      const f = d.facts(abs(p));
      if (p !== '.' && !f?.dir) removals.add(p);
      if (f) members.add(p);
    }
    for (const w of d.list.whole) for (const e of d.under(abs(w)).all) members.add(path.relative(t.src, e));
    // Every directory above what changes is sent too (its metadata only): a removal or a
    // new name there moves its time stamps on the destination, and tar sets them back from
    // the source's after the rest, as rsync does with its implied directories.
    for (const p of [...members, ...removals]) {
      for (let a = path.dirname(p); ; a = path.dirname(a)) {
        if (members.has(a) || !d.facts(abs(a))?.dir) break;
        members.add(a);
        if (a === '.') break;
      }
    }
    for (const m of members) {
      const f = d.facts(abs(m));
      // tar leaves sockets out; rsync makes them (-D): the delta goes by rsync then.
      if (f?.socket) return undefined;
      if (f?.file) {
        files++;
        bytes += f.size;
      }
    }
    removals.delete('.');
    // The removal list is one path a line: a name with a newline goes by rsync.
    if ([...removals].some((p) => p.includes('\n'))) return undefined;
    // Directories removed whole first; a parent before what is below it.
    return { removals: [...removals].sort(), members: [...members].sort(), files, bytes };
  }

  /** Sends PLAN through tree T's waiting tar pair. */
  private async sendTar(t: SyncTree, plan: TarPlan, pair: Waiting['tar'], timeoutMs: number): Promise<RsyncFigures> {
    const { sender, receiver } = pair;
    receiver.stdin.write(deltaHead(plan.removals));
    sender.stdin.end(plan.members.map((m) => m + '\0').join(''));
    const wire = await pipeTar(sender, receiver, `the final delta of the ${t.what}`, timeoutMs);
    return {
      filesTransferred: plan.files,
      filesDeleted: plan.removals.length,
      transferredFileBytes: plan.bytes,
      wireBytes: wire,
      totalFileBytes: plan.bytes,
    };
  }

  /** --verify-files: the trees compared (contents and metadata); throws on a difference. */
  private async verify(timeoutMs: number): Promise<{ ms: number; differences: number }> {
    const t0 = performance.now();
    const diffs: string[] = [];
    for (const t of this.plan.trees) {
      const r = await runRsync(this.rsyncHosts, {
        src: t.src,
        dst: t.dst,
        bridge: this.o.bridge,
        timeoutMs,
        compare: true,
        file: t.file,
      });
      if (r.code !== 0)
        throw new Error(
          `the comparison of the ${t.what} (${t.src} -> ${t.dst}) failed: rsync exited ${r.code}: ${lastLines(r.stderr)}`,
        );
      diffs.push(...comparedDifferences(r.stdout).map((l) => `${t.what}: ${l}`));
    }
    if (diffs.length)
      throw new Error(
        `--verify-files: the destination's files differ from the source's after the final delta (${diffs.length}: ${diffs.slice(0, 5).join('; ')})`,
      );
    return { ms: performance.now() - t0, differences: 0 };
  }

  /** Source paths of files the container's tasks map shared-writable or hold open for writing (in the synced trees). */
  private async heldForWriting(): Promise<string[]> {
    const found = new Set<string>();
    for (const pid of await containerPids(this.ctx, this.at.pid)) {
      const held = taskFiles(pid, { writing: true });
      if (!held) continue; // the task is gone
      for (const p of sharedWritableMappings(held.maps)) found.add(p);
      for (const f of held.open) if (f.writing) found.add(f.path);
    }
    // Only regular files have contents to compare (a FIFO held open for writing has none).
    return [...found]
      .map((p) => sourceOf(this.plan, p))
      .filter((d): d is string => d !== undefined)
      .filter((d) => {
        try {
          return fsSync.lstatSync(d).isFile();
        } catch {
          return false;
        }
      });
  }

  /** A source path of a synced tree, on the destination. */
}

/** What is below a directory that appeared: every entry, and the directories entered; parents first. */
interface Walk {
  all: string[];
  dirs: string[];
}

/** lstat facts of a path at the freeze. */
type Facts = PathFacts & { size: number; socket: boolean };

/** One directory tree's final delta, as deltaFor found it. */
interface Delta {
  list: DeltaList;
  facts: (p: string) => Facts | undefined;
  under: (dir: string) => Walk;
  bytes: number;
}

interface TarPlan {
  removals: string[];
  members: string[];
  files: number;
  bytes: number;
}

/** The two ways a directory tree's final delta can go, started before the freeze. */
interface Waiting {
  tar: { sender: Proc; receiver: Proc };
  rsync: { job: RsyncJob; give: (list: string) => void; cancel: () => void; run: Promise<RsyncRun> };
}

/**
 * DIR and everything below it on its file system, parents first. A mount below is not
 * entered (as rsync --one-file-system): its mount point is an entry, not a directory entered.
 */
function walkBelow(dir: string): Walk {
  const w: Walk = { all: [], dirs: [] };
  let dev: number;
  try {
    dev = fsSync.lstatSync(dir).dev;
  } catch {
    return w;
  }
  const todo = [dir];
  for (let d = todo.pop(); d !== undefined; d = todo.pop()) {
    w.all.push(d);
    w.dirs.push(d);
    let names: fsSync.Dirent[];
    try {
      names = fsSync.readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const n of names) {
      const p = path.join(d, n.name);
      if (!n.isDirectory()) {
        w.all.push(p);
        continue;
      }
      try {
        if (fsSync.lstatSync(p).dev === dev) todo.push(p);
        else w.all.push(p);
      } catch {
        /* gone */
      }
    }
  }
  return w;
}

function lastLines(s: string): string {
  return s.trim().split('\n').slice(-3).join(' | ');
}

/** The shared-storage marker's name: the tool's pid in it, so that one left by a killed run is known. */
const MARKER = /^\.runc-migrate-shared-(\d+)-[0-9a-f]+$/;

/**
 * Whether SRC on the source and DST on the destination are one directory (shared
 * storage): a marker made in SRC is looked for in DST. undefined: SRC cannot be written
 * (read-only), so it cannot be told. A marker a killed run left in SRC is removed first.
 */
export async function sameDirectory(dst: Host, src: string, dstDir: string): Promise<boolean | undefined> {
  await removeStaleMarkers(src);
  const name = `.runc-migrate-shared-${process.pid}-${crypto.randomBytes(8).toString('hex')}`;
  try {
    await fs.writeFile(path.join(src, name), '', { flag: 'wx', mode: 0o600 });
  } catch {
    return undefined;
  }
  try {
    const r = await dst.run(['test', '-e', path.join(dstDir, name)], { allowFail: true });
    return r.code === 0;
  } finally {
    await fs.rm(path.join(src, name), { force: true });
  }
}

/** Markers in DIR whose run is gone (the tool was killed in the milliseconds one exists). */
export async function removeStaleMarkers(dir: string): Promise<string[]> {
  const gone: string[] = [];
  for (const e of await fs.readdir(dir).catch(() => [] as string[])) {
    const m = e.match(MARKER);
    if (!m || alive(Number(m[1]))) continue;
    await fs.rm(path.join(dir, e), { force: true });
    gone.push(e);
  }
  return gone;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
