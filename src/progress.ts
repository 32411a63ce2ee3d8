// What the user sees while it runs: one line per phase with a spinner and its time on a
// terminal, plain lines when stderr is not a terminal, nothing with --quiet or --json
// (but for --verbose commands). Everything goes to stderr; stdout is for the result.
import chalk from 'chalk';
import ora, { type Ora } from 'ora';

export type ProgressMode = 'tty' | 'plain' | 'silent';

export interface PhaseTiming {
  name: string;
  ms: number;
}

export function formatMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export class Progress {
  readonly phases: PhaseTiming[] = [];
  readonly warnings: string[] = [];
  private spinner?: Ora;
  private title = '';

  constructor(
    private mode: ProgressMode,
    private readonly verbose: boolean,
    /** Neither the spinner nor its symbols in colour (NO_COLOR, --no-color). */
    private readonly colour = true,
    /** --quiet: warnings are not shown either (the report still has them). */
    private readonly quiet = false,
  ) {}

  /** Nothing more is shown (the terminal went away); phases and warnings are still recorded. */
  mute(): void {
    this.spinner?.stop();
    this.mode = 'silent';
  }

  /** Runs one phase, shows it, and records its duration (also when it fails). */
  async phase<T>(name: string, title: string, fn: () => Promise<T>, detail?: (r: T) => string | undefined): Promise<T> {
    const t0 = performance.now();
    this.start(title);
    try {
      const r = await fn();
      const ms = performance.now() - t0;
      this.phases.push({ name, ms });
      const d = detail?.(r);
      this.succeed(`${title}${d ? ` ${chalk.dim(d)}` : ''} ${chalk.dim(formatMs(ms))}`);
      return r;
    } catch (err) {
      const ms = performance.now() - t0;
      this.phases.push({ name, ms });
      this.fail(`${title} ${chalk.dim(formatMs(ms))}`);
      throw err;
    }
  }

  private start(title: string): void {
    this.title = title;
    if (this.mode === 'tty')
      this.spinner = ora({ text: title, stream: process.stderr, ...(this.colour ? {} : { color: false }) }).start();
  }

  /** Whether status() shows anything: only on a terminal. */
  get live(): boolean {
    return this.mode === 'tty';
  }

  /** On a terminal, the running phase's line updated in place with TEXT; elsewhere nothing. */
  status(text: string): void {
    if (this.mode === 'tty' && this.spinner) this.spinner.text = `${this.title} ${chalk.dim(text)}`;
  }

  private succeed(text: string): void {
    if (this.mode === 'tty' && !this.colour) this.spinner?.stopAndPersist({ symbol: 'ok  ', text });
    else if (this.mode === 'tty') this.spinner?.succeed(text);
    else if (this.mode === 'plain') process.stderr.write(`ok   ${text}\n`);
    this.spinner = undefined;
  }

  private fail(text: string): void {
    if (this.mode === 'tty' && !this.colour) this.spinner?.stopAndPersist({ symbol: 'FAIL', text });
    else if (this.mode === 'tty') this.spinner?.fail(text);
    else if (this.mode === 'plain') process.stderr.write(`FAIL ${text}\n`);
    this.spinner = undefined;
  }

  info(text: string): void {
    this.print(text, 'info');
  }

  warn(text: string): void {
    this.warnings.push(text);
    this.print(chalk.yellow(`warning: ${text}`), 'warn');
  }

  /** A warning that is shown under --quiet too (the answer to a signal). */
  notice(text: string): void {
    this.warnings.push(text);
    this.print(chalk.yellow(`warning: ${text}`), 'notice');
  }

  /** --verbose: every command, local and remote, as it is run. */
  command(host: string, line: string): void {
    if (!this.verbose) return;
    const text = chalk.dim(`${host === 'source' ? '[src]' : '[dst]'} $ ${line}`);
    if (this.spinner) this.spinner.clear();
    process.stderr.write(text + '\n');
    if (this.spinner) this.spinner.render();
  }

  private print(text: string, kind: 'info' | 'warn' | 'notice'): void {
    if (this.mode === 'silent' && (kind === 'info' || (kind === 'warn' && this.quiet))) return;
    if (this.spinner) this.spinner.clear();
    process.stderr.write(text + '\n');
    if (this.spinner) this.spinner.render();
  }
}
