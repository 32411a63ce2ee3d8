// Undo that survives the tool: a shell on a host that waits for its stdin to close and
// then runs an undo command. Its stdin is a pipe from the tool (the source) or an exec
// channel (the destination), so it closes when the tool ends it, exits, is killed, or
// loses the connection. Used for what must not outlive a migration: its TLS keys, its
// firewall rules.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import type { Host, Proc } from '../../host.js';
import { commandLine, quote } from '../../shell.js';
import { KEEPALIVE, untilQuiet, whenQuiet } from '../switchover/protocol.js';

/** Ends the keeper now (the undo runs) and waits for it. */
export type EndKeeper = () => Promise<void>;

const WAIT_THEN = (undo: readonly string[]) => `cat >/dev/null; ${commandLine(undo)}`;

/**
 * Keeps a waiting process's stdin alive for its watcher: an empty line every INTERVALMS
 * until the process ends (protocol.ts KEEPALIVE for the destination's keepers and page
 * server; HEARTBEAT.intervalMs for armed commands, armedCommand). Returns the stop.
 */
export function keepAlive(proc: Proc, intervalMs: number = KEEPALIVE.intervalMs): () => void {
  const t = setInterval(() => {
    if (proc.stdin.writable) proc.stdin.write('\n');
  }, intervalMs);
  t.unref();
  const stop = () => clearInterval(t);
  void proc.done.then(stop, stop);
  return stop;
}

/**
 * On the source: a process in its own session (a signal to the tool's group does not
 * reach it) that runs UNDO when the tool's end of its stdin closes.
 */
export async function localKeeper(name: string, undo: readonly string[]): Promise<EndKeeper> {
  const child = spawn('sh', ['-c', WAIT_THEN(undo), name], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  // Neither the process nor its pipe keeps the tool's event loop alive.
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  return async () => {
    // Waited for: the tool must not end (its event loop empty) before the undo has run.
    child.ref();
    child.stdin.end();
    await exited;
  };
}

/**
 * On the destination: an exec channel that runs UNDO when it closes, or goes quiet for
 * KEEPALIVE.lossS (a silent partition, which sshd does not notice).
 */
export async function remoteKeeper(dst: Host, name: string, undo: readonly string[]): Promise<EndKeeper> {
  const proc = await dst.spawn(['sh', '-c', `${untilQuiet()}; ${commandLine(undo)}`, name]);
  const stop = keepAlive(proc);
  return async () => {
    stop();
    proc.stdin.end();
    await proc.done;
  };
}

/** The environment variable that marks the processes a quietKiller watches. */
export const WATCH_VAR = 'RUNC_MIGRATE_WATCH';

/** ARGV run with the mark TOKEN in its environment, which stays across its execs (quietKiller). */
export function withMark(token: string, argv: readonly string[]): string[] {
  return ['env', `${WATCH_VAR}=${token}`, ...argv];
}

/**
 * Shell: kills every process whose environment holds the mark TOKEN, as a whole entry.
 * Each is looked at again right before its kill (a pid reused since the scan is spared),
 * and the scan runs three times (a child forked after a scan inherits the mark).
 */
export function killMarked(token: string): string {
  const mark = quote(`${WATCH_VAR}=${token}`);
  return `for _ in 1 2 3; do grep -lasxzF -- ${mark} /proc/[0-9]*/environ | while IFS= read -r f; do p=\${f#/proc/}; grep -qaxzF -- ${mark} "$f" 2>/dev/null && kill -KILL "\${p%/environ}" 2>/dev/null; done; done`;
}

/**
 * On the destination: kills the processes marked TOKEN (withMark()) if the tool's keepalive
 * stops for KEEPALIVE.lossS: a silent partition, which sshd does not notice, would leave
 * a process that waits on its channel's input (an rsync server, the final delta's
 * receiver) waiting for good. Its channel closing kills nothing: theirs close too. Returns
 * the end, which kills nothing; never rejects (without a connection there is nothing to
 * watch from).
 */
export async function quietKiller(dst: Host, token: string): Promise<() => void> {
  try {
    const proc = await dst.spawn(['sh', '-c', whenQuiet(killMarked(token))]);
    proc.done.catch(() => undefined);
    proc.stdin.on('error', () => undefined);
    const stop = keepAlive(proc);
    return () => {
      stop();
      proc.stdin.end();
    };
  } catch {
    return () => undefined;
  }
}

/**
 * One mark and one quietKiller for all the processes a migration marks over one SSH
 * connection: a watcher per process would take an SSH session each, and sshd allows 10 a
 * connection by default (MaxSessions). CONNECTION names the connection in use: after a
 * reconnect the next mark is a new one with its own watcher (the old watcher, cut off
 * with its connection, must not reach processes started over the new one).
 */
export class MarkWatch {
  private current?: { connection: object; token: string; end: Promise<() => void> };

  constructor(
    private readonly dst: Host,
    private readonly connection: () => object,
  ) {}

  /** ARGV marked for the watcher of the connection in use (started with the first mark). */
  mark(argv: readonly string[]): string[] {
    const connection = this.connection();
    if (!this.current || this.current.connection !== connection) {
      this.end();
      const token = crypto.randomBytes(6).toString('hex');
      this.current = { connection, token, end: quietKiller(this.dst, token) };
    }
    return withMark(this.current.token, argv);
  }

  /** Ends the watcher (it kills nothing); the next mark starts another. */
  end(): void {
    void this.current?.end.then((end) => end());
    this.current = undefined;
  }
}
