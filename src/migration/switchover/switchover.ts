// The switchover as a two-phase commit, with the tool as coordinator and the two hosts
// as participants that never decide alone once the decision may have been made
// (protocol.ts has the words; test/model/protocol.ts checks the rules over every
// interleaving of crashes, losses, partitions, deadlines and reboots).
//
// Contract: when switchover() returns, the container runs on exactly one host and the
// result says which, or the result is 'in-doubt' and names what `migrate recover` will
// settle; it never throws. The destination's copy is restored stopped and runs only on
// the word commit, so before the commit it has no effect anyone can see. If the tool
// dies, or loses the destination without a word (a silent partition), at any point, the
// participants end in one defined state by themselves:
//   - before the source is prepared: the destination's guard removes its stopped copy
//     (channel closed, heartbeat missing, or its deadline); the source's hold resumes the
//     source (the tool's pid gone, or its own deadline, later than the guard's). The tool
//     itself resumes the source only once the destination confirmed it is clean;
//   - after the source is prepared and before the destination acknowledged its commit:
//     the source stays frozen (in doubt); the guard has either committed or removed its
//     copy; `migrate recover` reads which and tells the source;
//   - after the destination's commit: the destination runs; the source stays frozen until
//     the final verdict (written next, or by `migrate recover`) destroys it. Nothing
//     resumes it any more, even if the copy is lost afterwards.
// Commit order: the destination first, then the source. Each step is written to the
// intent record before it is taken ('committing' before the word commit is sent).
import type { FaultPoint } from '../faults.js';
import type { IntentPhase } from '../recover/intent.js';
import type { Verdict } from './hold.js';
import { GUARD_WORD, MIN_MARGIN_S } from './protocol.js';

/** Which state the dump left the source in. */
export type FreezeResult =
  /**
   * Frozen and held at post-dump, every image written: the normal case. frozeAt: when
   * (performance.now()) the container's freezer was seen asked to freeze, if it was.
   */
  | { held: true; frozeAt?: number }
  /** The dump failed; CRIU resumed the tasks (they run on the source). */
  | { held: false; failure: Error }
  /**
   * The checkpoint finished without holding (CRIU never ran the hold script): the source
   * is gone and the images are the only copy. Nothing is left to roll back to.
   */
  | { held: false; destroyed: true; why: string };

/** The source's side. Each method's undo is in its comment. */
export interface SourceSide {
  /** Writes the intent record (before the step it names). */
  record(phase: IntentPhase): Promise<void>;
  /** Freeze and dump, held at post-dump. Undo: resume(). */
  freeze(): Promise<FreezeResult>;
  /** --move-ip: the address leaves the source (the hold gives it back on any rollback). Undo: resume(). */
  releaseAddress(): Promise<void>;
  /**
   * Phase one: the hold is told to wait for a final verdict (it will no longer decide by
   * itself). false: the hold had already rolled back on its own (timeout). Undo: finish('rollback').
   */
  prepare(): Promise<boolean>;
  /** Phase two: the final verdict; resolves once the checkpoint ended (commit: the source is gone). */
  finish(v: Verdict): Promise<void>;
  /** Before prepare, the destination confirmed clean: roll back; resolves once the source runs again (address back). */
  resume(): Promise<void>;
  /** When (Date.now()) the hold resumes the source by itself if no verdict comes. */
  holdEndsAt(): number;
  /**
   * Before prepare, the destination NOT confirmed clean: the tool does not resume the
   * source; the hold does at its own deadline, which is later than the guard's. Resolves
   * once it has.
   */
  outlast(): Promise<void>;
  /** After the commit: what CRIU leaves behind (its lock rules) and the figures. Best effort. */
  afterCommit(): Promise<void>;
}

