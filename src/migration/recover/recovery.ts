// What `migrate recover` decides for a migration the tool did not finish, from what the
// two hosts say now. Pure: the facts in, the actions out (recover.ts gathers and acts).
import type { HoldState } from '../switchover/hold.js';
import type { IntentPhase } from './intent.js';

export interface RecoveryFacts {
  /** The source's hold files (verdict, final); undefined verdict: the hold never decided. */
  hold: HoldState;
  /** Whether the source's checkpoint (runc checkpoint, holding) still runs. */
  checkpointRunning: boolean;
  /** The destination's guard, as its files say; undefined: the destination cannot be reached. */
  guard?: { committed: boolean; removed: boolean; alive: boolean; present: boolean };
  /** The record's phase: from 'committing' on, the word commit may have reached the destination. */
  phase: IntentPhase;
  /** The operator says the destination's committed copy is lost and the frozen source may resume (recover --resume-source). */
  resumeSource?: boolean;
  /** runc state of the container on the destination ('missing' if none); undefined: unreachable. */
  destinationStatus?: string;
  /** Post-copy: the checkpoint's exit status once it ended (0: every page was fetched; the source is gone). */
  checkpointExit?: number;
}

export type RecoveryDecision =
  /** Someone is still deciding (the hold or the guard): look again shortly. */
  | { action: 'wait'; why: string }
  /** The destination cannot be reached and the source is in doubt: nothing may be decided. */
  | { action: 'in-doubt'; why: string }
  /**
   * The container ends on the source: the destination's copy (if any) goes, the source's
   * hold is told rollback (if it still waits). afterLazyWindow: CRIU resumed it at the end
   * of a broken lazy window: the address goes back to it and CRIU's lock rules go.
   */
  | {
      action: 'source';
      why: string;
      finalVerdict?: 'rollback';
      removeDestinationCopy: boolean;
      afterLazyWindow?: boolean;
    }
  /**
   * The container ends on the destination: the source's hold is told commit (if it still
   * waits); removeSourceCopy: a source CRIU resumed must go; resumeCopy: the guard marked its
   * commit but may not have continued every task of its stopped copy.
   */
  | { action: 'destination'; why: string; finalVerdict?: 'commit'; removeSourceCopy?: boolean; resumeCopy?: boolean }
  /**
   * The destination committed (or may have) and its copy is gone: committed is final, so
   * the frozen source is kept as it is for the operator (recover --resume-source resumes it).
   */
  | { action: 'kept'; why: string }
  /** Post-copy: CRIU destroyed the source and the destination removed its incomplete copy: nothing is left to run. */
  | { action: 'nowhere'; why: string };

/** The phases from which the word commit may have reached the destination. */
const COMMIT_SENT: IntentPhase[] = ['committing', 'destination-committed', 'committed'];

