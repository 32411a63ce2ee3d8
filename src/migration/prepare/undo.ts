// Everything a migration acquires on the hosts is undone from one stack, last acquired
// first undone, on every exit path. What must stay when the migration is in doubt (the
// work directories: the record and images migrate recover needs) is marked so when it is
// pushed, and stays once keepWorkDirs() was called.
export interface UndoStep {
  readonly what: string;
  readonly run: () => Promise<unknown>;
  /** A work directory: left in place once keepWorkDirs() was called. */
  readonly workDir?: boolean;
}

export class Undo {
  private readonly steps: UndoStep[] = [];
  private keeping = false;
  /** Work directories whose removal failed (the destination could not be reached). */
  readonly left: string[] = [];

  add(what: string, run: () => Promise<unknown>, o: { workDir?: boolean } = {}): void {
    this.steps.push({ what, run, workDir: o.workDir });
  }

  /** The work directories hold what migrate recover needs (in doubt), or the only images: they stay. */
  keepWorkDirs(): void {
    this.keeping = true;
  }

  get keepsWorkDirs(): boolean {
    return this.keeping;
  }

  /** Runs every step once, last-in first-out; a step that fails is reported and the others still run. */
  async release(warn: (m: string) => void): Promise<void> {
    for (const step of this.steps.splice(0).reverse()) {
      if (step.workDir && this.keeping) continue;
      try {
        await step.run();
      } catch (err) {
        warn(`cleanup: could not ${step.what}: ${(err as Error).message}`);
      }
    }
  }
}