/** The destination's side: everything goes through its guard (guard.ts). */
export interface DestinationSide {
  /**
   * Starts the guard: [--move-ip] the address is claimed, muted. Undo: remove().
   * keepImages: the restore must leave the images whole (no source to go back to: they
   * are the only copy); otherwise it frees them as it reads them.
   */
  startGuard(o?: { keepImages?: boolean }): Promise<void>;
  /** The latest time (Date.now()) by which the started guard gives up by itself. */
  guardEndsBy(): number;
  /** Waits for the page server (if any), copies the remaining image files. Undo: remove() (the work directory goes with cleanup). */
  copyImages(): Promise<number>;
  /**
   * Brings the destination's files (rootfs, volumes) to the frozen source's: the final
   * delta. Undo: none needed (the destination's files stay synced, the source's are
   * untouched). false: nothing to sync.
   */
  syncFiles(): Promise<boolean>;
  /** Restores the copy stopped and verifies it (whole, every task stopped) under the guard. Undo: remove(). */
  restore(): Promise<void>;
  /**
   * Phase two on the destination: resolves once the guard acknowledged the commit (the
   * copy runs), with the lines it printed about trouble after its commit point.
   */
  commit(): Promise<{ trouble: string[] }>;
  /**
   * After a commit that was not acknowledged: how the guard ended, from its files, once it
   * has; undefined if the destination cannot be reached or shows no trace of the guard.
   */
  settle(): Promise<'committed' | 'removed' | undefined>;
  /** Removes an uncommitted copy and the claim; resolves true once the destination is confirmed clean. */
  remove(): Promise<boolean>;
}

/** The steps, in the order switchover() takes them (rollback only on a failure). */
export const SWITCHOVER_STEPS = [
  'dump',
  'copy',
  'window',
  'restore',
  'pages',
  'prepare',
  'commit',
  'finish',
  'rollback',
] as const;
export type SwitchoverStep = (typeof SWITCHOVER_STEPS)[number];

export interface SwitchoverHooks {
  /** Progress: runs one named step and shows it. */
  step<T>(name: SwitchoverStep, title: string, run: () => Promise<T>): Promise<T>;
  warn(message: string): void;
  /** Tests only: the tool dies, or loses its connection, at a named point (faults.ts switchoverPoint). */
  killPoint(point: string): void;
  /** Tests only: a failure injected at a named point (faults.ts); nothing in production. */
  fail(point: FaultPoint): void;
  moveIp: boolean;
  /** Files are synced (their final delta runs beside the images' copy). */
  syncFiles: boolean;
}

/**
 * The downtime's parts: how long each step between the freeze and the end of the downtime
 * took (the commit's includes, with --move-ip, unmuting the address, continuing the tasks
 * and the gratuitous ARP), and `other`, the rest (the intent record's writes, the checks
 * between the steps).
 */
export type DowntimeParts = Partial<Record<SwitchoverStep, number>> & { other: number };

/**
 * HOOKS whose steps are timed as they end; `partsOf` gives the downtime's parts from the
 * steps ended so far (call it when the downtime ends: a step after it is not a part).
 */
export function timedSteps<H extends SwitchoverHooks>(
  hooks: H,
): { h: H; partsOf: (downtimeMs: number, preFreezeMs?: number) => DowntimeParts } {
  const ended: Array<[SwitchoverStep, number]> = [];
  const h: H = {
    ...hooks,
    step: async (name, title, run) => {
      const t = performance.now();
      try {
        return await hooks.step(name, title, run);
      } finally {
        ended.push([name, performance.now() - t]);
      }
    },
  };
  const partsOf = (downtimeMs: number, preFreezeMs = 0): DowntimeParts => {
    const parts: Partial<Record<SwitchoverStep, number>> = {};
    let sum = -preFreezeMs;
    // The dump step began before the freeze: only its frozen part is downtime.
    for (const [name, ms] of ended) {
      parts[name] = (parts[name] ?? 0) + ms - (name === 'dump' ? preFreezeMs : 0);
      sum += ms;
    }
    return { ...parts, other: Math.max(0, downtimeMs - sum) };
  };
  return { h, partsOf };
}

/** Post-copy's lazy window, as measured (postcopy.ts). */
export interface LazyWindow {
  /** From the restore until the last page arrived (or the window was cut). */
  windowMs: number;
  /** Faults the restored tasks took that were served from the source on demand. */
  pagesOnDemand?: number;
  /** Pages pushed in the background. */
  pagesPushed?: number;
  /** Every page the destination received lazily. */
  pagesTotal?: number;
  /** The daemon's exit status as the destination's guard saw it. */
  daemonExit?: string;
}

export type SwitchoverResult =
  | {
      runningOn: 'destination';
      downtimeMs: number;
      downtimeParts?: DowntimeParts;
      bytesMoved?: number;
      sourceLeft?: string;
      lazy?: LazyWindow;
      announceFailed?: string;
    }
  | { runningOn: 'source'; error: Error; destinationClean: boolean; lazy?: LazyWindow }
  | { runningOn: 'in-doubt'; error: Error }
  /** The source was destroyed without a hold and the restore failed: only the images remain. */
  | { runningOn: 'nowhere'; error: Error };

