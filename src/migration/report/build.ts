// The report, built in one place from what the stages returned and how the run failed (if
// it did): the stage, where the container runs as confirmed, the hint, CRIU's evidence.
// Pure: nothing here looks at a host.
import { packageVersion } from '../../version.js';
import type { ReplicaBasis } from '../replica/basis.js';
import os from 'node:os';
import { CommandError, EXIT, MigrateError, type ExitCode } from '../../errors.js';
import type { Options } from '../../options.js';
import type { Progress } from '../../progress.js';
import type { Outcome, Report } from '../../report.js';
import type { FilesReport } from '../files/rootfs.js';
import type { PrecopyResult } from '../pages/precopy.js';
import type { DumpStats } from '../../criustats.js';
import type { DowntimeParts, LazyWindow } from '../switchover/switchover.js';
import { AfterFreezeError } from './outcome.js';

/** After a commit: what the report says of it. */
export interface Migrated {
  downtimeMs: number;
  downtimeParts?: DowntimeParts;
  bytesMoved?: number;
  finalDump?: DumpStats;
  /** Migrated, but the source may still hold its frozen copy: why. */
  sourceLeft?: string;
  lazy?: LazyWindow;
  announceFailed?: string;
}

/** Where a run was when it ended: the report names it with a failure. */
export type Stage = 'start' | 'earlier-run' | 'preflight' | 'plan' | 'prepare' | 'run';

/** What the preflight saw of the container on the source before a refusal. */
export type SeenBeforeFreeze = 'not-looked' | 'running' | 'not-running';

/** What the stages found and did, each part set by the stage that knows it. */
export interface Results {
  memoryBytes?: number;
  transport?: { name: string; why: string };
  mode?: Report['mode'];
  files?: FilesReport;
  precopy?: PrecopyResult;
  /** Post-copy: the lazy window, whether it committed or broke. */
  lazy?: Report['postCopy'];
  migrated?: Migrated;
  /** An earlier run had committed and was finished: nothing else ran. */
  recoveredWhy?: string;
  dryRun?: boolean;
  /** --dry-run: the plan, as it is printed. */
  plan?: string[];
  /** The destination's work directory that could not be removed after the run ended on one host. */
  remoteLeft?: string;
  /** The replica on the destination the root filesystem started from. */
  replica?: ReplicaBasis;
}

export interface Failure {
  readonly stage: Stage;
  readonly outcome: Outcome;
  readonly exitCode: ExitCode;
  readonly runningOn: Report['runningOn'];
  readonly message: string;
  readonly hint?: string;
  readonly criuErrors?: string[];
}

/** Where the container is after a refusal before the freeze: as the preflight last saw it. */
function beforeFreeze(seen: SeenBeforeFreeze): Report['runningOn'] {
  return seen === 'not-looked' ? 'unknown' : seen === 'running' ? 'source' : 'none';
}

/** A thrown error as a failure: after the freeze, before it, or a bug. */
export function failureOf(err: unknown, stage: Stage, seen: SeenBeforeFreeze): Failure {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e instanceof AfterFreezeError) {
    const outcome = e.inDoubt ? 'in-doubt' : e.exitCode === EXIT.ROLLED_BACK ? 'rolled-back' : 'unsafe';
    return {
      stage,
      outcome,
      exitCode: e.exitCode,
      runningOn: e.runningOn,
      message: e.message,
      hint: e.hint,
      criuErrors: e.criuErrors.length ? e.criuErrors : undefined,
    };
  }
  if (e instanceof MigrateError) {
    return {
      stage,
      outcome: e.exitCode === EXIT.INTERRUPTED ? 'interrupted' : 'refused',
      exitCode: e.exitCode,
      runningOn: beforeFreeze(seen),
      message: e.message,
      hint: e.hint,
    };
  }
  // A command failed before the freeze: nothing was changed on the source.
  if (e instanceof CommandError)
    return { stage, outcome: 'refused', exitCode: EXIT.PREFLIGHT, runningOn: beforeFreeze(seen), message: e.message };
  return {
    stage,
    outcome: 'refused',
    exitCode: EXIT.INTERNAL,
    runningOn: 'unknown',
    message: `internal error: ${e.stack ?? e.message}`,
  };
}

