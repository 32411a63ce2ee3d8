// One restorable checkpoint of a running container, written into the standby's store
// (store.ts) while the container runs on. Memory and files are from one instant:
//   1. while it runs, the root filesystem is copied into the checkpoint's partial
//      directory, hard-linking what is unchanged since the previous checkpoint (rsync
//      --link-dest: each checkpoint is a whole tree, and costs only what changed);
//   2. `runc checkpoint --leave-running` dumps it into this host's work directory; at
//      CRIU's post-dump every image is written and the tasks are still frozen, and a
//      CRIU action script holds there while the tool brings the checkpoint's tree to the
//      frozen state: rsync's walk (what changed in size or time, what was removed), then
//      every file whose inode changed (ctime) since step 1 began, compared by content (a
//      same-size rewrite with an old mtime included; ctime cannot be set back);
//   3. the script exits 0 and CRIU resumes the container; a failed sync, the tool's death
//      or a hold past its limit exit 1 instead: the dump fails, CRIU resumes the
//      container all the same, and the checkpoint is never published;
//   4. the images go to the partial directory (a tar stream over SSH), and the publish
//      step (store.ts) flushes it and makes it `latest`.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { criuLogErrors } from '../../criu.js';
import { decodeStatsImage } from '../../criustats.js';
import type { Host } from '../../host.js';
import { type RuncGlobal, runc } from '../../runc.js';
import { commandLine, quote } from '../../shell.js';
import { type RsyncHosts, runRsync } from '../files/rsync-bridge.js';
import { streamDir } from '../pages/stream.js';
import { criuConfig } from '../switchover/hold.js';
import { uptimeCs } from './fence.js';
import { type CheckpointRecord, type PreDumpRef, PUBLISH_SCRIPT } from './store.js';

/** What every checkpoint of one replicate run shares. */
export interface CheckpointSetup {
  readonly hosts: RsyncHosts & { readonly src: Host; readonly dst: Host };
  readonly srcRunc: RuncGlobal;
  readonly container: string;
  /** The container's root filesystem on this host. */
  readonly rootfs: string;
  /** Its config.json, with root.path made "rootfs" (the checkpoint's bundle holds its own tree). */
  readonly config: string;
  /** This host's private work directory (0700), and rsync's bridge script in it. */
  readonly work: string;
  readonly bridge: string;
  /** The replica's directory on the standby. */
  readonly dir: string;
  readonly keep: number;
  readonly tcpEstablished: boolean;
  /** Who takes it (the record's source). */
  readonly source: string;
  /** The longest the container may stay frozen for one checkpoint. */
  readonly freezeLimitS: number;
  /** The fence's deadline file (uptime centiseconds): the hold lets CRIU resume the container only well before it. */
  readonly deadlineFile?: string;
  /** The container's init (its pid on this host): a hold whose container is gone ends. */
  readonly initPid: number;
  /** The source kernel tracks dirty memory: pre-dump chains (chain.ts). */
  readonly tracking: boolean;
  /** Whether the run is stopping (a dump that cannot end is then given up). */
  readonly stopping: () => boolean;
  /** Told the hold's directory of the checkpoint under way (the run ends a hold it gives up with its `fail`). */
  readonly holding: (holdDir: string, dumpDone: Promise<unknown>) => void;
}

export interface Checkpoint extends CheckpointRecord {
  /** The parts of its time, in ms. */
  readonly parts: { presync: number; dump: number; frozenSync: number; images: number; publish: number };
  /** rsync's figures of the frozen sync: files sent. */
  readonly filesSent: number;
  readonly pruned: string[];
}

/**
 * The hold (POSIX sh, CRIU's action script): at post-dump, mark frozen, then wait for `go`
 * (exit 0) or anything else (exit 1): `fail`, the tool's death, the freeze's limit. Both
 * exits let CRIU thaw the container, so neither is taken while the fence's deadline
 * (DEADLINE, uptime centiseconds) is past or within half a second: the container then
 * stays frozen here, fenced, until a renewal moves the deadline on, the lease is
 * released (the file `released`: replicate stopped cleanly), or the container is gone
 * (deleted by the operator after a failover).
 */
