// A tar stream from a directory on one host to a directory on the other, over an exec
// channel: the stream transport's images, the certificates, a pre-dump's pagemaps, the
// files' final delta.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Proc } from '../../host.js';
import { diedAtBirth } from '../../interrupt.js';
import type { Hosts } from '../session.js';

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
  if (diedAtBirth(s.signal) || diedAtBirth(rcv.signal)) {
    throw new BornDead(`${what}: a tar was killed at birth by the signal the tool received (interrupt.ts)`);
  }
  if (s.code !== 0 || rcv.code !== 0) {
    throw new Error(
      `${what} failed: tar on the sending host exited ${s.code} (${s.stderr.trim()}), on the receiving host ${rcv.code} (${rcv.stderr.trim()})`,
    );
  }
  return bytes;
}

/** A local tar killed by the tool's own signal before it ran (interrupt.ts): the copy never began, and runs again. */
class BornDead extends Error {}

/** Runs COPY again (at most three times in all) when a tar of it died at birth. */
async function bornAgain<T>(copy: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await copy();
    } catch (err) {
      if (!(err instanceof BornDead) || attempt === 3) throw err;
    }
  }
}

/**
 * Copies the files of a local directory into a directory on the destination through one
 * exec channel (tar on both ends). Returns the bytes sent.
 */
export async function streamDir(
  ctx: Hosts,
  localDir: string,
  remoteDir: string,
  exclude: string[] = [],
  timeoutMs = 600_000,
): Promise<number> {
  return bornAgain(async () => {
    const receiver = await ctx.dst.spawn(['tar', '-C', remoteDir, '-xf', '-']);
    const sender = await ctx.src.spawn(
      ['tar', '-C', localDir, ...exclude.flatMap((e) => ['--exclude', e]), '-cf', '-', '.'],
      { streamStdout: true },
    );
    return pipeTar(sender, receiver, 'copying images', timeoutMs);
  });
}

/**
 * Hybrid: the pagemaps of a pre-dump that went to the destination's page server, copied
 * back into its local directory, with an empty stand-in for each pages image. The lazy
 * final dump reads its parent's pagemaps to send only what changed since (CRIU looks for
 * the parent on the source); it never reads the parent's pages there.
 */
export async function fetchPagemaps(ctx: Hosts, remoteDir: string, localDir: string): Promise<void> {
  await bornAgain(async () => {
    const receiver = await ctx.src.spawn(['tar', '-C', localDir, '-xf', '-']);
    const sender = await ctx.dst.spawn(['sh', '-c', 'cd "$1" && tar -cf - pagemap-*.img', 'sh', remoteDir], {
      streamStdout: true,
    });
    return pipeTar(sender, receiver, 'copying the pagemaps back', 120_000);
  });
  const ls = await ctx.dst.run(['sh', '-c', 'cd "$1" && ls pages-*.img', 'sh', remoteDir], { allowFail: true });
  for (const name of ls.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^pages-\d+\.img$/.test(l))) {
    await fs.writeFile(path.join(localDir, name), '', { flag: 'a' });
  }
}
