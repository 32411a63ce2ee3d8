// A tar stream from a directory on one host to a directory on the other, over an exec
// channel: the stream transport's images, the certificates, a pre-dump's pagemaps, the
// files' final delta.
import fs from 'node:fs/promises';
import path from 'node:path';
import { endWithin, type Proc } from '../../host.js';
import { diedAtBirth } from '../../interrupt.js';
import { keepAlive } from '../prepare/keeper.js';
import type { Hosts } from '../session.js';
import { ARMED_GO, armedCommand, HEARTBEAT } from '../switchover/protocol.js';

/**
 * Joins SENDER's stdout to RECEIVER's stdin; returns a count of the bytes sent so far.
 * It must run in the tick the sender was spawned in: execa resumes an unread stdout at
 * the next setImmediate, and what the sender wrote is lost from then on (a copy whose
 * tars were started side by side lost its whole archive so).
 */
function join(sender: Proc, receiver: Proc): () => number {
  let bytes = 0;
  sender.stdout.on('data', (d: Buffer) => (bytes += d.length));
  // A local receiver that exited makes the pipe's writes fail with EPIPE: nothing to do.
  receiver.stdin.on('error', () => undefined);
  sender.stdout.pipe(receiver.stdin);
  // A receiver that ends first must not leave the sender paused on a full pipe for ever.
  void receiver.done.then(() => {
    sender.stdout.unpipe(receiver.stdin);
    sender.stdout.resume();
  });
  return () => bytes;
}

/**
 * Waits until both joined tars have ended; WHAT names the copy in errors. Returns the
 * bytes sent. tar may stop reading at the archive's end marker, and an SSH channel whose
 * output is not read never closes: a hybrid run hung once in about 20 with both tars gone
 * and the channel open, most likely so. The limit ends any other way of hanging.
 */
async function bothEnded(
  sender: Proc,
  receiver: Proc,
  bytes: () => number,
  what: string,
  timeoutMs: number,
): Promise<number> {
  const r = await endWithin([sender, receiver], timeoutMs);
  if (r === 'timeout') throw new CopyTimedOut(`${what} did not finish within ${Math.round(timeoutMs / 1000)} s`);
  const [s, rcv] = r;
  if (diedAtBirth(s.signal) || diedAtBirth(rcv.signal)) {
    throw new BornDead(`${what}: a tar was killed at birth by the signal the tool received (interrupt.ts)`);
  }
  if (s.code !== 0 || rcv.code !== 0) {
    throw new Error(
      `${what} failed: tar on the sending host exited ${s.code} (${s.stderr.trim()}), on the receiving host ${rcv.code} (${rcv.stderr.trim()})`,
    );
  }
  return bytes();
}

/** Pipes SENDER's stdout into RECEIVER's stdin (tar to tar, through exec channels) until both have ended. */
export async function pipeTar(sender: Proc, receiver: Proc, what: string, timeoutMs: number): Promise<number> {
  return bothEnded(sender, receiver, join(sender, receiver), what, timeoutMs);
}

/** A copy that ran out of time (both tars were killed). */
class CopyTimedOut extends Error {}

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
    const receiver = await ctx.dst.spawn(receiveTar(remoteDir, timeoutMs));
    const sender = await ctx.src.spawn(sendTar(localDir, exclude), { streamStdout: true });
    return pipeTar(sender, receiver, 'copying images', timeoutMs);
  });
}

/**
 * The receiving tar, killed after TIMEOUTMS: the tool gives up on the copy then, and a
 * silent partition would leave a tar reading its channel for ever (sshd does not see it).
 */
function receiveTar(dir: string, timeoutMs: number): string[] {
  return ['timeout', '-s', 'KILL', String(Math.ceil(timeoutMs / 1000)), 'tar', '-C', dir, '-xf', '-'];
}

function sendTar(dir: string, exclude: string[]): string[] {
  return ['tar', '-C', dir, ...exclude.flatMap((e) => ['--exclude', e]), '-cf', '-', '.'];
}

/**
 * A directory's copy with both tars started ahead, joined and waiting: fire() sends the
 * directory as it is then. Opening the destination's exec channel and starting the local
 * tar take 40-70 ms (measured at 200 MB, docs/figures.md); armed before the freeze, they
 * are off the frozen path. Each end waits for its line (protocol.ts armedCommand): the
 * sender writes nothing before it, so nothing can be lost before the join.
 */
export class ArmedCopy {
  private ended = false;
  private readonly stopKeepalive: Array<() => void>;

  private constructor(
    private readonly sender: Proc,
    private readonly receiver: Proc,
    private readonly bytes: () => number,
  ) {
    void Promise.race([sender.done, receiver.done]).then(() => (this.ended = true));
    this.stopKeepalive = [keepAlive(sender, HEARTBEAT.intervalMs), keepAlive(receiver, HEARTBEAT.intervalMs)];
  }

  /**
   * Starts the pair. undefined when it could not be (the copy is then made afresh). A pair
   * never fired ends on disarm(), the tool's death (both stdins close) or a silent
   * partition (the receiver's quiet limit); a fired receiver lives at most TIMEOUTMS.
   */
  static async arm(
    ctx: Hosts,
    localDir: string,
    remoteDir: string,
    exclude: string[],
    timeoutMs: number,
  ): Promise<ArmedCopy | undefined> {
    let receiver: Proc;
    try {
      receiver = await ctx.dst.spawn(armedCommand(receiveTar(remoteDir, timeoutMs)));
    } catch {
      return undefined;
    }
    let sender: Proc;
    try {
      // In the same tick as join(), below.
      sender = await ctx.src.spawn(armedCommand(sendTar(localDir, exclude)), { streamStdout: true });
    } catch {
      receiver.stdin.end();
      return undefined;
    }
    return new ArmedCopy(sender, receiver, join(sender, receiver));
  }

  /**
   * Sends the directory; returns the bytes sent, or undefined if nothing was sent and the
   * caller should copy afresh: an end had already ended (a lost channel, a tar killed at
   * birth), or it failed before a byte went (an end that ended as it was fired). A copy
   * that ran out of time is not retried.
   */
  async fire(what: string, timeoutMs: number): Promise<number | undefined> {
    if (this.ended) {
      await this.disarm();
      return undefined;
    }
    this.ended = true;
    for (const stop of this.stopKeepalive) stop();
    // The receiver's line first: the archive follows it on the same stdin.
    this.receiver.stdin.write(`${ARMED_GO}\n`);
    this.sender.stdin.on('error', () => undefined);
    this.sender.stdin.end(`${ARMED_GO}\n`);
    try {
      return await bothEnded(this.sender, this.receiver, this.bytes, what, timeoutMs);
    } catch (err) {
      if (this.bytes() === 0 && !(err instanceof CopyTimedOut)) return undefined;
      throw err;
    }
  }

  /** Ends a pair never fired: the sender's shell reads no line and exits, and so does the receiver's (its stdin ends with the sender's output). */
  async disarm(): Promise<void> {
    if (this.ended && this.sender.stdin.writableEnded) return;
    this.ended = true;
    for (const stop of this.stopKeepalive) stop();
    this.sender.stdin.on('error', () => undefined);
    this.sender.stdin.end();
    await endWithin([this.sender, this.receiver], 5000);
  }
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
