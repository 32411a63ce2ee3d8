// rsync through the tool's one SSH connection. rsync starts its "remote shell" (-e) as
// `SHELL HOST COMMAND...`; ours is a small script that hands the command and then
// rsync's bytes to the tool through one FIFO, and the tool's bytes back to rsync through
// another. The tool runs the command in an exec channel of its connection and joins the
// streams. Nothing listens anywhere: the FIFOs are made for one run, mode 0600, in the
// private (0700) work directory, and removed after it.
// (FIFOs rather than descriptors inherited from the tool: they pass through rsync, which
// gets no say over them, and the helper opens its own ends.)
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { rsyncCmd, rsyncEnv } from '../../rsync.js';
import { commandLine } from '../../shell.js';
import type { Session } from '../session.js';
import { diedAtBirth, interruption } from '../../interrupt.js';
import { MarkWatch } from '../prepare/keeper.js';

export const BRIDGE_SCRIPT = `#!/bin/sh
# runc-migrate: rsync's remote shell, run by rsync as: THIS HOST COMMAND... The command
# (NUL-separated, ended by an empty field) and then rsync's output go to the tool through
# the FIFO $RUNC_MIGRATE_UP; the remote side's answer comes from the tool through
# $RUNC_MIGRATE_DOWN. The tool (pid $RUNC_MIGRATE_PID) opens its ends as it starts rsync;
# should it die before, nobody ever would, and the opens would wait for ever (and rsync
# on them): until both are open, a watchdog ends this script once the tool is gone.
up=$RUNC_MIGRATE_UP down=$RUNC_MIGRATE_DOWN tool=$RUNC_MIGRATE_PID
exec 5<&0
( while kill -0 "$tool" 2>/dev/null; do sleep 0.2; done; kill $$ ) </dev/null >/dev/null 2>&1 5<&- &
watchdog=$!
exec 7>"$up" 6<"$down"
kill "$watchdog" 2>/dev/null
{ printf '%s\\0' "$@"; printf '\\0'; exec cat <&5; } >&7 6<&- &
exec 7>&-
exec cat <&6
`;

/** rsync's -e: runs the bridge script named in the environment, with rsync's arguments. */
export const BRIDGE_SHELL = `sh -c 'exec sh "$RUNC_MIGRATE_BRIDGE" "$@"' rsync-bridge`;

export async function writeBridge(file: string): Promise<void> {
  await fsp.writeFile(file, BRIDGE_SCRIPT, { mode: 0o700 });
}

/**
 * What rsync needs of a session: the two hosts and the command log; watch marks the
 * remote rsync for a watcher shared with other processes (without it, each run starts
 * its own).
 */
export type RsyncHosts = Pick<Session, 'src' | 'dst' | 'log'> & { watch?: MarkWatch };

/** One rsync: SRC's contents into DST; compare: itemize the differences, change nothing. */
export interface RsyncJob {
  src: string;
  dst: string;
  bridge: string;
  timeoutMs: number;
  interruptible?: boolean;
  /**
   * Only the paths of a list (rsync.ts LISTED), which comes later, from this promise
   * (NUL-separated paths; rsync reads it on its stdin): rsync and its remote side start
   * now, the list and the transfer follow. The time limit counts from the list.
   */
  feed?: Promise<string>;
  compare?: boolean;
  /** SRC and DST are files (a single-file bind mount). */
  file?: boolean;
  /** Every file compared by content, whatever its size and time stamp. */
  ignoreTimes?: boolean;
  /** rsync's --link-dest (an absolute path on the destination). */
  linkDest?: string;
}

