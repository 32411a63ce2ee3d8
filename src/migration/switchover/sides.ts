// The two participants of the switchover (switchover.ts) on real hosts: the source is
// this machine (the checkpoint, its hold, the intent record), the destination is reached
// over the SSH connection (its guard, the page server, the image copy).
import fs from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { criu, criuLogErrors, LAZY_SOCKET, lazyFigures } from '../../criu.js';
import { decodeStatsImage, type DumpStats } from '../../criustats.js';
import { DEFAULTS } from '../../options.js';
import type { Host, Proc } from '../../host.js';
import { isNotExist, runc, type RuncGlobal } from '../../runc.js';
import { SshConnection } from '../../ssh/connection.js';
import type { RemoteHost } from '../../host.js';
import { addr } from '../network/address.js';
import { hostPort, ssAddress } from '../../firewall.js';
import type { Context } from '../context.js';
import { diagnose } from './diagnose.js';
import { failPoint, faultAt, switchoverPoint } from '../faults.js';
import { diedAtBirth } from '../../interrupt.js';
import { guardFilesCommand, guardScript, parseGuardFiles, parseGuardLine, type GuardFiles } from './guard.js';
import { cutLazyServer, recoverArgv, WATCHDOG_PID, decide, lazyExitFile, lazyServerReady, readHold, readLazyExit, waitDumped, writeHold, type Verdict } from './hold.js';
import { writeIntent, type Intent, type IntentPhase } from '../recover/intent.js';
import { GUARD_WORD, HEARTBEAT, TOOL_WORD } from './protocol.js';
import { connectionsOf, criuLockRules, removeCriuLockRules, unlockAfterWindow, type Connection } from '../network/netlock.js';
import { DUMP_LOG, RESTORE_LOG } from '../prepare/paths.js';
import { quote } from '../../shell.js';
import type { DestinationSide, FreezeResult, SourceSide } from './switchover.js';
import { containerPids } from '../files/tasks.js';
import { startPageServer, streamDir, type PageServer } from '../pages/transfer.js';

/** Where the final dump's files go on each side. */
export interface FinalImages {
  local: string;
  remote: string;
  /** The last pre-dump, relative to these directories ("../3"), when pre-copy ran. */
  parent?: string;
}

/** A failure that carries CRIU's own evidence (the first Error lines of its log, a known cause). */
export class CriuFailure extends Error {
  constructor(message: string, readonly criu: ReturnType<typeof diagnose>) {
    super(message);
  }
}

async function fetchLog(host: Context['src'], file: string): Promise<string> {
  const r = await host.run(['cat', file], { allowFail: true });
  return r.code === 0 ? r.stdout : '';
}

/** The destination's page server log, each line marked as its own (it goes with the work directory). */
async function pageServerLog(ctx: Context): Promise<string> {
  if (!ctx.pageServer) return '';
  const log = await fetchLog(ctx.dst, ctx.remote!.pageServerLog).catch(() => '');
  return log.split('\n').filter(Boolean).map((l) => `[dst page server] ${l}\n`).join('');
}

/** A new SSH connection when the old one dropped; false if the destination stays unreachable. */
export async function reconnect(ctx: Context): Promise<boolean> {
  if (ctx.ssh.alive) return true;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const ssh = await SshConnection.connect(ctx.ssh.endpoint);
      ctx.ssh = ssh;
      (ctx.dst as RemoteHost).useConnection(ssh);
      ctx.progress.warn(`the SSH connection dropped; reconnected (attempt ${attempt})`);
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  return false;
}

export class Source implements SourceSide {
  private ended?: Promise<{ code: number | null; signal?: string; stderr: string }>;
  /** CRIU's figures for the final dump, read after the commit. */
  finalDump?: DumpStats;

  constructor(
    private readonly ctx: Context,
    private readonly images: FinalImages,
    private readonly intent: { file: string; record: Omit<Intent, 'phase' | 'updatedAt'> },
    private readonly holdTimeoutS: number,
    /** Post-copy: the destination guard's window limits (the watchdog's are longer). */
    private readonly lazyLimits?: { stallS: number; windowS: number },
  ) {}

