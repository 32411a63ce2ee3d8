// How preflight checks run: each under its title on the terminal, in the order the code
// calls them; a check's fact is its return value, so a check that needs another's fact
// can only run after it.
import type { Progress } from '../../progress.js';
import { checkInterrupt } from '../report/outcome.js';

export interface Checks {
  /** A check that yields a fact (its detail shown beside the title). */
  fact<T>(title: string, run: () => Promise<{ fact: T; detail: string }>): Promise<T>;
  /** A check that only refuses; --force skips a skippable one (a failure there is likely, not certain, to break the migration). */
  verify(title: string, run: () => Promise<string | void>, o?: { skippable?: boolean }): Promise<void>;
}

/** A phase's name in the report: its stage and its title, in lower case with dashes ("preflight:runc-on-the-source"). */
export function phaseName(stage: 'preflight' | 'prepare', title: string): string {
  return `${stage}:${title.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
}

export function checksOn(progress: Progress, force: boolean): Checks {
  const id = (title: string) => phaseName('preflight', title);
  const detail = (d: string | void) => (d ? `(${d})` : undefined);
  return {
    async fact(title, run) {
      checkInterrupt();
      const r = await progress.phase(id(title), title, run, (x) => detail(x.detail));
      return r.fact;
    },
    async verify(title, run, o = {}) {
      checkInterrupt();
      if (o.skippable && force) {
        progress.warn(`skipped (--force): ${title}`);
        return;
      }
      await progress.phase(id(title), title, run, detail);
    },
  };
}