export interface RsyncRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Opens a FIFO end without blocking forever: resolves with the stream once the helper opened the other end. */
function fifoStreams(up: string, down: string) {
  const fromRsync = fs.createReadStream(up);
  const toRsync = fs.createWriteStream(down);
  fromRsync.on('error', () => undefined);
  toRsync.on('error', () => undefined);
  let upOpen = false;
  let downOpen = false;
  fromRsync.once('open', () => (upOpen = true));
  toRsync.once('open', () => (downOpen = true));
  /** Unblocks opens still waiting for a helper that never came, then closes both. */
  const release = () => {
    try {
      if (!upOpen) fs.closeSync(fs.openSync(up, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      /* nobody waits */
    }
    try {
      if (!downOpen) fs.closeSync(fs.openSync(down, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
    } catch {
      /* nobody waits */
    }
    fromRsync.destroy();
    toRsync.destroy();
  };
  return { fromRsync, toRsync, release };
}

/**
 * Syncs the contents of SRC (on the source) into DST (on the destination) with rsync, its
 * remote side run over the tool's connection. Killed after timeoutMs; with interruptible,
 * also by SIGINT/SIGTERM (before the freeze).
 */
export async function runRsync(ctx: RsyncHosts, o: RsyncJob): Promise<RsyncRun> {
  for (let attempt = 1; ; attempt++) {
    const r = await runOnce(ctx, o);
    if (!r.diedAtBirth || attempt === 3) return r;
  }
}

async function runOnce(ctx: RsyncHosts, o: RsyncJob): Promise<RsyncRun & { diedAtBirth?: boolean }> {
  const dir = path.dirname(o.bridge);
  const id = crypto.randomBytes(6).toString('hex');
  const up = path.join(dir, `rsync-${id}.up`);
  const down = path.join(dir, `rsync-${id}.down`);
  await ctx.src.run(['mkfifo', '-m', '0600', up, down]);
  // rsync splits -e on spaces with its own quoting rules: the paths (the user's work
  // directory is in them) reach the bridge through the environment instead.
  const argv = rsyncCmd.sync({
    src: o.src,
    dst: o.dst,
    shell: BRIDGE_SHELL,
    list: o.feed ? '-' : undefined,
    compare: o.compare,
    file: o.file,
    ignoreTimes: o.ignoreTimes,
    linkDest: o.linkDest,
  });
  const env = {
    RUNC_MIGRATE_BRIDGE: o.bridge,
    RUNC_MIGRATE_UP: up,
    RUNC_MIGRATE_DOWN: down,
    RUNC_MIGRATE_PID: String(process.pid),
  };
  ctx.log('source', commandLine(['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv]));
  const { fromRsync, toRsync, release } = fifoStreams(up, down);
  const child = execa(argv[0], argv.slice(1), {
    stdin: o.feed ? 'pipe' : 'ignore',
    detached: true,
    reject: false,
    stripFinalNewline: false,
    env: { ...rsyncEnv(process.env), ...env },
    extendEnv: false,
  });
  let remoteErr = '';
  let remote: Awaited<ReturnType<Session['dst']['spawn']>> | undefined;
  // The remote rsync is marked (ctx.watch's mark, or a watcher of this run's own): killed
  // if the tool's link goes silent.
  const watch = ctx.watch ?? new MarkWatch(ctx.dst, () => ctx.dst);
  let failure: string | undefined;

  const bridged = new Promise<void>((resolve) => {
    let head = Buffer.alloc(0);
    const onHead = (d: Buffer | string) => {
      head = Buffer.concat([head, Buffer.from(d)]);
      const end = head.indexOf('\0\0');
      if (end < 0) return;
      fromRsync.off('data', onHead);
      fromRsync.pause();
      const fields = head.subarray(0, end).toString().split('\0');
      const rest = head.subarray(end + 2);
      // [HOST, rsync, --server, ...]: only rsync's own server side is run.
      const command = fields.slice(1);
      if (command[0] !== 'rsync' || command[1] !== '--server') {
        failure = `rsync asked its remote shell for an unexpected command: ${command.join(' ').slice(0, 200)}`;
        toRsync.end();
        resolve();
        return;
      }
      // As ssh would: the words joined by spaces, for the remote shell to split.
      ctx.dst
        .spawn(watch.mark(['sh', '-c', command.join(' ')]), { streamStdout: true })
        .then((p) => {
          remote = p;
          p.stderr.on('data', (d: Buffer) => (remoteErr += d.toString()));
          p.stdout.pipe(toRsync);
          if (rest.length) p.stdin.write(rest);
          fromRsync.pipe(p.stdin);
          fromRsync.resume();
          void p.done.then(() => resolve());
        })
        .catch((err: Error) => {
          failure = `could not start rsync on the destination: ${err.message}`;
          toRsync.end();
          resolve();
        });
    };
    fromRsync.on('data', onHead);
  });

  let timer: NodeJS.Timeout | undefined;
  let stop: (() => void) | undefined;
  const limit = new Promise<'timeout' | 'interrupted'>((resolve) => {
    const arm = () => (timer = setTimeout(() => resolve('timeout'), o.timeoutMs));
    if (o.feed) {
      void o.feed.then(
        (list) => {
          child.stdin?.on('error', () => undefined);
          child.stdin?.end(list);
          arm();
        },
        () => resolve('interrupted'),
      );
    } else arm();
    // Before the freeze a signal stops it at once (after the freeze the switchover finishes).
    if (o.interruptible) {
      stop = () => resolve('interrupted');
      interruption.stoppers.add(stop);
      if (interruption.requested) stop();
    }
  });
  try {
    const r = await Promise.race([child, limit]);
    if (r === 'timeout' || r === 'interrupted') {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      remote?.kill('SIGKILL');
      await child;
      return {
        code: null,
        stdout: '',
        stderr:
          r === 'timeout'
            ? `rsync did not finish within ${Math.round(o.timeoutMs / 1000)} s`
            : `stopped by ${interruption.signal}`,
      };
    }
    // Killed at birth by the signal the tool received: it never ran (see interrupt.ts).
    if (diedAtBirth(r.signal) && !remote) return { code: null, stdout: '', stderr: '', diedAtBirth: true };
    // rsync has exited: the remote side has nothing more to say to it.
    remote?.stdin.end();
    await Promise.race([bridged, new Promise((res) => setTimeout(res, 2000))]);
    const killed = r.signal ? `rsync was killed by ${r.signal}` : '';
    const stderr = [String(r.stderr ?? ''), remoteErr, failure ?? '', killed].filter((s) => s.trim()).join('\n');
    return { code: r.exitCode ?? null, stdout: String(r.stdout ?? ''), stderr };
  } finally {
    clearTimeout(timer);
    if (watch !== ctx.watch) watch.end();
    if (stop) interruption.stoppers.delete(stop);
    release();
    await fsp.rm(up, { force: true });
    await fsp.rm(down, { force: true });
  }
}
