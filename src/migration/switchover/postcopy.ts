// The switchover with post-copy (--post-copy): CRIU's lazy pages. The final dump leaves
// the memory in the frozen tasks; everything else is copied as usual; the destination
// restores at once and its lazy-pages daemon fetches the memory from a lazy page server
// that CRIU runs on the source (CRIU's TLS), on demand and pushed in the background.
//
// The lazy window, from the restore until the last page arrived, is a state of its own:
// the container runs on the destination, but its memory is split between the hosts. Two
// processes end it, each deciding for its host alone:
//   - the destination's lazy-pages daemon exits 0 once it holds every page its tasks can
//     ask for; anything else (its link broke, it failed, the guard killed it) is non-zero;
//   - the source's CRIU destroys the frozen tasks (the checkpoint exits 0) once the daemon
//     said it is done and closed its TLS session cleanly; any other end of the session
//     (a reset, a daemon killed, the watchdog's cut) makes it resume them (non-zero).
// The rule, decided once, by the destination's guard alone (guard.ts): the copy is kept
// (committed) when its daemon exited 0 by itself and the copy runs; otherwise it is
// removed. The source follows the guard:
//   guard committed, checkpoint 0         the container moved (the normal end)
//   guard committed, checkpoint not 0     CRIU resumed the source, but the destination has
//                                         every page: the resumed source is removed
//   guard removed,   checkpoint not 0     the source keeps it: the address back, CRIU's
//                                         lock lifted; what the copy did is lost and its
//                                         TCP peers are reset
//   guard removed,   checkpoint 0         CRIU destroyed the source although the copy was
//                                         incomplete (its daemon tells the source "done"
//                                         even after an error of its own): lost, and said so
//   guard unknown (unreachable)           in doubt: a source CRIU resumed keeps CRIU's lock
//                                         (nothing reaches it) until migrate recover asks
//                                         the guard; recover removes it or unlocks it.
// Nothing waits without a limit: the guard kills its daemon after lazyStallS without a
// byte or the window's limit (memory-sized); the source's watchdog (hold.ts) cuts CRIU's
// lazy page server (the source resumes) after longer limits, and at the hold's deadline
// if no daemon ever connected. So a copy the guard removes never had every page, and a
// source the watchdog resumes was never destroyed. When the tool dies, the guard and the
// watchdog end the window alone, and the watchdog runs migrate recover for the rest.
// Only TLS: a plain connection that closes reads as "done" to the lazy page server, so a
// dying daemon would destroy the source (policy.chooseTransport refuses anything else).
import {
  freezeSource,
  handOver,
  timedSteps,
  rollBack,
  type DestinationSide,
  type LazyWindow,
  type SourceSide,
  type SwitchoverHooks,
  type SwitchoverResult,
} from './switchover.js';

export interface LazySourceSide extends SourceSide {
  /** The hold lets CRIU start its lazy page server; resolves once it listens. */
  openWindow(): Promise<void>;
  /** How the checkpoint ended: 0 once every page was fetched (the source is gone). */
  checkpointEnd(): Promise<number | null>;
  /** Cuts the lazy page server (CRIU then resumes the source). */
  abortLazyServer(): Promise<void>;
  /** After CRIU resumed the source: the address back, CRIU's lock rules off. */
  afterWindowRollback(): Promise<void>;
  /** Kills a source copy CRIU resumed although the destination has every page. */
  removeResumedCopy(why: string): Promise<void>;
  /** The window is settled by the tool: the source's watchdog has nothing left to do. */
  endWatchdog(): Promise<void>;
}

export interface LazyDestinationSide extends DestinationSide {
  /** Resolves once the guard said how the window ended, or its channel closed. */
  guardEnded(): Promise<void>;
  /** How the guard ended the window, waiting at most LIMITMS (over a new connection if need be); undefined: unknown. */
  windowEnd(limitMs: number): Promise<'committed' | 'removed' | undefined>;
  /** Asks the guard to cut the window (it kills the daemon, then removes its copy). */
  cutWindow(): void;
  /** The daemon's exit status as the guard said it. */
  readonly daemonExit: string | undefined;
  lazyFigures(): Promise<{ onDemand: number; transferred: number; total: number } | undefined>;
}