  private get L() {
    return this.ctx.local!;
  }

  async record(phase: IntentPhase): Promise<void> {
    await writeIntent(this.intent.file, { ...this.intent.record, lockRulesBefore: this.lockRulesBefore, connections: this.connections, phase, updatedAt: '' });
  }

  /** CRIU lock rules present before this dump: another dump's, left alone after the commit. */
  private lockRulesBefore: string[] = [];

  /**
   * Before the freeze (it costs a few commands): the lock rules that are not this dump's.
   * Taken without --tcp-established too: a broken lazy window's cleanup removes whatever
   * lock rules are not in it.
   */
  async snapshotLockRules(): Promise<void> {
    const { ctx } = this;
    const run = (argv: string[]) => ctx.src.run(argv, { allowFail: true });
    this.lockRulesBefore = await criuLockRules(run);
    // The container's connections: the lock rules of this dump name them (and only them).
    if (ctx.opts.tcpEstablished && ctx.state?.pid) this.connections = await connectionsOf(ctx.state.pid, await containerPids(ctx), run);
  }

  /** The container's TCP connections before the dump (--tcp-established). */
  private connections?: Connection[];

  async freeze(): Promise<FreezeResult> {
    const { ctx, L, images } = this;
    const mv = ctx.opts.moveIp && ctx.moveIp ? addr.giveBack(ctx.moveIp.arping, ctx.opts.moveIp, ctx.moveIp.srcDev) : undefined;
    const lim = ctx.opts.postCopy ? windowLimits(this.lazyLimits) : undefined;
    const watchdog = lim
      ? {
          port: ctx.opts.pageServerPort,
          cliPid: process.pid,
          stallS: lim.stallS + DEFAULTS.lazySourceMarginS,
          windowS: lim.windowS + DEFAULTS.lazySourceMarginS,
          rcFile: lazyExitFile(L.holdDir),
          record: this.intent.file,
          recover: recoverArgv(process.execPath, process.argv),
          cwd: process.cwd(),
        }
      : undefined;
    const hold = await writeHold(L, process.pid, this.holdTimeoutS, mv, path.join(DEFAULTS.intentDir, 'hold'), ctx.certs?.criuConfig, watchdog);
    const env = hold.env;
    // The link CRIU names the hold by (a work directory CRIU's config cannot name): gone with the run.
    if (hold.link) {
      const link = hold.link;
      ctx.cleanups.push({
        what: `remove ${link}`,
        run: async () => {
          await fs.rm(link, { force: true });
          await fs.rmdir(path.dirname(link)).catch(() => undefined); // when no other run's link is there
        },
      });
    }
    await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
    const lazy = ctx.opts.postCopy;
    const argv = runc.checkpoint(ctx.srcRunc, ctx.opts.container, {
      imagePath: images.local,
      workPath: L.criuWork,
      pageServer: lazy ? hostPort(ctx.sourceAddress!, ctx.opts.pageServerPort) : ctx.pageServer?.endpoint,
      tcpEstablished: ctx.opts.tcpEstablished,
      parentPath: images.parent,
      lazyStatusFd: lazy ? 3 : undefined,
    });
    // Its own process group, and its output in files: it outlives the tool if the tool
    // dies (the hold then decides), and a closed pipe must not kill runc half-way.
    const out = path.join(L.holdDir, 'checkpoint.out');
    // Test fault: a wrapper that drops CRIU_CONFIG_FILE, so CRIU never runs the hold.
    const run = faultAt('no-hold') ? ['env', '-u', 'CRIU_CONFIG_FILE', ...argv] : argv;
    // Post-copy: fd 3 gets the lazy page server's NUL; the exit status is kept in a file,
    // for migrate recover (the checkpoint ends after the lazy window, maybe after the tool).
    const wrapper = lazy ? 'out=$1; st=$2; rc=$3; shift 3; "$@" 3>"$st" > "$out" 2>&1; echo $? > "$rc"' : 'out=$1; shift; exec "$@" > "$out" 2>&1';
    const wrapperArgs = lazy ? [out, this.lazyStatusFile, lazyExitFile(L.holdDir)] : [out];
    const start = async () => {
      const checkpoint = await ctx.src.spawn(['sh', '-c', wrapper, 'sh', ...wrapperArgs, ...run], { env });
      this.ended = checkpoint.done.then(async (r) => ({ code: lazy ? await readLazyExit(L.holdDir, r.code) : r.code, signal: r.signal, stderr: await fs.readFile(out, 'utf8').catch(() => '') }));
      // A lazy page server that starts without the hold (CRIU never ran it) counts as an end.
      return waitDumped(L, checkpoint.done, lazy ? () => lazyServerReady(this.lazyStatusFile) : undefined);
    };
    let held = await start();
    // Killed at birth by the signal the tool received (interrupt.ts): nothing ran, nothing froze.
    for (let i = 0; i < 3 && held === 'exited' && diedAtBirth((await this.ended!).signal); i++) held = await start();
    if (held === 'dumped') return { held: true };
    if (held === 'ready') {
      // Post-copy without the hold: the lazy page server already serves, with no way to
      // hold the source back. Ending it resumes the source.
      await this.abortLazyServer();
      const r = await this.ended!;
      return { held: false, failure: new Error(`runc checkpoint started the lazy page server without holding the source (CRIU did not run the hold script; is CRIU_CONFIG_FILE passed through?); it was stopped and the source resumed (runc exited ${r.code})`) };
    }
    const res = await this.ended!;
    const last = res.stderr.trim().split('\n').pop() ?? '';
    if (res.code === 0) {
      // runc finished without the hold: CRIU ignored CRIU_CONFIG_FILE and the source is
      // gone. The images are the only copy: nothing may delete them.
      ctx.keepImages = true;
      return { held: false, destroyed: true, why: `runc checkpoint finished without holding the source (CRIU did not run the hold script; is CRIU_CONFIG_FILE passed through?): the source is gone, its images (${images.local}) are the only copy` };
    }
    // The page server's side of a failed dump (a refused certificate, a stranger on its port).
    const dumpErrors = criuLogErrors(await fetchLog(ctx.src, path.join(L.criuWork, DUMP_LOG)), 5);
    const d = diagnose([...dumpErrors, ...criuLogErrors(await pageServerLog(ctx), 3)].join('\n'), 8);
    return { held: false, failure: new CriuFailure(`the checkpoint failed on the source (runc exited ${res.code}: ${last})`, d) };
  }