/**
 * The freeze that opens both switchovers (this one and postcopy.ts's): the record, then
 * the dump under TITLE. Returns when the freeze began and the source is held, or the
 * result when it is not (the dump failed, or the source is gone without a hold).
 */
export async function freezeSource(
  src: SourceSide,
  dst: DestinationSide,
  h: SwitchoverHooks,
  title: string,
): Promise<{ t0: number; preFreezeMs: number } | { result: SwitchoverResult }> {
  await src.record('frozen');
  const start = performance.now();
  const frozen = await h.step('dump', title, () => src.freeze());
  if (!frozen.held && 'destroyed' in frozen) return { result: await withoutSource(src, dst, h, start, frozen.why) };
  if (!frozen.held) return { result: { runningOn: 'source', error: frozen.failure, destinationClean: true } };
  // The downtime starts when the container stopped, where that was seen; else with the dump.
  const t0 = frozen.frozeAt !== undefined && frozen.frozeAt >= start ? frozen.frozeAt : start;
  return { t0, preFreezeMs: t0 - start };
}

/**
 * What follows the freeze on every path: the destination's guard starts (it claims the
 * address) while the source gives the address up, the images are copied and the files'
 * final delta is sent; returns once the guard is up. A failure throws (the caller rolls
 * back, or, without a source, reports it).
 */
export async function handOver(
  src: SourceSide,
  dst: DestinationSide,
  h: SwitchoverHooks,
  copyTitle: string,
  o: { withSource: boolean } = { withSource: true },
): Promise<number> {
  if (o.withSource) {
    h.killPoint('after-dump');
    h.fail('after-dump');
  }
  const guard = dst.startGuard({ keepImages: !o.withSource });
  guard.catch(() => undefined); // awaited below, or by remove() in the rollback
  // Without a source there is no way back: the guard must be up (the address claimed) before anything is copied.
  if (!o.withSource) await guard;
  // Side by side, each off the others' path: the images' copy, the files' final delta
  // and [--move-ip] the address leaving the source. All have ended before anything goes
  // on, a rollback included; of several failures, the copy's is reported, then the
  // delta's, then the release's.
  const release = h.moveIp && o.withSource;
  const title = [
    copyTitle,
    h.syncFiles ? "sync the files' final delta" : '',
    release ? 'release the service address on the source' : '',
  ]
    .filter(Boolean)
    .join('; ');
  const bytes = await h.step('copy', title, async () => {
    const [copied, ...others] = await Promise.allSettled([
      dst.copyImages(),
      h.syncFiles ? dst.syncFiles() : Promise.resolve(),
      release ? src.releaseAddress() : Promise.resolve(),
    ]);
    if (copied.status === 'rejected') throw copied.reason;
    for (const x of others) if (x.status === 'rejected') throw x.reason;
    return copied.value;
  });
  await guard;
  return bytes;
}

