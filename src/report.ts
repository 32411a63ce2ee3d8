// The result of a run: the figures a human reads at the end, and the one JSON object
// --json prints on stdout. Downtime is measured from the freeze (the final checkpoint
// starts) until the destination's runc reports the restored container running.
import chalk from 'chalk';
import { formatBytes, formatMs, type PhaseTiming } from './progress.js';
import type { ExitCode } from './errors.js';
import type { DumpStats } from './criustats.js';
import type { FilesReport } from './migration/files/rootfs.js';

export type Outcome =
  | 'migrated'
  | 'dry-run'
  | 'refused' // usage or preflight: nothing frozen
  | 'rolled-back' // failed after the freeze; running on the source again
  | 'unsafe' // could not roll back cleanly
  | 'in-doubt' // the tool could not learn whether the destination committed: migrate recover settles it
  | 'recovered' // migrate recover settled an unfinished migration (runningOn says how)
  | 'nothing-to-recover'
  | 'interrupted';

export interface Report {
  outcome: Outcome;
  exitCode: ExitCode;
  /** The tool's version. */
  version: string;
  container: string;
  source: string;
  destination: string;
  mode?: 'one-shot' | 'iterative' | 'post-copy' | 'hybrid';
  /**
   * Post-copy: the lazy window (from the restore until the last page arrived, or until it
   * was cut), and how the memory came: faults served on demand against pages pushed.
   * daemonExit: the destination's lazy-pages daemon's exit status (0: it had every page).
   * rolledBack: the window broke and the source resumed; what the container did on the
   * destination in the window is lost and its TCP peers were reset.
   */
  postCopy?: {
    windowMs: number;
    pagesOnDemand?: number;
    pagesPushed?: number;
    pagesTotal?: number;
    daemonExit?: string;
    rolledBack?: boolean;
  };
  /** Pre-copy: each iteration's figures, and why the loop stopped. */
  iterations?: Array<Record<string, number | undefined>>;
  stopReason?: string;
  stopWhy?: string;
  /** CRIU's own figures for the final dump (pages written during the freeze...). */
  finalDump?: DumpStats;
  /** What the stop rule predicted for the downtime when it switched over. */
  predictedDowntimeMs?: number;
  transport?: string;
  /** Why preflight chose it (auto's reasoning, or the flag). */
  transportWhy?: string;
  diskless: boolean;
  /** Memory the container used before the migration (runc events --stats). */
  memoryBytes?: number;
  /**
   * From the freeze until the service runs on the destination and can be reached there
   * (with --move-ip: unmuted and announced; post-copy: the restored copy serving).
   */
  downtimeMs?: number;
  /** The downtime's parts: each step's time inside it, and `other` (switchover.ts DowntimeParts). */
  downtimeParts?: Record<string, number>;
  totalMs: number;
  /** Checkpoint image bytes that arrived on the destination. */
  bytesMoved?: number;
  /** The container's files (rootfs, volumes): what was synced, the pre-sync and the final delta (in the freeze). */
  files?: FilesReport;
  /**
   * A replica of the container on the destination (migrate replicate's standby): its
   * checkpoint the root filesystem started from, the replicate stopped for this
   * migration, and whether the replica was removed after the commit.
   */
  replica?: { dir: string; seq: number; frozenAt: string; stoppedReplicate?: number; removed?: boolean };
  phases: PhaseTiming[];
  /**
   * Where the container runs when the tool exits: what a script needs to know. 'none': it
   * was not running on the source when the tool looked (missing, stopped or paused), and
   * the tool changed nothing; 'unknown': the tool could not tell (a refusal before it
   * looked, or a failure it could not confirm).
   */
  runningOn: 'source' | 'destination' | 'none' | 'unknown';
  warnings: string[];
  /** --dry-run: the plan a run would follow, line by line as printed. */
  plan?: string[];
  /** migrate recover: why the unfinished migration ended where it did. */
  recoveredWhy?: string;
  /** What went wrong: the stage it happened in (migrate only), what to do, CRIU's own error lines. */
  error?: { stage?: string; message: string; hint?: string; criuErrors?: string[] };
}

