// The switchover with post-copy (--post-copy): CRIU's lazy pages. The final dump leaves
// the memory in the frozen tasks; everything else is copied as usual; the destination
// restores at once and its lazy-pages daemon fetches the memory from a lazy page server
// that CRIU runs on the source (CRIU's TLS), on demand and pushed in the background.
//
// The lazy window, from the restore until the last page arrived, is a state of its own:
// the container runs on the destination, but its memory is split between the hosts.
// CRIU decides how it ends, on the source:
//   - the daemon says "done" (every page arrived): CRIU destroys the frozen tasks and
//     runc the container. The destination's guard commits by itself (its daemon exited 0).
//   - the TLS session breaks (the link, the daemon or the destination died, or the tool
//     cut the window): CRIU resumes the tasks, which were whole all along. The guard
//     removes its copy, which can never be whole. What the copy did in the window is
//     lost, and its TCP peers are reset; the tool gives the address back and lifts CRIU's
//     lock rules (the hold would have, but its script has exited).
// Only TLS: a plain connection that closes reads as "done" to the lazy page server, so a
// dying daemon would destroy the source (policy.chooseTransport refuses anything else).
// A daemon also says "done" when its tasks are gone: a copy that dies by itself in the
// window takes the source with it. The tool therefore never removes the copy first: the
// guard kills the daemon, then settles.
//
// Before the window opens this is switchover.ts's rollback: the hold resumes the source.
// If the tool dies in the window, the transfer still decides, the guard settles by
// itself, and `migrate recover` finishes the source's side (the address, the lock rules).
import { failPoint, pausePoint } from './faults.js';
import { freezeSource, rollBack, type DestinationSide, type LazyWindow, type SourceSide, type SwitchoverHooks, type SwitchoverResult } from './switchover.js';

export interface LazySourceSide extends SourceSide {
  /** The hold lets CRIU start its lazy page server; resolves once it listens. */
  openWindow(): Promise<void>;
  /** How the checkpoint ended: 0 once every page was fetched (the source is gone). */
  checkpointEnd(): Promise<number | null>;
  /** Ends a lazy page server no daemon has reached (CRIU then resumes the source). */
  abortLazyServer(): Promise<void>;
  /** After CRIU resumed the source: the address back, CRIU's lock rules off. */
  afterWindowRollback(): Promise<void>;
  /** Kills a source copy CRIU resumed although the destination has every page. */
  removeResumedCopy(why: string): Promise<void>;
}

export interface LazyDestinationSide extends DestinationSide {
  /** The lazy-pages daemon's exit status once the guard says it ended; undefined: its channel closed first, or LIMITMS passed. */
  lazyEnded(limitMs: number): Promise<string | undefined>;
  /** Asks the guard to cut the window (it kills the daemon). */
  cutWindow(): void;
  /** Tells the guard how the source's checkpoint ended: commit (the source is gone) or remove (it resumed); resolves with what it did. */
  settleWindow(verdict: 'commit' | 'remove'): Promise<'committed' | 'removed' | undefined>;
  lazyFigures(): Promise<{ onDemand: number; transferred: number; total: number } | undefined>;
  /** How far the daemon has got (the size of its log, which grows with every page it handles); undefined: unknown. */
  lazyProgress(): Promise<number | undefined>;
}

export interface PostCopyHooks extends SwitchoverHooks {
  /** The window is cut when the transfer made no progress for this long (a silent link, a stuck daemon). */
  windowStallMs: number;
}

export async function postCopySwitchover(src: LazySourceSide, dst: LazyDestinationSide, h: PostCopyHooks): Promise<SwitchoverResult> {
  const f = await freezeSource(src, dst, h, 'freeze and dump all but the memory');
  if ('result' in f) return f.result;
  const { t0 } = f;

  // Until the window opens, a failure (or the tool's death) rolls back as without post-copy.
  try {
    h.killPoint('after-dump');
    failPoint('after-dump');
    const guard = dst.startGuard();
    guard.catch(() => undefined);
    if (h.moveIp) await h.step('move-ip', 'release the service address on the source', () => src.releaseAddress());
    await h.step('copy', 'copy images (all but the memory)', () => dst.copyImages());
    if (h.syncFiles) await h.step('sync', 'sync what changed in the files (final delta)', () => dst.syncFiles());
    await guard;
    h.killPoint('copy');
  } catch (err) {
    return rollBack(src, dst, h, err as Error);
  }

  await src.record('lazy-window');
  h.killPoint('before-window');
  let tRestored: number | undefined;
  try {
    await h.step('window', 'start the lazy page server on the source (the tasks stay frozen)', () => src.openWindow());
    failPoint('window');
    await h.step('restore', 'restore on the destination (the memory follows)', () => dst.restore());
    tRestored = performance.now();
  } catch (err) {
    return settleWindow(src, dst, h, t0, undefined, err as Error);
  }
  h.killPoint('window');
  return settleWindow(src, dst, h, t0, tRestored);
}

