// One interface for "run this on a host": the source is this machine (execa), the
// destination is reached over the SSH connection. The migration code never knows which.
import { execa } from 'execa';
import type { ClientChannel } from 'ssh2';
import type { Readable, Writable } from 'node:stream';
import { CommandError } from './errors.js';
import { commandLine } from './shell.js';
import { diedAtBirth } from './interrupt.js';
import type { SshConnection } from './ssh/connection.js';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The signal that ended it (local commands). */
  signal?: string;
}

export interface RunOptions {
  input?: string | Buffer;
  /** Resolve with the result instead of throwing CommandError on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
  env?: Record<string, string>;
}

/** A command left running: its streams and its end. */
export interface Proc {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves when the command ends, whatever its exit code. */
  done: Promise<RunResult>;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Waits for every one of PROCS to end, for at most MS: their results, or 'timeout', in
 * which case those still running have been sent SIGKILL.
 */
export async function endWithin(procs: readonly Proc[], ms: number): Promise<RunResult[] | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  const r = await Promise.race([Promise.all(procs.map((p) => p.done)), limit]);
  clearTimeout(timer);
  if (r === 'timeout') for (const p of procs) p.kill('SIGKILL');
  return r;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  streamStdout?: boolean;
}

export type CommandLogger = (host: string, command: string) => void;

export interface Host {
  /** "source" or "destination", for messages. */
  readonly name: string;
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /**
   * Starts a command and returns at once. Its stdout is collected into done's result
   * unless streamStdout is set, in which case the caller must consume proc.stdout.
   */
  spawn(argv: readonly string[], opts?: SpawnOptions): Promise<Proc>;
}

function check(host: string, argv: readonly string[], r: RunResult, opts: RunOptions): RunResult {
  if (r.code !== 0 && !opts.allowFail) {
    throw new CommandError({ host, command: commandLine(argv), exitCode: r.code, stdout: r.stdout, stderr: r.stderr });
  }
  return r;
}

export class LocalHost implements Host {
  constructor(
    private readonly log: CommandLogger,
    /** "source", or "standby" for failover run on the standby itself. */
    readonly name = 'source',
  ) {}

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.log(this.name, commandLine(argv));
    const start = () =>
      execa(argv[0], argv.slice(1), {
        reject: false,
        // Its own process group: a Ctrl-C meant for the tool must not kill a step half-way.
        detached: true,
        input: opts.input,
        stdin: opts.input === undefined ? 'ignore' : undefined,
        timeout: opts.timeoutMs,
        env: opts.env,
        stripFinalNewline: false,
      });
    let r = await start();
    for (let i = 0; i < 3 && diedAtBirth(r.signal); i++) r = await start();
    // A command that could not start at all reads as the shell's "not found" (127).
    const notFound = r.exitCode === undefined && (r as { code?: string }).code === 'ENOENT';
    const stderr = notFound ? `${argv[0]}: not found` : String(r.stderr ?? '');
    return check(
      this.name,
      argv,
      { code: notFound ? 127 : (r.exitCode ?? null), stdout: String(r.stdout ?? ''), stderr },
      opts,
    );
  }

  async spawn(argv: readonly string[], opts: SpawnOptions = {}): Promise<Proc> {
    this.log(this.name, commandLine(argv));
    const child = execa(argv[0], argv.slice(1), {
      reject: false,
      env: opts.env,
      buffer: false,
      stdin: 'pipe',
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    if (!opts.streamStdout) child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    const done = child.then((r) => ({
      code: r.exitCode ?? null,
      stdout: Buffer.concat(out).toString(),
      stderr: Buffer.concat(err).toString(),
      signal: r.signal ?? undefined,
    }));
    return {
      stdin: child.stdin!,
      stdout: child.stdout!,
      stderr: child.stderr!,
      done,
      kill: (signal = 'SIGTERM') => {
        child.kill(signal);
      },
    };
  }
}

export class RemoteHost implements Host {
  readonly name = 'destination';
  constructor(
    private ssh: SshConnection,
    private readonly sudo: boolean,
    private readonly log: CommandLogger,
  ) {}

  /** Carries on over a new connection after the old one dropped. */
  useConnection(ssh: SshConnection): void {
    this.ssh = ssh;
  }

  /** The command line as sent: every command runs through sudo -n when --sudo is given. */
  line(argv: readonly string[], env?: Record<string, string>): string {
    const envArgs = env ? ['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`)] : [];
    const full = [...(this.sudo ? ['sudo', '-n', '--'] : []), ...envArgs, ...argv];
    return commandLine(full);
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const line = this.line(argv, opts.env);
    this.log(this.name, line);
    const r = await this.ssh.exec(line, { input: opts.input, timeoutMs: opts.timeoutMs });
    return check(this.name, argv, { code: r.code, stdout: r.stdout, stderr: r.stderr }, opts);
  }

  async spawn(argv: readonly string[], opts: SpawnOptions = {}): Promise<Proc> {
    const line = this.line(argv, opts.env);
    this.log(this.name, line);
    const ch: ClientChannel = await this.ssh.spawn(line);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    // The channel only closes once its output has been read.
    if (!opts.streamStdout) ch.on('data', (d: Buffer) => out.push(d));
    ch.stderr.on('data', (d: Buffer) => err.push(d));
    const done = new Promise<RunResult>((resolve) => {
      let code: number | null = null;
      ch.on('exit', (c: number | null) => {
        code = c;
      });
      ch.on('close', () =>
        resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
      );
    });
    return {
      stdin: ch,
      stdout: ch,
      stderr: ch.stderr,
      done,
      kill: (signal = 'SIGTERM') => {
        ch.signal(signal.replace(/^SIG/, ''));
        ch.close();
      },
    };
  }
}
