// How a run ends when it fails: an interruption before the freeze, or a failure after it
// that says where the container runs (as confirmed on the source), or that the
// migration is in doubt. The report is built from these (build.ts).
import { EXIT, MigrateError, type ExitCode } from '../../errors.js';
import { interruption } from '../../interrupt.js';
import type { Report } from '../../report.js';
import { parseState, runc } from '../../runc.js';
import type { LocalSession } from '../session.js';

export { interruption };

class Interrupted extends MigrateError {
  constructor() {
    super(
      `interrupted by ${interruption.signal} before the freeze`,
      EXIT.INTERRUPTED,
      'Nothing was frozen; run it again when ready.',
    );
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

/** Whether the container runs on the source, as runc says now. */
export async function runsOnSource(s: LocalSession): Promise<boolean> {
  const r = await s.src.run(runc.state(s.srcRunc, s.opts.container), { allowFail: true });
  return r.code === 0 && parseState(r.stdout).status === 'running';
}

/**
 * A failure after a freeze, once the source has had its chance to resume: rolled back only
 * if the source was confirmed running and the destination holds no copy (dstClean). Pure.
 */
export function rolledBack(
  message: string,
  o: {
    sourceRuns: boolean;
    container: string;
    destination: string;
    hint?: string;
    criuErrors?: string[];
    dstClean?: boolean;
  },
): AfterFreezeError {
  const dstClean = o.dstClean ?? true;
  return new AfterFreezeError(
    message + (dstClean ? '' : ', but the destination could not be confirmed clean'),
    o.sourceRuns && dstClean ? EXIT.ROLLED_BACK : EXIT.UNSAFE,
    dstClean
      ? o.hint
      : `Its guard removes its stopped copy by itself. Once the destination can be reached, run: migrate recover ${o.container} ${o.destination} (it confirms that and cleans up both hosts).`,
    o.criuErrors ?? [],
    o.sourceRuns ? 'source' : 'unknown',
  );
}

/** rolledBack() with the source's state looked up first. */
export async function afterFreeze(
  s: LocalSession,
  message: string,
  o: { hint?: string; criuErrors?: string[]; dstClean?: boolean } = {},
): Promise<AfterFreezeError> {
  return rolledBack(message, {
    ...o,
    sourceRuns: await runsOnSource(s),
    container: s.opts.container,
    destination: s.opts.destination,
  });
}