export function toJson(r: Report): string {
  const round = (n: number | undefined) => (n === undefined ? undefined : Math.round(n * 10) / 10);
  return JSON.stringify({
    ...r,
    downtimeMs: round(r.downtimeMs),
    downtimeParts: r.downtimeParts
      ? Object.fromEntries(Object.entries(r.downtimeParts).map(([k, v]) => [k, round(v)]))
      : undefined,
    predictedDowntimeMs: round(r.predictedDowntimeMs),
    totalMs: round(r.totalMs),
    phases: r.phases.map((p) => ({ name: p.name, ms: round(p.ms) })),
    postCopy: r.postCopy ? { ...r.postCopy, windowMs: round(r.postCopy.windowMs) } : undefined,
  });
}

export function humanSummary(r: Report): string {
  const lines: string[] = [];
  if (r.outcome === 'migrated') {
    lines.push(chalk.green(`${r.container} migrated to ${r.destination}`));
    lines.push(
      `  downtime     ${formatMs(r.downtimeMs ?? 0)}  (frozen until it runs${r.postCopy ? '' : ' and can be reached'} on the destination)`,
    );
    if (r.downtimeParts)
      lines.push(
        `               ${Object.entries(r.downtimeParts)
          .map(([k, v]) => `${k} ${formatMs(v)}`)
          .join(', ')}`,
      );
    const pc = r.postCopy;
    if (pc)
      lines.push(
        `  lazy window  ${formatMs(pc.windowMs)}  (memory moved while it ran: ${pc.pagesTotal ?? '?'} pages, ${pc.pagesOnDemand ?? '?'} on demand, ${pc.pagesPushed ?? '?'} pushed)`,
      );
    if (r.predictedDowntimeMs !== undefined)
      lines.push(
        `  predicted    ${formatMs(r.predictedDowntimeMs)}  (stop rule, after ${r.iterations?.length} pre-copy iterations: ${r.stopReason})`,
      );
    lines.push(`  total time   ${formatMs(r.totalMs)}`);
    if (r.bytesMoved !== undefined)
      lines.push(
        `  bytes moved  ${formatBytes(r.bytesMoved)}  (${r.transport}${r.diskless ? ', diskless' : ', on disk'})`,
      );
    const f = r.files;
    if (f?.final) {
      const pre = f.presync.reduce((a, p) => a + p.figures.transferredFileBytes, 0);
      lines.push(
        `  files        ${f.trees.map((t) => t.what).join(', ')}: pre-sync ${formatBytes(pre)}; final delta ${f.final.figures.filesTransferred} files, ${formatBytes(f.final.figures.transferredFileBytes)} in ${formatMs(f.final.ms)} (frozen)`,
      );
    }
    if (f?.shared.length) lines.push(`  files        shared storage, not synced: ${f.shared.join(', ')}`);
  } else if (r.outcome === 'recovered') {
    lines.push(
      chalk.green(
        `recovered: ${r.container} runs on the ${r.runningOn}${r.recoveredWhy ? ` (${r.recoveredWhy})` : ''}`,
      ),
    );
  } else if (r.outcome === 'nothing-to-recover') {
    lines.push(`nothing to recover: no unfinished migration of ${r.container} on this host`);
  } else if (r.outcome === 'dry-run') {
    lines.push(`dry run: preflight passed; nothing was frozen or changed (${formatMs(r.totalMs)})`);
  }
  return lines.join('\n');
}

export function humanError(r: Report): string {
  if (!r.error) return '';
  const lines = [chalk.red(`error: ${r.error.message}`)];
  for (const e of r.error.criuErrors ?? []) lines.push(chalk.dim(`  ${e}`));
  if (r.error.hint) lines.push(`  ${r.error.hint}`);
  lines.push(chalk.bold(`  ${closingLine(r)}`));
  return lines.join('\n');
}

/** The last line after a failure: where the container is, and only what the tool knows. */
export function closingLine(r: Report): string {
  const untouched = r.outcome === 'refused' || r.outcome === 'interrupted';
  if (untouched) {
    return {
      source: `Nothing was frozen or changed: ${r.container} is running on the source.`,
      destination: `Nothing was frozen or changed: ${r.container} is running on the destination.`,
      none: `Nothing was frozen or changed; ${r.container} was not running on the source.`,
      unknown: 'Nothing was frozen or changed.',
    }[r.runningOn];
  }
  return {
    source: `The container ${r.container} is running on the source.`,
    destination: `The container ${r.container} is running on the destination.`,
    none: `The container ${r.container} is not running on either host.`,
    unknown:
      r.outcome === 'in-doubt'
        ? `${r.container} is frozen on the source and may run on the destination: run migrate recover ${r.container} ${r.destination} to settle it.`
        : `Where ${r.container} runs could not be confirmed: check with runc state on both hosts.`,
  }[r.runningOn];
}
