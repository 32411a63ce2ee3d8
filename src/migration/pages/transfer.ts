// Moving images: the page server on the destination (reached through the SSH connection
// or directly), and a tar stream from one directory to another over an exec channel.
import { keepAlive } from '../prepare/keeper.js';
import { untilQuiet } from '../switchover/protocol.js';
import { hostPort } from '../../firewall.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { criu } from '../../criu.js';
import { MigrateError, EXIT } from '../../errors.js';
import type { Proc } from '../../host.js';
import { commandLine, quote } from '../../shell.js';
import type { Context } from '../context.js';

export interface PageServer {
  /** host:port for `runc checkpoint --page-server`. */
  endpoint: string;
  /** Resolves with the page server's exit: 0 once a whole dump arrived. */
  done: Promise<number | null>;
  /** Kills the page server (it also stops if the dump never comes). */
  kill: () => Promise<void>;
  /** Kills it and closes the forwarded port. */
  stop: () => Promise<void>;
}

/**
 * Starts `criu page-server` in the foreground of its own exec channel; it listens
 * when it writes a NUL on stdout. It records its pid so it can be killed if the dump
 * never comes. Contract: on failure nothing is left listening.
 */
export async function startPageServer(ctx: Context, imagesDir: string, prevImagesDir?: string): Promise<PageServer> {
  const r = ctx.remote!;
  const tunnelled = ctx.transport === 'tunnel';
  // tls and direct only where preflight found a direct route (policy.chooseTransport).
  const listen = tunnelled ? '127.0.0.1' : ctx.ssh.remoteAddress!;
  const argv = criu.pageServer(ctx.opts.remoteCriu, {
    imagesDir,
    workDir: r.criuWork,
    address: listen,
    port: ctx.opts.pageServerPort,
    logFile: r.pageServerLog,
    prevImagesDir,
    tls: ctx.transport === 'tls' ? ctx.certs!.destination : undefined,
  });
  // The page server cannot outlive the migration: a watcher reads the channel, and when
  // it closes (the tool ended, died, or lost the connection) or goes quiet (a silent
  // partition: protocol.ts KEEPALIVE) the page server is killed. The watcher's output is
  // not the channel's, so the channel ends with the page server.
  const pidFile = quote(r.pageServerPid);
  const proc: Proc = await ctx.dst.spawn([
    'sh',
    '-c',
    `exec 3<&0; ${commandLine(argv)} 3<&- & p=$!; echo $p > ${pidFile}; (${untilQuiet(3)}; kill $p 2>/dev/null) >/dev/null 2>&1 & w=$!; wait $p; s=$?; kill $w 2>/dev/null; exit $s`,
  ]);
  keepAlive(proc);
  const kill = async () => {
    await ctx.dst.run(['sh', '-c', `[ -f ${pidFile} ] && kill $(cat ${pidFile}) 2>/dev/null; rm -f ${pidFile}`], { allowFail: true });
  };
  const done = proc.done.then((res) => res.code);
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 20_000);
    proc.stdout.on('data', (d: Buffer) => {
      if (d.includes(0)) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    done.then(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ready) {
    await kill();
    const log = await ctx.dst.run(['tail', '-n', '5', r.pageServerLog], { allowFail: true });
    throw new MigrateError(
      `the page server on the destination did not start: ${log.stdout.trim().split('\n').pop() ?? ''}`,
      EXIT.PREFLIGHT,
      /Address already in use|bind/i.test(log.stdout) ? `Port ${ctx.opts.pageServerPort} is taken there: choose another with --page-server-port PORT.` : `Read ${r.pageServerLog} on the destination.`,
    );
  }
  let endpoint = hostPort(listen, ctx.opts.pageServerPort);
  let closeForward = async () => {};
  if (tunnelled) {
    const fwd = await ctx.ssh.forwardLocal('127.0.0.1', ctx.opts.pageServerPort);
    endpoint = hostPort('127.0.0.1', fwd.port);
    closeForward = fwd.close;
  }
  return {
    endpoint,
    done,
    kill,
    stop: async () => {
      await closeForward();
      await kill();
    },
  };
}

/**
 * Pipes SENDER's stdout into RECEIVER's stdin (tar to tar, through exec channels) until
 * both have ended; WHAT names the copy in errors. Returns the bytes sent. A receiver
 * that ends first must not leave the sender paused on a full pipe for ever: tar may stop
 * reading at the archive's end marker, and an SSH channel whose output is not read never
 * closes. A hybrid run hung once in about 20 with both tars gone and the channel open,
 * most likely so. The limit ends any other way of hanging.
 */
export async function pipeTar(sender: Proc, receiver: Proc, what: string, timeoutMs: number): Promise<number> {
  let bytes = 0;
  sender.stdout.on('data', (d: Buffer) => (bytes += d.length));
  // A local receiver that exited makes the pipe's writes fail with EPIPE: nothing to do.
  receiver.stdin.on('error', () => undefined);
  sender.stdout.pipe(receiver.stdin);
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
  void receiver.done.then(() => {
    sender.stdout.unpipe(receiver.stdin);
    sender.stdout.resume();
  });
  const r = await Promise.race([Promise.all([sender.done, receiver.done]), limit]);
  clearTimeout(timer);
  if (r === 'timeout') {
    sender.kill('SIGKILL');
    receiver.kill('SIGKILL');
    throw new Error(`${what} did not finish within ${Math.round(timeoutMs / 1000)} s`);
  }
  const [s, rcv] = r;
  if (s.code !== 0 || rcv.code !== 0) {
    throw new Error(`${what} failed: tar on the sending host exited ${s.code} (${s.stderr.trim()}), on the receiving host ${rcv.code} (${rcv.stderr.trim()})`);
  }
  return bytes;
}

/**
 * Copies the files of a local directory into a directory on the destination through one
 * exec channel (tar on both ends). Returns the bytes sent.
 */
export async function streamDir(ctx: Context, localDir: string, remoteDir: string, exclude: string[] = [], timeoutMs = 600_000): Promise<number> {
  const receiver = await ctx.dst.spawn(['tar', '-C', remoteDir, '-xf', '-']);
  const sender = await ctx.src.spawn(['tar', '-C', localDir, ...exclude.flatMap((e) => ['--exclude', e]), '-cf', '-', '.'], { streamStdout: true });
  return pipeTar(sender, receiver, 'copying images', timeoutMs);
}

/**
 * Hybrid: the pagemaps of a pre-dump that went to the destination's page server, copied
 * back into its local directory, with an empty stand-in for each pages image. The lazy
 * final dump reads its parent's pagemaps to send only what changed since (CRIU looks for
 * the parent on the source); it never reads the parent's pages there.
 */
export async function fetchPagemaps(ctx: Context, remoteDir: string, localDir: string): Promise<void> {
  const receiver = await ctx.src.spawn(['tar', '-C', localDir, '-xf', '-']);
  const sender = await ctx.dst.spawn(['sh', '-c', 'cd "$1" && tar -cf - pagemap-*.img', 'sh', remoteDir], { streamStdout: true });
  await pipeTar(sender, receiver, 'copying the pagemaps back', 120_000);
  const ls = await ctx.dst.run(['sh', '-c', 'cd "$1" && ls pages-*.img', 'sh', remoteDir], { allowFail: true });
  for (const name of ls.stdout.split('\n').map((l) => l.trim()).filter((l) => /^pages-\d+\.img$/.test(l))) {
    await fs.writeFile(path.join(localDir, name), '', { flag: 'a' });
  }
}
