// The result of a run: the figures a human reads at the end, and the one JSON object
// --json prints on stdout. Downtime is measured from the freeze (the final checkpoint
// starts) until the destination's runc reports the restored container running.
import chalk from 'chalk';
import { formatBytes, formatMs, type PhaseTiming } from './progress.js';
import type { ExitCode } from './errors.js';
import type { DumpStats } from './criustats.js';

export type Outcome =
  | 'migrated'
  | 'dry-run'
  | 'refused' // usage or preflight: nothing frozen
  | 'rolled-back' // failed after the freeze; running on the source again
  | 'unsafe' // could not roll back cleanly
  | 'interrupted';

export interface Report {
  outcome: Outcome;
  exitCode: ExitCode;
  container: string;
  source: string;
  destination: string;
  mode?: 'one-shot' | 'iterative';
  /** Pre-copy: each iteration's figures, and why the loop stopped. */
  iterations?: Array<Record<string, number | undefined>>;
  stopReason?: string;
  stopWhy?: string;
  /** CRIU's own figures for the final dump (pages written during the freeze...). */
  finalDump?: DumpStats;
  /** What the stop rule predicted for the downtime when it switched over. */
  predictedDowntimeMs?: number;
  transport?: string;
  diskless: boolean;
  /** Memory the container used before the migration (runc events --stats). */
  memoryBytes?: number;
  downtimeMs?: number;
  totalMs: number;
  /** Checkpoint image bytes that arrived on the destination. */
  bytesMoved?: number;
  phases: PhaseTiming[];
  /** Where the container runs when the tool exits: what a script needs to know. */
  runningOn: 'source' | 'destination' | 'unknown';
  warnings: string[];
  error?: { message: string; hint?: string; criuErrors?: string[] };
}

export function toJson(r: Report): string {
  const round = (n: number | undefined) => (n === undefined ? undefined : Math.round(n * 10) / 10);
  return JSON.stringify({
    ...r,
    downtimeMs: round(r.downtimeMs),
    predictedDowntimeMs: round(r.predictedDowntimeMs),
    totalMs: round(r.totalMs),
    phases: r.phases.map((p) => ({ name: p.name, ms: round(p.ms) })),
  });
}

export function humanSummary(r: Report): string {
  const lines: string[] = [];
  if (r.outcome === 'migrated') {
    lines.push(chalk.green(`${r.container} migrated to ${r.destination}`));
    lines.push(`  downtime     ${formatMs(r.downtimeMs ?? 0)}  (frozen until running on the destination)`);
    if (r.predictedDowntimeMs !== undefined) lines.push(`  predicted    ${formatMs(r.predictedDowntimeMs)}  (stop rule, after ${r.iterations?.length} pre-copy iterations: ${r.stopReason})`);
    lines.push(`  total time   ${formatMs(r.totalMs)}`);
    if (r.bytesMoved !== undefined) lines.push(`  bytes moved  ${formatBytes(r.bytesMoved)}  (${r.transport}${r.diskless ? ', diskless' : ', on disk'})`);
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
  const where = {
    source: `The container ${r.container} is running on the source.`,
    destination: `The container ${r.container} is running on the destination.`,
    unknown: `Where ${r.container} runs could not be confirmed: check with runc state on both hosts.`,
  }[r.runningOn];
  lines.push(chalk.bold(`  ${where}`));
  return lines.join('\n');
}