export function decideRecovery(f: RecoveryFacts): RecoveryDecision {
  const dstRuns = f.destinationStatus === 'running';
  const copyAbsent = f.destinationStatus === 'missing';
  // Pre-copy: the container never stopped running on the source; only the pre-dumps'
  // images are left (once a pre-dump still under way has ended).
  if (f.phase === 'precopy') {
    if (f.checkpointRunning) return { action: 'wait', why: 'a pre-dump is still under way' };
    return {
      action: 'source',
      why: 'the tool died during pre-copy: the container kept running on the source',
      removeDestinationCopy: false,
    };
  }
  // The migration had rolled back, the destination confirmed clean; only its work directory was left.
  if (f.phase === 'rolled-back')
    return {
      action: 'source',
      why: 'the migration had rolled back; what the clean-up left on the destination is removed',
      removeDestinationCopy: false,
    };
  // The migration had committed on both hosts; only the clean-up was left.
  if (f.phase === 'committed')
    return { action: 'destination', why: 'the migration had committed; what the clean-up left is removed' };
  // The final verdict was written: the source knows its fate; the destination must match.
  if (f.hold.final !== undefined) {
    if (f.hold.final === 'commit')
      return {
        action: 'destination',
        why: 'the final verdict was commit',
        resumeCopy: f.guard?.committed && f.destinationStatus === 'running',
      };
    return { action: 'source', why: `the final verdict was ${f.hold.final}`, removeDestinationCopy: !copyAbsent };
  }
  if (f.hold.verdict === 'lazy') {
    // Post-copy's window: the destination's guard decides alone (postcopy.ts); the source
    // follows it. The source's watchdog ends the checkpoint within its limits.
    if (f.checkpointRunning)
      return {
        action: 'wait',
        why: "the lazy transfer is still under way (the source's watchdog ends it within its limits)",
      };
    if (f.guard?.alive && !f.guard.committed && !f.guard.removed)
      return { action: 'wait', why: "the destination's guard is still deciding the lazy window" };
    if (f.guard?.committed && dstRuns) {
      return f.checkpointExit === 0
        ? { action: 'destination', why: 'every page reached the destination (the source was destroyed)' }
        : {
            action: 'destination',
            why: 'every page reached the destination, but CRIU resumed the source',
            removeSourceCopy: true,
          };
    }
    if (f.checkpointExit === 0) {
      if (!f.guard || f.destinationStatus === undefined)
        return {
          action: 'in-doubt',
          why: 'the source was destroyed (every page sent); the destination cannot be reached to confirm its copy',
        };
      if (dstRuns && !f.guard.removed)
        return {
          action: 'destination',
          why: 'the source was destroyed (every page sent) and the destination runs the copy',
        };
      return {
        action: 'nowhere',
        why: `CRIU destroyed the source as if every page had been sent, but the destination's copy is ${f.guard.removed ? 'removed' : f.destinationStatus}`,
      };
    }
    // CRIU resumed the source (its network still locked). Unless the guard committed,
    // the copy can never be whole.
    if (!f.guard || f.destinationStatus === undefined)
      return {
        action: 'in-doubt',
        why: 'CRIU resumed the source (its network stays locked), but the destination cannot be reached to learn whether it kept its copy',
      };
    return {
      action: 'source',
      why: 'the lazy transfer broke: CRIU resumed the source',
      removeDestinationCopy: !copyAbsent && !f.guard.removed,
      afterLazyWindow: true,
    };
  }
  if (f.hold.verdict === 'prepared') {
    // In doubt: only the destination's guard knows whether it committed.
    if (!f.guard || f.destinationStatus === undefined)
      return { action: 'in-doubt', why: 'the source is prepared and the destination cannot be reached' };
    const rollback = (why: string): RecoveryDecision => ({
      action: 'source',
      why,
      finalVerdict: 'rollback',
      removeDestinationCopy: !copyAbsent,
    });
    const kept = (why: string): RecoveryDecision =>
      f.resumeSource
        ? rollback(`${why}; the operator asked to resume the source (--resume-source)`)
        : {
            action: 'kept',
            why: `${why}: the frozen source is kept, never resumed once the destination may have committed`,
          };
    if (f.guard.committed) {
      // runc says "running" for a stopped copy too: the guard, or recover, continues it.
      if (dstRuns)
        return {
          action: 'destination',
          why: 'the destination committed and has the container',
          finalVerdict: 'commit',
          resumeCopy: true,
        };
      return kept(`the destination committed but its copy is ${f.destinationStatus}`);
    }
    if (f.guard.alive && !f.guard.removed) return { action: 'wait', why: "the destination's guard is still deciding" };
    if (f.guard.removed) return rollback('the destination removed its copy without committing');
    if (!f.guard.present) {
      // No trace of the guard (a reboot wiped its files): whether it committed is unknown
      // once the word commit may have been sent.
      if (COMMIT_SENT.includes(f.phase))
        return kept(
          `the destination shows no trace of its guard (rebooted?) and the commit may have reached it; its copy is ${f.destinationStatus}`,
        );
      return rollback('the destination never committed (the word commit was never sent)');
    }
    // The guard died without a last word and without its commit marker: it never
    // continued its copy, which is still stopped if it is there.
    return rollback('the destination never committed (its guard ended without a word)');
  }
  if (f.hold.verdict !== undefined) {
    // The hold rolled back on its own (the tool died before the prepare) or was told to.
    return {
      action: 'source',
      why: `the source's hold ended with ${f.hold.verdict}`,
      removeDestinationCopy: !copyAbsent && !(f.guard?.removed ?? false),
    };
  }
  if (f.checkpointRunning) return { action: 'wait', why: "the source's checkpoint has not reached its hold yet" };
  // The checkpoint ended before any verdict: the dump failed and the source resumed.
  return { action: 'source', why: 'the dump ended before the hold', removeDestinationCopy: !copyAbsent };
}