export function checkpointHoldScript(
  holdDir: string,
  toolPid: number,
  limitS: number,
  initPid: number,
  deadlineFile?: string,
  /** The init's start time (the 22nd field of /proc/PID/stat): its pid reused by another is not it. */
  initStart = '',
): string {
  const mayRun = deadlineFile
    ? `may_run() {
  deadline=$(cat ${quote(deadlineFile)} 2>/dev/null || echo 0)
  case $deadline in ''|*[!0-9]*) deadline=0 ;; esac
  read -r up _ < /proc/uptime
  now=$(printf '%s' "$up" | tr -d .)
  [ "$now" -lt $((deadline - 50)) ]
}`
    : 'may_run() { true; }';
  return `#!/bin/sh
# runc-migrate replicate: holds the frozen container at CRIU's post-dump while its files are synced.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
dir=${quote(holdDir)}
${mayRun}
# The container is gone once its init is: dead, a zombie (a task CRIU traces is not
# reaped while CRIU waits here: kill -0 would say it lives), or its pid another's.
gone() {
  st=$(sed 's/.*) //' /proc/${initPid}/stat 2>/dev/null) || return 0
  [ -n "$st" ] || return 0
  # shellcheck disable=SC2086
  set -- $st
  [ "$1" = Z ]${initStart ? ` || [ "\${20:-}" != "${initStart}" ]` : ''}
}
leave() {
  while ! may_run && [ ! -e "$dir/released" ]; do
    gone && exit 1
    sleep 0.05
  done
  exit "$1"
}
: > "$dir/frozen"
n=0
while :; do
  [ -e "$dir/go" ] && leave 0
  [ -e "$dir/fail" ] && leave 1
  kill -0 ${toolPid} 2>/dev/null || leave 1
  n=$((n + 1))
  [ "$n" -ge ${Math.ceil(limitS * 50)} ] && leave 1
  sleep 0.02
done
`;
}

/** A checkpoint that was not published: the container runs on, and the next one is tried. */
export class CheckpointFailed extends Error {}

/** The copy of the tree while the container runs (a first one is the whole tree). */
const PRESYNC_LIMIT_MS = 600_000;

/**
 * Takes checkpoint SEQ, its tree hard-linked on PREV (the latest complete one), and its
 * memory parented on the pre-dump PARENT (chain.ts) when there is one: then only the pages
 * written since that pre-dump are dumped (and frozen for).
 */
