// Errors that carry an exit code, the evidence, and what the user should do next.

/** Exit codes: the contract with scripts. Documented in README.md and --help. */
export const EXIT = {
  OK: 0,
  /** Unexpected internal error (a bug): the message says where. */
  INTERNAL: 1,
  /** Bad command line: nothing was contacted or changed. */
  USAGE: 2,
  /** Refused before anything was frozen: the container runs untouched on the source. */
  PREFLIGHT: 3,
  /** Failed after the freeze and rolled back: the container runs on the source again. */
  ROLLED_BACK: 4,
  /** Failed and could not be rolled back cleanly: read the message, act by hand. */
  UNSAFE: 5,
  /** Interrupted (SIGINT/SIGTERM) before the freeze: the container runs on the source. */
  INTERRUPTED: 130,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export interface CommandEvidence {
  host: string;
  command: string;
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

export class MigrateError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** What the user should do about it, one or two sentences. */
    readonly hint?: string,
    readonly evidence?: CommandEvidence,
  ) {
    super(message);
    this.name = 'MigrateError';
  }
}

export class UsageError extends MigrateError {
  constructor(message: string, hint?: string) {
    super(message, EXIT.USAGE, hint);
    this.name = 'UsageError';
  }
}

export class PreflightError extends MigrateError {
  constructor(message: string, hint?: string, evidence?: CommandEvidence) {
    super(message, EXIT.PREFLIGHT, hint, evidence);
    this.name = 'PreflightError';
  }
}

/** A command on a host exited non-zero. */
export class CommandError extends Error {
  constructor(readonly evidence: CommandEvidence) {
    const tail = (evidence.stderr || evidence.stdout).trim().split('\n').slice(-3).join(' | ');
    super(`${evidence.host}: \`${evidence.command}\` exited ${evidence.exitCode}${tail ? `: ${tail}` : ''}`);
    this.name = 'CommandError';
  }
}
