// rsync through the tool's one SSH connection. rsync starts its "remote shell" (-e) as
// `SHELL HOST COMMAND...`; ours is a small script that hands the command and then
// rsync's bytes to the tool on fd 4, and the tool's bytes on fd 3 back to rsync. The tool
// runs the command in an exec channel of its connection and joins the streams. Nothing
// listens anywhere: the two descriptors exist only between the tool and its rsync.
import fs from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { execa } from 'execa';
import { rsyncCmd } from '../rsync.js';
import { commandLine } from '../shell.js';
import type { Context } from './context.js';
import { interruption } from './outcome.js';

export const BRIDGE_SCRIPT = `#!/bin/sh
# runc-migrate: rsync's remote shell (rsync runs it as: THIS HOST COMMAND...). The command,
# NUL-separated and ended by an empty field, then rsync's output go to the tool on fd 4;
# the remote side's answer comes from the tool on fd 3.
exec 5<&0
{ printf '%s\\0' "$@"; printf '\\0'; exec cat <&5; } >&4 &
exec cat <&3
`;

export async function writeBridge(file: string): Promise<void> {
  await fs.writeFile(file, BRIDGE_SCRIPT, { mode: 0o700 });
}

/** rsync's -e value for the bridge script at FILE. */
export function bridgeShell(file: string): string {
  return rsyncCmd.shellLine(['sh', file]);
}

export interface RsyncRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs ARGV (an rsync command whose -e is the bridge) on the source; its remote side runs
 * on the destination over the tool's connection. Killed after timeoutMs.
 */
export async function runRsync(ctx: Context, argv: string[], timeoutMs: number, o: { interruptible?: boolean } = {}): Promise<RsyncRun> {
  ctx.log('source', commandLine(argv));
  const child = execa(argv[0], argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
    // The bridge's descriptors carry the whole transfer: execa must not collect them (its
    // limit, 100 MB, stopped the stream there).
    buffer: { stdout: true, stderr: true, fd3: false, fd4: false },
    detached: true,
    reject: false,
    stripFinalNewline: false,
  });
  const toRsync = child.stdio[3] as unknown as Writable;
  const fromRsync = child.stdio[4] as unknown as Readable;
  let remoteErr = '';
  let remote: Awaited<ReturnType<Context['dst']['spawn']>> | undefined;
  let failure: string | undefined;

  const bridged = new Promise<void>((resolve) => {
    let head = Buffer.alloc(0);
    const onHead = (d: Buffer) => {
      head = Buffer.concat([head, d]);
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
        .spawn(['sh', '-c', command.join(' ')], { streamStdout: true })
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
    fromRsync.on('error', () => undefined);
    toRsync.on('error', () => undefined);
  });

  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'timeout' | 'interrupted'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
    // Before the freeze a signal stops it at once (after the freeze the switchover finishes).
    if (o.interruptible) {
      const stop = () => resolve('interrupted');
      interruption.stoppers.add(stop);
      void child.finally(() => interruption.stoppers.delete(stop));
      if (interruption.requested) stop();
    }
  });
  const r = await Promise.race([child, limit]);
  clearTimeout(timer);
  if (r === 'timeout' || r === 'interrupted') {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
    remote?.kill('SIGKILL');
    await child;
    return { code: null, stdout: '', stderr: r === 'timeout' ? `rsync did not finish within ${Math.round(timeoutMs / 1000)} s` : `stopped by ${interruption.signal}` };
  }
  // rsync has exited: the remote side has nothing more to say to it.
  remote?.stdin.end();
  await Promise.race([bridged, new Promise((res) => setTimeout(res, 2000))]);
  const stderr = [String(r.stderr ?? ''), remoteErr, failure ?? ''].filter((s) => s.trim()).join('\n');
  return { code: r.exitCode ?? null, stdout: String(r.stdout ?? ''), stderr };
}