export async function takeCheckpoint(
  c: CheckpointSetup,
  seq: number,
  prev: number | undefined,
  /** The least time the fence's deadline must leave when the dump starts (a dump that fails before its hold thaws the container as it ends). */
  minLeftMs: number,
  parent?: PreDumpRef,
): Promise<Checkpoint> {
  const { src, dst } = c.hosts;
  const partial = path.posix.join(c.dir, 'checkpoints', `.${seq}.partial`);
  const tree = path.posix.join(partial, 'bundle', 'rootfs');
  // The same layout here as on the standby: a parent link (relative) resolves on both.
  const local = path.join(c.work, 'checkpoints', String(seq));
  const images = path.join(local, 'images');
  const criuWork = path.join(local, 'criu');
  const holdDir = path.join(local, 'hold');
  let keepLocal = false;
  try {
    await fs.mkdir(images, { recursive: true, mode: 0o700 });
    await fs.mkdir(criuWork, { mode: 0o700 });
    await fs.mkdir(holdDir, { mode: 0o700 });
    await dst.run(['mkdir', '-p', '-m', '0700', path.posix.join(partial, 'images'), tree]);
    await dst.run(['sh', '-c', 'cat > "$1"', 'sh', path.posix.join(partial, 'bundle', 'config.json')], {
      input: c.config,
    });

    // 1. While it runs: the tree, what is unchanged hard-linked from the previous checkpoint.
    const t0 = performance.now();
    const stamp = path.join(local, 'presync-began');
    await fs.writeFile(stamp, '');
    const began = new Date(Date.now() - 1000);
    await fs.utimes(stamp, began, began);
    const linkDest =
      prev === undefined ? undefined : path.posix.join(c.dir, 'checkpoints', String(prev), 'bundle', 'rootfs');
    await rsyncOrFail(c, {
      src: c.rootfs,
      dst: tree,
      linkDest,
      what: 'the root filesystem (while it runs)',
      timeoutMs: PRESYNC_LIMIT_MS,
    });
    const tPresync = performance.now();

    // 2. The dump, held at post-dump while the tree is brought to the frozen state; not
    // begun when the deadline could overtake it before its hold.
    const left = await msToDeadline(c);
    if (left < minLeftMs)
      throw new CheckpointFailed(
        `skipped: the lease's count leaves ${Math.round(left)} ms, less than the ${minLeftMs} ms a dump may take to reach its hold`,
      );
    const script = path.join(holdDir, 'hold.sh');
    await fs.writeFile(
      script,
      checkpointHoldScript(holdDir, process.pid, c.freezeLimitS, c.initPid, c.deadlineFile, await startTime(c.initPid)),
      {
        mode: 0o700,
      },
    );
    const config = path.join(local, 'criu.conf');
    await fs.writeFile(config, criuConfig(script), { mode: 0o600 });
    const argv = runc.checkpoint(c.srcRunc, c.container, {
      imagePath: images,
      workPath: criuWork,
      tcpEstablished: c.tcpEstablished,
      leaveRunning: true,
      parentPath: parent ? path.posix.join('..', '..', '..', parent.dir) : undefined,
    });
    if (c.stopping()) throw new CheckpointFailed('not begun: the run is stopping');
    const dump = await src.spawn(argv, { env: { CRIU_CONFIG_FILE: config } });
    c.holding(holdDir, dump.done);
    let exited = false;
    void dump.done.then(() => (exited = true));
    while (!existsSync(path.join(holdDir, 'frozen')) && !exited) await new Promise((r) => setTimeout(r, 3));
    let frozenAt = Date.now();
    let tFrozen = performance.now();
    let filesSent = 0;
    let verdict: 'go' | 'fail' = 'fail';
    let syncError: Error | undefined;
    if (!exited) {
      frozenAt = Date.now();
      tFrozen = performance.now();
      try {
        filesSent = await frozenSync(c, stamp, tree);
        verdict = (await safeToResume(c)) ? 'go' : 'fail';
        if (verdict === 'fail')
          syncError = new CheckpointFailed(
            "the lease's deadline came too near while frozen: the checkpoint is dropped",
          );
      } catch (err) {
        syncError = err as Error;
      }
      await fs.writeFile(path.join(holdDir, verdict), '');
    }
    // A hold kept past the deadline (fenced) keeps the dump from ending: once the run
    // stops, it is left holding the container frozen, and the checkpoint given up.
    const gaveUp = await Promise.race([dump.done.then(() => 'ended' as const), abandoned(c, () => exited)]);
    if (gaveUp === 'abandoned') {
      // Its hold directory stays (the run settles the hold, then removes the work directory).
      keepLocal = true;
      throw new CheckpointFailed(
        'given up: the dump stays in its hold, keeping the container frozen, until a renewal or its deletion',
      );
    }
    const r = await dump.done;
    const tResumed = performance.now();
    if (syncError) throw syncError;
    if (r.code !== 0) {
      const log = await fs.readFile(path.join(criuWork, 'dump.log'), 'utf8').catch(() => '');
      const errs = criuLogErrors(log, 3).join(' | ');
      throw new CheckpointFailed(
        `the dump failed (${commandLine(argv)} exited ${r.code}: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}${errs ? `; CRIU: ${errs.slice(0, 300)}` : ''}); the container runs on`,
      );
    }
    if (verdict !== 'go')
      throw new CheckpointFailed('the dump never reached its hold (no files synced while frozen): not published');
    const stats = await fs.readFile(path.join(criuWork, 'stats-dump')).catch(() => undefined);
    const frozenUs = stats ? decodeStatsImage(stats).frozenTimeUs : undefined;
    // CRIU's frozen time runs from the freeze past the post-dump hold (measured: 437-484 ms
    // with the hold's 300-342 inside); without its stats, the hold and the dump before it.
    const freezeMs = frozenUs !== undefined ? Math.round(frozenUs / 1000) : Math.round(tResumed - tPresync);

    // 4. The images, then the publish step.
    const bytes = await streamDir(c.hosts, images, path.posix.join(partial, 'images'));
    const tImages = performance.now();
    const record: CheckpointRecord = {
      seq,
      frozenAt,
      bytes,
      freezeMs,
      source: c.source,
      tcpEstablished: c.tcpEstablished,
      chain: parent?.chain,
    };
    const pub = await dst.run([
      'sh',
      '-c',
      PUBLISH_SCRIPT,
      'sh',
      c.dir,
      String(seq),
      JSON.stringify(record),
      String(c.keep),
    ]);
    if (!pub.stdout.includes(`published ${seq}`))
      throw new CheckpointFailed(`the standby did not publish checkpoint ${seq}: ${pub.stdout.trim()}`);
    const tPublished = performance.now();
    return {
      ...record,
      parts: {
        presync: Math.round(tPresync - t0),
        dump: Math.round(tFrozen - tPresync),
        frozenSync: Math.round(tResumed - tFrozen),
        images: Math.round(tImages - tResumed),
        publish: Math.round(tPublished - tImages),
      },
      filesSent,
      pruned: pub.stdout
        .split('\n')
        .filter((l) => l.startsWith('removed '))
        .map((l) => l.slice(8)),
    };
  } finally {
    if (!keepLocal) await fs.rm(local, { recursive: true, force: true });
  }
}