export interface PostCopyHooks extends SwitchoverHooks {
  /** The guard's window limits (seconds): its daemon is killed after stallS without a byte, or windowS in all. */
  stallS: number;
  windowS: number;
  /** Tests only: waits at a named point for a test to act (faults.ts); nothing in production. */
  pause(point: string): Promise<void>;
}

/** What follows from how each side ended the window (see the table above). Pure. */
export type WindowOutcome =
  | { runningOn: 'destination'; removeSource: boolean }
  | { runningOn: 'source' }
  | { runningOn: 'nowhere' }
  | { runningOn: 'in-doubt'; why: string };

/** GUARD: the guard's end (undefined: unknown); CHECKPOINT: the source's exit status (undefined: still running, null: killed). */
export function windowOutcome(
  guard: 'committed' | 'removed' | undefined,
  checkpoint: number | null | undefined,
): WindowOutcome {
  if (guard === 'committed') return { runningOn: 'destination', removeSource: checkpoint !== 0 };
  if (guard === 'removed') {
    if (checkpoint === 0) return { runningOn: 'nowhere' };
    if (checkpoint === undefined)
      return {
        runningOn: 'in-doubt',
        why: "the destination removed its copy, but the source's checkpoint has not ended",
      };
    return { runningOn: 'source' };
  }
  if (checkpoint === 0)
    return {
      runningOn: 'in-doubt',
      why: 'the source was destroyed (every page was sent), but the destination cannot be asked whether its copy was kept',
    };
  if (checkpoint === undefined)
    return { runningOn: 'in-doubt', why: "neither the source's checkpoint nor the destination's guard has ended" };
  return {
    runningOn: 'in-doubt',
    why: 'CRIU resumed the source (its network stays locked), but the destination cannot be asked whether it kept its copy',
  };
}

export async function postCopySwitchover(
  src: LazySourceSide,
  dst: LazyDestinationSide,
  hooks: PostCopyHooks,
): Promise<SwitchoverResult> {
  const { h, partsOf } = timedSteps(hooks);
  const f = await freezeSource(src, dst, h, 'freeze and dump all but the memory');
  if ('result' in f) return f.result;
  const { t0, preFreezeMs } = f;

  // Until the window opens, a failure (or the tool's death) rolls back as without post-copy.
  try {
    await handOver(src, dst, h, 'copy images (all but the memory)');
    h.killPoint('copy');
  } catch (err) {
    return rollBack(src, dst, h, err as Error);
  }

  await src.record('lazy-window');
  h.killPoint('before-window');
  let tRestored: number | undefined;
  try {
    await h.step('window', 'start the lazy page server on the source (the tasks stay frozen)', () => src.openWindow());
    h.killPoint('window-open');
    h.fail('window');
    await h.step('restore', 'restore on the destination (the memory follows)', () => dst.restore());
    tRestored = performance.now();
  } catch (err) {
    return settleWindow(src, dst, h, t0, undefined, err as Error);
  }
  h.killPoint('window');
  // The downtime ends once the restored copy serves: the steps so far are its parts.
  const downtimeParts = partsOf(tRestored - t0, preFreezeMs);
  const r = await settleWindow(src, dst, h, t0, tRestored);
  return r.runningOn === 'destination' ? { ...r, downtimeParts } : r;
}

/**
 * The window's end: waits for either side to end it (or cuts it, on ERROR), then for the
 * guard's decision and the source's checkpoint, and makes the source follow the guard.
 */