/**
 * The window's end: waits for the transfer (or cuts it, on ERROR or when it outlasts its
 * limit), then reads both hosts' outcomes and makes them agree.
 */
async function settleWindow(src: LazySourceSide, dst: LazyDestinationSide, h: PostCopyHooks, t0: number, tRestored: number | undefined, error?: Error): Promise<SwitchoverResult> {
  let cause = error;
  const srcEnd = src.checkpointEnd();
  if (!cause) {
    await h.step('pages', 'move the memory while the container runs (lazy window)', async () => {
      await pausePoint('lazy-window');
      failPoint('pages');
      // As long as pages keep arriving, the window lasts (a container that touches its
      // pages one by one pays a round trip each); a transfer stalled for windowStallMs is cut.
      let progress = await dst.lazyProgress();
      let movedAt = performance.now();
      for (;;) {
        const first = await Promise.race([srcEnd.then((code) => ({ code })), dst.lazyEnded(Math.min(5000, h.windowStallMs)).then((daemon) => ({ daemon }))]);
        if ('code' in first) {
          if (first.code !== 0) cause = new Error(`the source's lazy page server failed (runc checkpoint exited ${first.code}): the transfer broke`);
          break;
        }
        if (first.daemon !== undefined) break;
        const now = await dst.lazyProgress();
        if (now !== undefined && now !== progress) (progress = now), (movedAt = performance.now());
        if (performance.now() - movedAt > h.windowStallMs) {
          cause = new Error(`the lazy transfer made no progress for ${Math.round(h.windowStallMs / 1000)} s (a silent link, or the destination's guard cannot be heard)`);
          break;
        }
      }
    }).catch((err: Error) => (cause ??= err));
  }
  // Cut: the daemon goes first (its TLS session breaks: the source's CRIU resumes the tasks).
  if (cause) dst.cutWindow();
  await dst.lazyEnded(cause ? 30_000 : 60_000);
  const windowEnded = performance.now();
  // The source's checkpoint says how it ended; a lazy page server nobody reached is ended.
  let code = await raceTimeout(srcEnd, cause ? 1000 : 10_000);
  if (code === undefined) {
    await src.abortLazyServer();
    code = await raceTimeout(srcEnd, 30_000);
  }
  const outcome = code === undefined ? undefined : await dst.settleWindow(code === 0 ? 'commit' : 'remove');
  const figures = tRestored !== undefined ? await dst.lazyFigures().catch(() => undefined) : undefined;
  const lazy: LazyWindow | undefined =
    tRestored !== undefined
      ? {
          windowMs: windowEnded - tRestored,
          pagesOnDemand: figures?.onDemand,
          pagesPushed: figures ? figures.transferred - figures.onDemand : undefined,
          pagesTotal: figures?.transferred,
        }
      : undefined;

  if (outcome === 'committed') {
    // Every page arrived: the destination's copy is whole. The source is gone, or was
    // resumed by a CRIU that missed the daemon's last word: then it must not run.
    if (code !== 0) await src.removeResumedCopy(`the destination has every page but the source's checkpoint exited ${code}`);
    await src.afterCommit().catch((err) => h.warn(`after the commit: ${(err as Error).message}`));
    return { runningOn: 'destination', downtimeMs: (tRestored ?? performance.now()) - t0, lazy };
  }
  if (outcome === 'removed' && code !== 0 && code !== undefined) {
    await h.step('rollback', 'roll back (the source resumed; address back, lock rules off)', () => src.afterWindowRollback());
    const why = cause ?? new Error('the lazy transfer broke');
    const lost = tRestored !== undefined ? "; what the container did on the destination in the lazy window is lost, and its TCP peers were reset" : '';
    return { runningOn: 'source', error: new Error(`${why.message}${lost}`), destinationClean: true, lazy };
  }
  if (outcome === 'removed' && code === 0) {
    return { runningOn: 'nowhere', error: new Error("the lazy transfer ended as complete on the source (CRIU destroyed it) but the destination's copy was removed: the container runs nowhere") };
  }
  return {
    runningOn: 'in-doubt',
    error: new Error(`the lazy window could not be settled (source's checkpoint: ${code === undefined ? 'still running' : `exited ${code}`}; destination: ${outcome ?? 'unknown'})${cause ? `: ${cause.message}` : ''}`),
  };
}

async function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([p, new Promise<undefined>((resolve) => (t = setTimeout(() => resolve(undefined), ms)))]);
  clearTimeout(t);
  return r;
}
