// How a run ends, in the report's terms: the outcome, the exit code, and where the
// container runs, always as the tool knows it and no more.
import os from 'node:os';
import { CommandError, EXIT, MigrateError, type ExitCode } from '../../errors.js';
import type { Options } from '../../options.js';
import type { Progress } from '../../progress.js';
import type { Report } from '../../report.js';
import { parseState, runc } from '../../runc.js';
import type { LocalSession } from '../session.js';
import { interruption } from '../../interrupt.js';

export { interruption };

class Interrupted extends MigrateError {
  constructor() {
    super(`interrupted by ${interruption.signal} before the freeze`, EXIT.INTERRUPTED, 'Nothing was frozen; run it again when ready.');
  }
}

export function checkInterrupt(): void {
  if (interruption.requested) throw new Interrupted();
}

/** A failure after the freeze: says where the container runs, or that the migration is in doubt. */
export class AfterFreezeError extends MigrateError {
  constructor(
    message: string,
    exitCode: ExitCode,
    hint: string | undefined,
    readonly criuErrors: string[],
    readonly runningOn: Report['runningOn'],
    readonly inDoubt = false,
  ) {
    super(message, exitCode, hint);
  }
}

/**
 * The error for a failure after a freeze, once the source has had its chance to resume:
 * rolled back only if the source runs and the destination holds no copy (dstClean).
 */
export async function afterFreeze(ctx: LocalSession, message: string, o: { hint?: string; criuErrors?: string[]; dstClean?: boolean } = {}): Promise<AfterFreezeError> {
  const r = await ctx.src.run(runc.state(ctx.srcRunc, ctx.opts.container), { allowFail: true });
  const running = r.code === 0 && parseState(r.stdout).status === 'running';
  const dstClean = o.dstClean ?? true;
  return new AfterFreezeError(
    message + (dstClean ? '' : ', but the destination could not be confirmed clean'),
    running && dstClean ? EXIT.ROLLED_BACK : EXIT.UNSAFE,
    dstClean ? o.hint : `Its guard removes its stopped copy by itself. Once the destination can be reached, run: migrate recover ${ctx.opts.container} ${ctx.opts.destination} (it confirms that and cleans up both hosts).`,
    o.criuErrors ?? [],
    running ? 'source' : 'unknown',
  );
}

/** A new report: refused and unknown until the run says otherwise. */
export function newReport(opts: Options, progress: Progress, outcome: Report['outcome'] = 'refused', exitCode: ExitCode = EXIT.PREFLIGHT): Report {
  return {
    outcome,
    exitCode,
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

/** What the preflight saw of the container on the source before a refusal. */
export type SeenBeforeFreeze = 'not-looked' | 'running' | 'not-running';

/** Where the container is after a refusal before the freeze: as the preflight last saw it. */
function beforeFreeze(seen: SeenBeforeFreeze): Report['runningOn'] {
  return seen === 'not-looked' ? 'unknown' : seen === 'running' ? 'source' : 'none';
}

/** Puts a failure into the report: after the freeze, before it, or a bug. */
export function reportFailure(report: Report, seen: SeenBeforeFreeze, err: unknown): void {
  const e = err as Error;
  if (e instanceof AfterFreezeError) {
    report.outcome = e.inDoubt ? 'in-doubt' : e.exitCode === EXIT.ROLLED_BACK ? 'rolled-back' : 'unsafe';
    report.exitCode = e.exitCode;
    report.runningOn = e.runningOn;
    report.error = { message: e.message, hint: e.hint, criuErrors: e.criuErrors.length ? e.criuErrors : undefined };
  } else if (e instanceof MigrateError) {
    report.runningOn = beforeFreeze(seen);
    report.outcome = e.exitCode === EXIT.INTERRUPTED ? 'interrupted' : 'refused';
    report.exitCode = e.exitCode;
    report.error = { message: e.message, hint: e.hint };
  } else if (e instanceof CommandError) {
    // A command failed before the freeze: nothing was changed on the source.
    report.runningOn = beforeFreeze(seen);
    report.outcome = 'refused';
    report.exitCode = EXIT.PREFLIGHT;
    report.error = { message: e.message };
  } else {
    report.runningOn = 'unknown';
    report.outcome = 'refused';
    report.exitCode = EXIT.INTERNAL;
    report.error = { message: `internal error: ${e.stack ?? e.message}` };
  }
}