async function settleWindow(
  src: LazySourceSide,
  dst: LazyDestinationSide,
  h: PostCopyHooks,
  t0: number,
  tRestored: number | undefined,
  error?: Error,
): Promise<SwitchoverResult> {
  let cause = error;
  const srcEnd = src.checkpointEnd();
  let srcEnded = false;
  void srcEnd.then(() => (srcEnded = true));
  if (!cause) {
    await h
      .step('pages', 'move the memory while the container runs (lazy window)', async () => {
        await h.pause('lazy-window');
        h.fail('pages');
        await Promise.race([srcEnd, dst.guardEnded()]);
      })
      .catch((err: Error) => (cause ??= err));
  }
  // Cut: the guard kills its daemon (its TLS session breaks: the source's CRIU resumes
  // the tasks) and removes its copy.
  if (cause) dst.cutWindow();
  h.killPoint('window-ended');
  // The guard decides within its limits; once the source has ended, the guard's daemon
  // has lost its peer and ends within the stall limit.
  const guardLimitS = cause ? 60 : srcEnded ? h.stallS + 30 : h.windowS + h.stallS + 30;
  const guard = await dst.windowEnd(guardLimitS * 1000);
  const windowEnded = performance.now();
  // Once the guard has decided its daemon is gone: CRIU has nothing left to wait for (a
  // clean close reaches it within a round trip). A cut now is safe whatever CRIU was
  // doing: the source then resumes behind its lock and follows the guard like any other.
  let code = await raceTimeout(srcEnd, guard !== undefined ? 3000 : 30_000);
  if (code === undefined && guard !== undefined) {
    await src.abortLazyServer();
    code = await raceTimeout(srcEnd, 30_000);
  }
  const figures = tRestored !== undefined ? await dst.lazyFigures().catch(() => undefined) : undefined;
  const lazy: LazyWindow | undefined =
    tRestored !== undefined
      ? {
          windowMs: windowEnded - tRestored,
          pagesOnDemand: figures?.onDemand,
          pagesPushed: figures ? figures.transferred - figures.onDemand : undefined,
          pagesTotal: figures?.transferred,
          daemonExit: dst.daemonExit,
        }
      : undefined;
  const end = windowOutcome(guard, code);
  // Settled here, unless in doubt: then the watchdog runs migrate recover after the tool.
  if (end.runningOn !== 'in-doubt') await src.endWatchdog();
  const ckpt = code === undefined ? 'still running' : `exited ${code}`;
  if (end.runningOn === 'destination') {
    // Every page arrived: the destination's copy is whole. A source CRIU resumed must not run.
    if (end.removeSource) {
      if (code === undefined) await src.abortLazyServer();
      await src.removeResumedCopy(`the destination has every page but the source's checkpoint ${ckpt}`);
    }
    await src.afterCommit().catch((err) => h.warn(`after the commit: ${(err as Error).message}`));
    return { runningOn: 'destination', downtimeMs: (tRestored ?? performance.now()) - t0, lazy };
  }
  if (end.runningOn === 'source') {
    await h.step('rollback', 'roll back (the source resumed; address back, lock rules off)', () =>
      src.afterWindowRollback(),
    );
    const why =
      cause ??
      new Error(
        `the lazy transfer broke (the destination's daemon exited ${dst.daemonExit ?? 'unknown'}, the source's checkpoint ${ckpt})`,
      );
    const lost =
      tRestored !== undefined
        ? '; what the container did on the destination in the lazy window is lost, and its TCP peers were reset'
        : '';
    return { runningOn: 'source', error: new Error(`${why.message}${lost}`), destinationClean: true, lazy };
  }
  if (end.runningOn === 'nowhere') {
    return {
      runningOn: 'nowhere',
      error: new Error(
        `the source's CRIU destroyed the source as if every page had been sent, but the destination's daemon exited ${dst.daemonExit ?? 'unknown'} without them and its incomplete copy was removed: the container runs nowhere`,
      ),
    };
  }
  return {
    runningOn: 'in-doubt',
    error: new Error(
      `the lazy window could not be settled: ${end.why} (source's checkpoint ${ckpt}; destination: ${guard ?? 'unknown'})${cause ? `: ${cause.message}` : ''}`,
    ),
  };
}

async function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p,
    new Promise<undefined>((resolve) => (t = setTimeout(() => resolve(undefined), ms))),
  ]);
  clearTimeout(t);
  return r;
}