  async releaseAddress(): Promise<void> {
    const { ctx } = this;
    // Marked first: from here on every rollback of the hold gives the address back.
    await fs.writeFile(path.join(this.L.holdDir, 'address-released'), '');
    await ctx.src.run(addr.del(ctx.opts.moveIp!, ctx.moveIp!.srcDev));
  }

  async prepare(): Promise<boolean> {
    const v = await decide(this.L.holdDir, 'verdict', 'prepared');
    return v === 'prepared';
  }

  async finish(v: Verdict): Promise<void> {
    const inForce = await decide(this.L.holdDir, 'final', v);
    const res = await this.ended!;
    if (inForce !== v) throw new Error(`the final verdict was already ${inForce}`);
    // CRIU failed after the verdict and resumed the source, which must not run now.
    if (v === 'commit' && res.code !== 0) await this.removeResumedCopy(`runc checkpoint failed after the commit (${res.stderr.trim().split('\n').pop()})`);
  }

  /** When the hold resumes the source by itself (its deadline, counted from its start: the marker it wrote). */
  holdEndsAt(): number {
    try {
      return statSync(this.L.dumpedMarker).mtimeMs + this.holdTimeoutS * 1000;
    } catch {
      return -Infinity;
    }
  }

  /** The destination is unconfirmed: the hold resumes the source at its own deadline; resolves once the checkpoint ended. */
  async outlast(): Promise<void> {
    if (this.ended) await this.ended;
  }