export async function switchover(
  src: SourceSide,
  dst: DestinationSide,
  hooks: SwitchoverHooks,
): Promise<SwitchoverResult> {
  const { h, partsOf } = timedSteps(hooks);
  const f = await freezeSource(src, dst, h, 'freeze and dump');
  if ('result' in f) return f.result;
  const { t0, preFreezeMs } = f;

  // Until the source is prepared, any failure (or the tool's death) rolls back.
  let bytesMoved: number | undefined;
  try {
    bytesMoved = await handOver(src, dst, h, 'copy images');
    // The guard must give up strictly before the hold resumes the source by itself.
    const spare = src.holdEndsAt() - dst.guardEndsBy();
    if (spare < MIN_MARGIN_S * 1000) {
      throw new Error(
        `the destination's guard started too late: it would give up ${Math.round(spare / 1000)} s before the source's hold resumes, less than the ${MIN_MARGIN_S} s needed (give a longer --hold-timeout)`,
      );
    }
    h.killPoint('copy');
    await src.record('restoring');
    await h.step('restore', 'restore and verify on the destination', () => dst.restore());
    h.killPoint('restored');
  } catch (err) {
    return rollBack(src, dst, h, err as Error);
  }

  // Phase one: the source promises to wait for the final word.
  await src.record('prepared');
  h.killPoint('before-prepare');
  const prepared = await h
    .step('prepare', 'prepare the source (it waits for the final verdict)', () => src.prepare())
    .catch(() => false);
  if (!prepared) {
    return rollBack(
      src,
      dst,
      h,
      new Error("the source's hold ended by itself (it waited longer than its limit) before the commit"),
    );
  }
  h.killPoint('prepared');

  // Phase two, destination first. From the word "commit" on, the destination may have
  // committed: the record says so before it is sent.
  await src.record('committing');
  let trouble: string[] = [];
  try {
    trouble = (await h.step('commit', 'commit on the destination', () => dst.commit())).trouble;
  } catch (err) {
    const c = await dst.settle().catch(() => undefined);
    if (c === undefined) {
      return {
        runningOn: 'in-doubt',
        error: new Error(
          `the destination did not confirm the commit (${(err as Error).message}), and cannot be asked now`,
        ),
      };
    }
    if (c === 'removed') {
      await src.finish('rollback').catch((e) => h.warn(`the source's final verdict: ${(e as Error).message}`));
      return { runningOn: 'source', error: err as Error, destinationClean: true };
    }
  }
  const downtimeMs = performance.now() - t0;
  const downtimeParts = partsOf(downtimeMs, preFreezeMs);
  // Committed is final: a copy that could not be continued is the destination's to fix
  // (migrate recover continues it); the source stays frozen meanwhile, never resumed.
  const stuck = trouble.find((l) => l.startsWith(GUARD_WORD.resumeFailed));
  if (stuck) {
    return {
      runningOn: 'in-doubt',
      error: new Error(
        `the destination committed, but some of its copy's tasks could not be continued (${stuck}); the frozen source is kept`,
      ),
    };
  }
  const announceFailed = trouble.find((l) => l.startsWith(GUARD_WORD.announceFailed));
  // ---- POINT OF NO RETURN: the destination runs the committed copy. Nothing below can
  // fail the migration; what goes wrong is a warning, and the report says what remains.
  h.killPoint('destination-committed');
  let sourceLeft: string | undefined;
  try {
    await src.record('destination-committed');
    await h.step('finish', 'remove the source', () => src.finish('commit'));
  } catch (err) {
    sourceLeft = `the source's frozen copy may remain (${(err as Error).message}): run migrate recover`;
    h.warn(sourceLeft);
  }
  h.killPoint('committed');
  await src.afterCommit().catch((err) => h.warn(`after the commit: ${(err as Error).message}`));
  return { runningOn: 'destination', downtimeMs, downtimeParts, bytesMoved, sourceLeft, announceFailed };
}

/**
 * Before the prepare: the destination is cleaned first, then the source resumes. If the
 * destination cannot be confirmed clean (a silent partition, a lost connection), the
 * tool does not resume the source: the guard removes its copy at its deadline (sooner
 * once the heartbeat stops), and the hold resumes the source at its own, later one.
 */
export async function rollBack(
  src: SourceSide,
  dst: DestinationSide,
  h: SwitchoverHooks,
  error: Error,
): Promise<SwitchoverResult> {
  let clean = false;
  await h.step('rollback', 'roll back (resume the source)', async () => {
    clean = await dst.remove().catch(() => false);
    if (clean) return src.resume();
    const wait = Math.max(0, Math.round((src.holdEndsAt() - Date.now()) / 1000));
    h.warn(
      `the destination could not be confirmed clean: the source resumes by itself at its hold's deadline (in about ${wait} s), after the destination's guard has removed its stopped copy`,
    );
    await src.outlast();
  });
  return { runningOn: 'source', error, destinationClean: clean };
}

/**
 * The source is already gone (its checkpoint ended without the hold): the images are
 * the only copy, so the destination restores them as it would have; there is no
 * rollback, and a failure leaves the images where they are.
 */
async function withoutSource(
  src: SourceSide,
  dst: DestinationSide,
  h: SwitchoverHooks,
  t0: number,
  why: string,
): Promise<SwitchoverResult> {
  h.warn(`${why}: restoring on the destination without a way back`);
  try {
    const bytesMoved = await handOver(src, dst, h, 'copy images', { withSource: false });
    await h.step('restore', 'restore and verify on the destination', () => dst.restore());
    await h.step('commit', 'commit on the destination', () => dst.commit());
    const downtimeMs = performance.now() - t0;
    await src.afterCommit().catch((err) => h.warn(`after the commit: ${(err as Error).message}`));
    return { runningOn: 'destination', downtimeMs, bytesMoved };
  } catch (err) {
    return {
      runningOn: 'nowhere',
      error: new Error(`${why}, and the destination could not take it over: ${(err as Error).message}`),
    };
  }
}