/** A new report: refused and unknown until the run says otherwise. */
export function newReport(
  opts: Options,
  progress: Progress,
  outcome: Outcome = 'refused',
  exitCode: ExitCode = EXIT.PREFLIGHT,
): Report {
  return {
    outcome,
    exitCode,
    version: packageVersion(),
    container: opts.container,
    source: os.hostname(),
    destination: opts.destination,
    diskless: opts.diskless,
    totalMs: 0,
    phases: progress.phases,
    runningOn: 'unknown',
    warnings: progress.warnings,
  };
}

/** The report of one `migrate` run. */
export function buildReport(
  opts: Options,
  progress: Progress,
  r: Results,
  failure: Failure | undefined,
  totalMs: number,
): Report {
  const report = newReport(opts, progress);
  report.totalMs = totalMs;
  report.memoryBytes = r.memoryBytes;
  report.transport = r.transport?.name;
  report.transportWhy = r.transport?.why;
  report.mode = r.mode;
  report.files = r.files;
  if (r.replica) {
    const { rootfs: _rootfs, frozenAt, ...rest } = r.replica;
    report.replica = { ...rest, frozenAt: new Date(frozenAt).toISOString() };
  }
  if (r.precopy) {
    const d = r.precopy.decision;
    Object.assign(report, {
      iterations: r.precopy.iterations.map((it) => ({ ...it })),
      stopReason: d.reason,
      stopWhy: d.why,
      predictedDowntimeMs: d.predictedDowntimeMs,
    });
  }
  report.postCopy = r.lazy;
  if (failure) {
    Object.assign(report, { outcome: failure.outcome, exitCode: failure.exitCode, runningOn: failure.runningOn });
    report.error = {
      stage: failure.stage,
      message: failure.message,
      hint: failure.hint,
      criuErrors: failure.criuErrors,
    };
  } else if (r.recoveredWhy !== undefined) {
    Object.assign(report, {
      outcome: 'recovered',
      exitCode: EXIT.OK,
      runningOn: 'destination',
      recoveredWhy: r.recoveredWhy,
    });
  } else if (r.dryRun) {
    Object.assign(report, { outcome: 'dry-run', exitCode: EXIT.OK, runningOn: 'source', plan: r.plan });
  } else if (r.migrated) {
    const m = r.migrated;
    Object.assign(report, {
      outcome: 'migrated',
      exitCode: EXIT.OK,
      runningOn: 'destination',
      downtimeMs: m.downtimeMs,
      downtimeParts: m.downtimeParts,
      bytesMoved: m.bytesMoved,
      finalDump: m.finalDump,
    });
    if (m.sourceLeft) {
      // Migrated, but the source may still hold its frozen copy: exit 5 says so.
      report.exitCode = EXIT.UNSAFE;
      report.error = { message: m.sourceLeft, hint: `Run: migrate recover ${opts.container} ${opts.destination}` };
    } else if (m.announceFailed) {
      // It runs on the destination, but its clients may not find it there.
      report.exitCode = EXIT.UNSAFE;
      report.error = {
        message: `migrated, but the service address was not announced on the destination (${m.announceFailed})`,
        hint: `On the destination: remove the DROP rule for ${opts.moveIp?.address}, set net.ipv4.conf.<dev>.arp_ignore back (0 unless you had another value), and send a gratuitous ARP (arping -U -c1 -s ADDR ADDR).`,
      };
    }
  } else {
    Object.assign(report, { outcome: 'refused', exitCode: EXIT.INTERNAL, runningOn: 'unknown' });
    report.error = { message: 'internal error: the run ended without a result' };
  }
  if (r.remoteLeft) {
    // The record stays (marked) so that migrate recover removes what is left there.
    const hint = `Run: migrate recover ${opts.container} ${opts.destination} once the destination can be reached; it removes what is left on both hosts.`;
    if (report.runningOn === 'destination' && !failure) {
      report.exitCode = EXIT.UNSAFE;
      report.error = {
        message: `migrated, but the destination's work directory ${r.remoteLeft} could not be removed (the connection was lost after the commit)`,
        hint,
      };
    } else if (report.error) {
      report.error = {
        ...report.error,
        message: `${report.error.message}; the destination's work directory ${r.remoteLeft} could not be removed`,
        hint: [report.error.hint, hint].filter(Boolean).join(' '),
      };
    }
  }
  return report;
}