/** Resolves once the run stops while the dump has not ended (polled every 100 ms). */
async function abandoned(c: CheckpointSetup, ended: () => boolean): Promise<'abandoned' | 'ended'> {
  while (!c.stopping()) {
    if (ended()) return 'ended';
    await new Promise((r) => setTimeout(r, 100));
  }
  for (let i = 0; i < 20 && !ended(); i++) await new Promise((r) => setTimeout(r, 100));
  return ended() ? 'ended' : 'abandoned';
}

/** While frozen: rsync's walk (sizes, times, removals), then what changed (ctime) since the copy began, by content. */
async function frozenSync(c: CheckpointSetup, stamp: string, tree: string): Promise<number> {
  // No longer than the deadline allows: past it the verdict cannot be go.
  const timeoutMs = Math.max(1, Math.min(c.freezeLimitS * 1000, await msToDeadline(c)));
  // The changed files first, each written anew (a new inode): the walk after them would
  // otherwise change a hard-linked file's metadata in place, in the previous checkpoint too.
  const found = await c.hosts.src.run(['find', c.rootfs, '-xdev', '-cnewer', stamp, '-printf', '%P\\0']);
  const list = found.stdout
    .split('\0')
    .filter((p) => p !== '')
    .join('\0');
  let sent = 0;
  if (list)
    sent += await rsyncOrFail(c, {
      src: c.rootfs,
      dst: tree,
      feed: list,
      what: 'the changed files (frozen)',
      timeoutMs,
    });
  sent += await rsyncOrFail(c, { src: c.rootfs, dst: tree, what: 'the root filesystem (frozen)', timeoutMs });
  return sent;
}

/** Milliseconds until the fence's deadline (infinite without a fence). */
export async function msToDeadline(c: CheckpointSetup): Promise<number> {
  if (!c.deadlineFile) return Number.POSITIVE_INFINITY;
  const deadline = Number((await fs.readFile(c.deadlineFile, 'utf8').catch(() => '0')).trim());
  return (deadline - (await uptimeCs())) * 10;
}

/** Whether the fence's deadline is far enough that CRIU may resume the container (half a second to spare). */
async function safeToResume(c: CheckpointSetup): Promise<boolean> {
  return (await msToDeadline(c)) > 500;
}

async function rsyncOrFail(
  c: CheckpointSetup,
  o: { src: string; dst: string; linkDest?: string; feed?: string; what: string; timeoutMs: number },
): Promise<number> {
  const r = await runRsync(c.hosts, {
    src: o.src,
    dst: o.dst,
    bridge: c.bridge,
    timeoutMs: o.timeoutMs,
    linkDest: o.linkDest,
    feed: o.feed === undefined ? undefined : Promise.resolve(o.feed),
  });
  if (r.code !== 0) throw new CheckpointFailed(`syncing ${o.what} failed: ${r.stderr.trim().slice(-300)}`);
  const m = r.stdout.match(/Number of regular files transferred: ([\d,]+)/);
  return m ? Number(m[1].replace(/,/g, '')) : 0;
}

/** A process's start time, the 22nd field of /proc/PID/stat ('' when it is gone). */
export async function startTime(pid: number): Promise<string> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}