  async resume(): Promise<void> {
    if (!this.ended) return;
    const s = await readHold(this.L.holdDir);
    if (s.verdict === 'prepared') await decide(this.L.holdDir, 'final', 'rollback');
    else await decide(this.L.holdDir, 'verdict', 'rollback');
    // The checkpoint ends once the script has exited 1 and CRIU has resumed the tasks
    // (the hold script has given the address back by then).
    await this.ended;
  }

  /** Post-copy: the file fd 3 of the checkpoint writes to (a NUL once the lazy page server listens). */
  private get lazyStatusFile(): string {
    return path.join(this.L.holdDir, 'lazy-status');
  }

  /**
   * Post-copy: the hold lets CRIU go on to its lazy page server (the tasks stay frozen).
   * Resolves once it listens. From here the source's fate is the transfer's: see postcopy.ts.
   */
  async openWindow(): Promise<void> {
    const v = await decide(this.L.holdDir, 'verdict', 'lazy');
    if (v !== 'lazy') throw new Error(`the source's hold had already ended (${v})`);
    const deadline = Date.now() + 30_000;
    let ended = false;
    void this.ended!.then(() => (ended = true));
    while (!lazyServerReady(this.lazyStatusFile)) {
      if (ended) throw new Error(`the checkpoint ended before its lazy page server listened: ${(await this.ended!).stderr.trim().split('\n').pop()}`);
      if (Date.now() > deadline) throw new Error('the lazy page server on the source did not listen within 30 s');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Post-copy: how the checkpoint ended (0: every page was fetched and runc destroyed the source). */
  async checkpointEnd(): Promise<number | null> {
    return (await this.ended!).code;
  }

  /**
   * Post-copy: ends the lazy page server (hold.cutLazyServer): CRIU resumes the source.
   * For a server nobody reached yet (the restore failed before its daemon connected).
   */
  async abortLazyServer(): Promise<void> {
    await this.ctx.src.run(cutLazyServer(this.ctx.opts.pageServerPort), { allowFail: true });
  }

  /**
   * Post-copy, after CRIU resumed the source at the end of a failed window: what the hold
   * would have done on a rollback, done here (its script has already exited): the address
   * back, CRIU's lock off (netlock.unlockAfterWindow).
   */
  async afterWindowRollback(): Promise<void> {
    const { ctx } = this;
    if (ctx.opts.moveIp && ctx.moveIp && existsSync(path.join(this.L.holdDir, 'address-released'))) {
      await ctx.src.run(addr.giveBack(ctx.moveIp.arping, ctx.opts.moveIp, ctx.moveIp.srcDev), { allowFail: true });
    }
    const hung = await unlockAfterWindow((argv) => ctx.src.run(argv, { allowFail: true }), { pid: ctx.state!.pid, ps: runc.ps(ctx.srcRunc, ctx.opts.container), keep: this.lockRulesBefore, mine: this.connections });
    if (hung) ctx.progress.warn(hung);
  }

  /** Post-copy: stops the source's watchdog (hold.ts): the tool settles the window itself. */
  async endWatchdog(): Promise<void> {
    const pid = Number((await fs.readFile(path.join(this.L.holdDir, WATCHDOG_PID), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 1) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone already
      }
    }
  }

  /** A source copy that must not run (the destination has it whole): killed and deleted. */
  async removeResumedCopy(why: string): Promise<void> {
    const st = await this.ctx.src.run(runc.state(this.ctx.srcRunc, this.ctx.opts.container), { allowFail: true });
    if (st.code !== 0) return;
    this.ctx.progress.warn(`${why}; removing the resumed source copy`);
    await removeContainer(this.ctx.src, this.ctx.srcRunc, this.ctx.opts.container);
  }

  async afterCommit(): Promise<void> {
    const { ctx } = this;
    // CRIU leaves its TCP lock rules on the source after a committed dump.
    if (ctx.opts.tcpEstablished) await removeCriuLockRules((argv) => ctx.src.run(argv, { allowFail: true }), this.lockRulesBefore, this.connections);
    const stats = await fs.readFile(path.join(this.L.criuWork, 'stats-dump')).catch(() => undefined);
    try {
      this.finalDump = stats ? decodeStatsImage(stats) : undefined;
    } catch (err) {
      // A truncated image (CRIU ran out of room writing it) costs the figures, nothing else.
      ctx.progress.warn(`CRIU's stats of the final dump are unreadable (${(err as Error).message}): reported without them`);
    }
  }
}

/** Post-copy's window limits, which the plan sets (plan.ts makePlan): never guessed here. */
function windowLimits(l: { stallS: number; windowS: number } | undefined): { stallS: number; windowS: number } {
  if (!l) throw new Error('post-copy without the window limits of the plan');
  return l;
}

/** The guard's directory in the destination's work directory BASE. */
export function guardDirOf(base: string): string {
  return path.join(base, 'guard');
}

/** Kills a container and deletes it (a copy that must not run); nothing when it is gone. Shared with migrate recover. */
export async function removeContainer(host: Host, g: RuncGlobal, name: string): Promise<void> {
  await host.run(runc.killHard(g, name), { allowFail: true });
  await host.run(runc.deleteForce(g, name), { allowFail: true });
}

export class Destination implements DestinationSide {
  private guard?: Proc;
  private lines: string[] = [];
  /** Post-copy: the lazy-pages daemon's exit status, once the guard said it ended. */
  private lazyDone?: string;
  /** The guard's last word about the copy, once said. */
  private ended?: 'committed' | 'removed';
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly ctx: Context,
    private readonly images: FinalImages,
    private readonly deadlineS: number,
    /** Post-copy: the guard's window limits. */
    private readonly lazyLimits?: { stallS: number; windowS: number },
  ) {}

  private get R() {
    return this.ctx.remote!;
  }

  get guardDir(): string {
    return guardDirOf(this.R.base);
  }

  /** The guard's start, while it is under way: a removal waits for it (it runs beside the copy). */
  private starting?: Promise<void>;

  startGuard(): Promise<void> {
    this.starting = this.start();
    return this.starting;
  }

  private async start(): Promise<void> {
    const { ctx, images } = this;
    const mv = ctx.opts.moveIp;
    const g = ctx.dstRunc;
    const pidFile = `${this.R.criuWork}/restored.pid`;
    const lazy = ctx.opts.postCopy;
    let restore = runc.restore(g, ctx.opts.container, { bundle: ctx.bundle!, imagePath: images.remote, workPath: this.R.criuWork, tcpEstablished: ctx.opts.tcpEstablished, pidFile, lazy });
    // Test faults: a restore that hangs, a copy that dies right after it was restored.
    if (faultAt('restore-hang')) restore = ['sh', '-c', 'sleep 3597; exec "$@"', 'sh', ...restore];
    // (before the guard looks at it: a stopped copy cannot die by itself afterwards).
    if (faultAt('restore-dies')) {
      restore = ['sh', '-c', `"$@" || exit $?; kill -KILL "$(cat ${quote(pidFile)})"; sleep 0.05; exit 0`, 'sh', ...restore];
    }
    const script = guardScript({
      dir: this.guardDir,
      state: runc.state(g, ctx.opts.container),
      ps: runc.ps(g, ctx.opts.container),
      restore,
      kill: runc.killHard(g, ctx.opts.container),
      delete: runc.deleteForce(g, ctx.opts.container),
      deadlineS: this.deadlineS,
      heartbeatLossS: HEARTBEAT.lossS,
      verifyWindowMs: lazy ? DEFAULTS.lazyVerifyWindowMs : undefined,
      lazy: lazy
        ? {
            daemon: criu.lazyPages(ctx.opts.remoteCriu, {
              imagesDir: images.remote,
              workDir: this.R.criuWork,
              address: ctx.sourceAddress!,
              port: ctx.opts.pageServerPort,
              logFile: this.lazyLog,
              tls: ctx.certs!.destination,
            }),
            socket: path.join(this.R.criuWork, LAZY_SOCKET),
            session: ['dst', ssAddress(ctx.sourceAddress!), 'dport', '=', `:${ctx.opts.pageServerPort}`],
            ...windowLimits(this.lazyLimits),
          }
        : undefined,
      moveIp:
        mv && ctx.moveIp
          ? {
              claim: addr.claim(mv, ctx.moveIp.dstDev),
              unclaim: addr.unclaim(mv, ctx.moveIp.dstDev),
              announce: addr.announce(ctx.moveIp.arping, mv, ctx.moveIp.dstDev),
            }
          : undefined,
    });
    this.guard = await ctx.dst.spawn(['sh', '-c', script], { streamStdout: true });
    this.beat(true);
    let buf = '';
    this.guard.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = parseGuardLine(buf.slice(0, i));
        if (l.word === GUARD_WORD.lazyDone) this.lazyDone = l.detail;
        if (l.word === GUARD_WORD.committed || l.word === GUARD_WORD.removed) this.ended ??= l.word;
        if (l.word === GUARD_WORD.resumeFailed || l.word === GUARD_WORD.announceFailed) this.afterCommitTrouble.push(buf.slice(0, i));
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      this.wake();
    });
    void this.guard.done.then(() => {
      this.closed = true;
      this.beat(false);
      this.wake();
    });
    const w = await this.next([GUARD_WORD.claimed, GUARD_WORD.claimFailed, GUARD_WORD.removed], 30_000);
    if (w.word !== GUARD_WORD.claimed) throw new Error(`the destination's guard could not claim ${mv?.address}: ${w.detail}`);
    // The guard started at the latest now: it gives up by this time, whatever happens.
    this.endsBy = Date.now() + this.deadlineS * 1000;
  }

  /** The latest time (Date.now()) by which the guard has given up, once it said claimed. */
  private endsBy?: number;

  guardEndsBy(): number {
    return this.endsBy ?? Infinity;
  }

  private beating?: NodeJS.Timeout;

  /**
   * The tool's heartbeat on the guard's channel, while the guard waits for its next word
   * (not while it restores: any word then stops the restore). Without it for
   * HEARTBEAT.lossS the guard removes its copy: a silent partition ends there.
   */
  private beat(on: boolean): void {
    if (this.beating) clearInterval(this.beating);
    this.beating = undefined;
    if (on && !this.closed) {
      this.beating = setInterval(() => this.say(TOOL_WORD.heartbeat), HEARTBEAT.intervalMs);
      this.beating.unref();
    }
  }

  /** Lines the guard printed about trouble after its commit (a task left stopped, a failed announce). */
  private afterCommitTrouble: string[] = [];

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The guard's next line among WORDS (others are skipped); 'closed' if its channel closed first. */
  private async next(words: string[], timeoutMs: number): Promise<{ word: string; detail: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length) {
        const l = parseGuardLine(this.lines.shift()!);
        if (words.includes(l.word)) return l;
      }
      if (this.closed) return { word: 'closed', detail: 'the guard ended (channel closed)' };
      const left = deadline - Date.now();
      if (left <= 0) return { word: 'timeout', detail: `no word from the guard in ${Math.round(timeoutMs / 1000)} s` };
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private say(word: string): void {
    if (!this.closed) this.guard?.stdin.write(word + '\n');
  }

  async copyImages(): Promise<number> {
    const { ctx, images } = this;
    const ps: PageServer | undefined = ctx.pageServer;
    if (ps) {
      const code = await ps.done;
      if (code !== 0) {
        const errs = criuLogErrors(await pageServerLog(ctx), 3);
        throw new Error(`the page server on the destination exited ${code}: not every page arrived${errs.length ? `: ${errs.join(' | ')}` : ''}`);
      }
    }
    failPoint('copy');
    // CRIU's own "parent" link stays behind: the page server made the destination's.
    const bytes = await streamDir(ctx, images.local, images.remote, ['./parent'], this.deadlineS * 1000);
    // Hybrid: no page server took the lazy final dump; the restore finds the pre-dumps through this link.
    if (ctx.opts.postCopy && images.parent) await ctx.dst.run(['ln', '-sfn', images.parent, path.join(images.remote, 'parent')]);
    return bytes;
  }

  async syncFiles(): Promise<boolean> {
    const f = this.ctx.files;
    if (!f || f.trees.length === 0) return false;
    failPoint('sync');
    // Tests: the tool dies, or loses its connection, while rsync runs.
    const t = setTimeout(() => switchoverPoint('syncing', () => this.ctx.ssh.sever(), this.ctx.local!), 30);
    try {
      await f.finalDelta(this.deadlineS * 1000);
    } finally {
      clearTimeout(t);
    }
    return true;
  }

  async restore(): Promise<void> {
    failPoint('restore');
    // No heartbeat while the guard restores: it stops the restore on any word.
    this.beat(false);
    this.say(TOOL_WORD.restore);
    // Tests: the tool dies, or loses the connection, while the guard restores.
    switchoverPoint('restoring', () => this.ctx.ssh.sever(), this.ctx.local!);
    const w = await this.next([GUARD_WORD.verified, GUARD_WORD.restoreFailed, GUARD_WORD.died, GUARD_WORD.nameTaken, GUARD_WORD.removed], this.deadlineS * 1000);
    if (w.word === GUARD_WORD.verified) {
      // The guard waits for the commit: it hears from the tool from now on.
      if (!this.ctx.opts.postCopy) this.beat(true);
      if (faultAt('ssh-drop')) this.ctx.ssh.sever();
      failPoint('verify');
      if (this.ctx.opts.postCopy) {
        // The copy serves from here ([--move-ip] announced): the lazy window is open.
        const s = await this.next(['serving', 'removed', 'committed'], 30_000);
        if (s.word === 'removed') throw new Error(`the destination's guard removed the copy (${s.detail})`);
      }
      return;
    }
    if (w.word === 'restore-failed') {
      const d = diagnose(await fetchLog(this.ctx.dst, path.join(this.R.criuWork, RESTORE_LOG)));
      throw new CriuFailure(`destination: runc restore exited ${w.detail}`, d);
    }
    if (w.word === 'died') throw new Error(`the restored container is ${w.detail} on the destination right after the restore`);
    if (w.word === 'name-taken') throw new Error(`a container named ${this.ctx.opts.container} appeared on the destination during the migration; it was left alone`);
    throw new Error(`the restore did not finish: ${w.detail}`);
  }

  /** Post-copy: the lazy-pages daemon's log (its figures, and its errors). */
  get lazyLog(): string {
    return path.join(this.R.criuWork, 'lazy-pages.log');
  }

  /** Post-copy: resolves once the guard said how the window ended (committed or removed), or its channel closed. */
  async guardEnded(): Promise<void> {
    while (!this.ended && !this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Post-copy: the lazy-pages daemon's exit status, once the guard said it ended. */
  get daemonExit(): string | undefined {
    return this.lazyDone;
  }

  /** Post-copy: cuts the lazy window short (the guard kills the daemon, then removes its copy). */
  cutWindow(): void {
    this.say(TOOL_WORD.rollback);
  }

  /**
   * Post-copy: how the guard ended the window (it decides alone), from its word, or from
   * its files once its channel is gone (over a new connection if need be). Waits at most
   * LIMITMS; undefined: the destination cannot be reached, or the guard has not ended.
   */
  async windowEnd(limitMs: number): Promise<'committed' | 'removed' | undefined> {
    const deadline = Date.now() + limitMs;
    const w = await this.next([GUARD_WORD.committed, GUARD_WORD.removed], limitMs);
    if (w.word === GUARD_WORD.committed || w.word === GUARD_WORD.removed) return w.word;
    if (this.ended) return this.ended;
    while (Date.now() < deadline) {
      const f = await this.guardFiles();
      if (f?.committed) return 'committed';
      if (f?.removed) return 'removed';
      if (f && !f.alive) return (await this.absent()) ? 'removed' : undefined;
      await new Promise((r) => setTimeout(r, f ? 200 : 2000));
    }
    return undefined;
  }

  /** Post-copy: the lazy-pages daemon's figures (criu.lazyFigures), best effort. */
  async lazyFigures(): Promise<ReturnType<typeof lazyFigures> | undefined> {
    const r = await this.ctx.dst.run(['cat', this.lazyLog], { allowFail: true }).catch(() => undefined);
    return r && r.code === 0 ? lazyFigures(r.stdout) : undefined;
  }

  async commit(): Promise<{ trouble: string[] }> {
    this.beat(false);
    this.say(TOOL_WORD.commit);
    switchoverPoint('commit-sent', () => this.ctx.ssh.sever(), this.ctx.local!);
    const w = await this.next([GUARD_WORD.committed, GUARD_WORD.removed], 60_000);
    if (w.word !== GUARD_WORD.committed) throw new Error(`the guard answered ${w.word}${w.detail ? ` (${w.detail})` : ''}`);
    return { trouble: this.afterCommitTrouble.splice(0) };
  }

  /**
   * After a commit that was not acknowledged: the channel is closed (the guard has either
   * read "commit" before the EOF, or removes its copy), then the guard's files are read,
   * over a new connection if need be, until they say how it ended. undefined: the
   * destination cannot be reached, or the guard has not ended by its deadline.
   */
  async settle(): Promise<'committed' | 'removed' | undefined> {
    this.beat(false);
    this.guard?.stdin.end();
    for (let i = 0; i < 10 * (this.deadlineS + 30); i++) {
      const f = await this.guardFiles();
      if (!f) return undefined;
      if (f.committed) return 'committed';
      // No trace of the guard (its files wiped by a reboot): it may have committed.
      if (!f.alive) return f.removed || (f.present && (await this.absent())) ? 'removed' : undefined;
      await new Promise((r) => setTimeout(r, 100));
    }
    return undefined;
  }

  /** The guard's files: committed, removed, or neither yet (its pid still running). */
  private async guardFiles(): Promise<GuardFiles | undefined> {
    if (!(await reconnect(this.ctx))) return undefined;
    const r = await this.ctx.dst.run(guardFilesCommand(this.guardDir), { allowFail: true }).catch(() => undefined);
    return r ? parseGuardFiles(r.stdout) : undefined;
  }

  async committed(): Promise<boolean | undefined> {
    const f = await this.guardFiles();
    return f?.committed;
  }

  async remove(): Promise<boolean> {
    // A guard still starting must be there before it can be told to remove what it made.
    await this.starting?.catch(() => undefined);
    this.beat(false);
    if (this.guard && !this.closed) {
      // Anything but "commit" makes the guard remove what it made.
      this.say(TOOL_WORD.rollback);
      this.guard.stdin.end();
      await this.next(['removed'], 60_000);
    }
    if (!this.guard) return true;
    // Over a new connection if the old one dropped: wait until the guard has finished,
    // then confirm no copy runs.
    for (let i = 0; i < 10 * (this.deadlineS + 30); i++) {
      const f = await this.guardFiles();
      if (!f || f.committed) return false;
      // The guard removes only what it restored: its word is the confirmation.
      if (!f.alive) return f.removed || (await this.absent());
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  }

  private async absent(): Promise<boolean> {
    const st = await this.ctx.dst.run(runc.state(this.ctx.dstRunc, this.ctx.opts.container), { allowFail: true }).catch(() => undefined);
    return !!st && st.code !== 0 && isNotExist(st.stderr);
  }
}
