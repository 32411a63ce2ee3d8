// The destination participant of the switchover (switchover.ts), reached over the SSH
// connection: its guard (guard.ts), started on an exec channel, restores the copy
// stopped and commits or removes it on the tool's word; the tool's heartbeat keeps it
// waiting. Also the image copy and the files' final delta.
import path from 'node:path';
import { criu, criuLogErrors, LAZY_SOCKET } from '../../criu.js';
import { ssAddress } from '../../firewall.js';
import { endWithin, type Proc } from '../../host.js';
import { DEFAULTS } from '../../options.js';
import { isNotExist, runc } from '../../runc.js';
import { quote } from '../../shell.js';
import type { FilesSync } from '../files/rootfs.js';
import { addr } from '../network/address.js';
import type { TlsFiles } from '../pages/certs.js';
import { ArmedCopy, streamDir } from '../pages/stream.js';
import type { PageServer } from '../pages/transfer.js';
import type { LazyLimits } from '../plan/method.js';
import type { MoveIpFacts } from '../preflight/facts.js';
import { RESTORE_LOG, type WorkDirs, type WorkPaths } from '../prepare/paths.js';
import type { Session } from '../session.js';
import { diagnose } from './diagnose.js';
import { guardFilesCommand, guardScript, parseGuardFiles, parseGuardLine, type GuardFiles } from './guard.js';
import { keepAlive } from '../prepare/keeper.js';
import { ARMED_GO, armedCommand, GUARD_WORD, HEARTBEAT, TOOL_WORD } from './protocol.js';
import { CriuFailure, fetchLog, guardDirOf, reconnect, type FinalImages } from './shared.js';
import type { DestinationSide } from './switchover.js';

/** CRIU's own "parent" link stays behind: the page server made the destination's. */
const COPY_EXCLUDE = ['./parent'];

/** What the destination participant needs, and nothing else. */
export interface DestinationSetup {
  readonly s: Session;
  readonly work: WorkDirs;
  readonly images: FinalImages;
  /** The guard gives up this long after it starts (before the source's hold would). */
  readonly deadlineS: number;
  /** The bundle's path on the destination. */
  readonly bundle: string;
  readonly moveIp?: MoveIpFacts;
  /** The final dump's page server on the destination (none with the stream transport or post-copy). */
  readonly pageServer?: PageServer;
  /** The container's files, when some are synced. */
  readonly files?: FilesSync;
  /** The work directory punches holes: the restore may free the images as it reads them (see startGuard). */
  readonly spendImages?: boolean;
  /** Post-copy: the window's limits, where the source's lazy page server listens, the destination's TLS files. */
  readonly lazy?: { readonly limits: LazyLimits; readonly sourceAddress: string; readonly tls: TlsFiles };
}

export class Destination implements DestinationSide {
  private guard?: Proc;
  protected lines: string[] = [];
  /** Post-copy: the lazy-pages daemon's exit status, once the guard said it ended. */
  protected lazyDone?: string;
  /** The guard's last word about the copy, once said. */
  protected ended?: 'committed' | 'removed';
  protected waiters: Array<() => void> = [];
  protected closed = false;
  protected readonly ctx: Session;
  private readonly R: WorkPaths;
  private readonly images: FinalImages;
  private readonly deadlineS: number;

  constructor(protected readonly setup: DestinationSetup) {
    this.ctx = setup.s;
    this.R = setup.work.remote;
    this.images = setup.images;
    this.deadlineS = setup.deadlineS;
  }

  /** The destination's page server log, each line marked as its own (it goes with the work directory). */
  async pageServerLog(): Promise<string> {
    if (!this.setup.pageServer) return '';
    const log = await fetchLog(this.ctx.dst, this.R.pageServerLog).catch(() => '');
    return log
      .split('\n')
      .filter(Boolean)
      .map((l) => `[dst page server] ${l}\n`)
      .join('');
  }

  /** A fault point of the tests (faults.ts): the tool dies or loses the connection here. */
  private point(name: string): void {
    this.ctx.faults.point(name, () => this.ctx.ssh.sever(), this.setup.work.local);
  }

  get guardDir(): string {
    return guardDirOf(this.R.base);
  }

  /** The guard's start, while it is under way: a removal waits for it (it runs beside the copy). */
  private starting?: Promise<void>;

  startGuard(o: { keepImages?: boolean } = {}): Promise<void> {
    this.starting = this.start(!!o.keepImages);
    return this.starting;
  }

  /** The guard's shell script (guard.ts) for this migration. */
  private guardCommand(keepImages: boolean): string {
    const { ctx, images } = this;
    const mv = this.setup.moveIp;
    const g = ctx.dstRunc;
    const pidFile = `${this.R.criuWork}/restored.pid`;
    // runc's directory for the name: the guard's look before the restore, and its reap after.
    const stateDir = path.posix.join(g.root, ctx.opts.container);
    const lazy = this.setup.lazy;
    let restore = runc.restore(g, ctx.opts.container, {
      bundle: this.setup.bundle,
      imagePath: images.remote,
      workPath: this.R.criuWork,
      tcpEstablished: ctx.opts.tcpEstablished,
      pidFile,
      lazy: !!lazy,
      // With a source to resume, a failed restore does not need these images again;
      // without one (its checkpoint ended without the hold) they are the only copy.
      spendImages: !keepImages && !!this.setup.spendImages,
    });
    // Test faults: a restore that hangs, a copy that dies right after it was restored.
    if (ctx.faults.at('restore-hang')) restore = ['sh', '-c', 'sleep 3597; exec "$@"', 'sh', ...restore];
    // A restore that stalls inside CRIU (an action script of its configuration sleeps), with
    // its tasks forked and its mounts made: at setup-namespaces before runc wrote its state,
    // at post-restore after (the guard kills it at its deadline).
    for (const [fault, stage] of [
      ['restore-stall', 'setup-namespaces'],
      ['restore-stall-late', 'post-restore'],
    ] as const) {
      if (!ctx.faults.at(fault)) continue;
      const script = `${this.R.criuWork}/stall.sh`;
      restore = [
        'sh',
        '-c',
        `printf '#!/bin/sh\\n[ "$CRTOOLS_SCRIPT_ACTION" = ${stage} ] && exec sleep 3596\\nexit 0\\n' > ${quote(script)} && chmod +x ${quote(script)} && echo ${quote(`action-script ${script}`)} >> "$CRIU_CONFIG_FILE" && exec "$@"`,
        'sh',
        ...restore,
      ];
    }
    // (before the guard looks at it: a stopped copy cannot die by itself afterwards).
    if (ctx.faults.at('restore-dies')) {
      restore = [
        'sh',
        '-c',
        `"$@" || exit $?; kill -KILL "$(cat ${quote(pidFile)})"; sleep 0.05; exit 0`,
        'sh',
        ...restore,
      ];
    }
    const script = guardScript({
      dir: this.guardDir,
      state: runc.state(g, ctx.opts.container),
      ps: runc.ps(g, ctx.opts.container),
      pidFile,
      stateDir,
      restore,
      reap: {
        criuWork: this.R.criuWork,
        stateDir,
        restoreLog: RESTORE_LOG,
      },
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
              address: lazy.sourceAddress,
              port: ctx.opts.pageServerPort,
              logFile: this.lazyLog,
              tls: lazy.tls,
            }),
            socket: path.join(this.R.criuWork, LAZY_SOCKET),
            session: ['dst', ssAddress(lazy.sourceAddress), 'dport', '=', `:${ctx.opts.pageServerPort}`],
            ...lazy.limits,
          }
        : undefined,
      moveIp: mv
        ? {
            claim: addr.claim(mv, mv.dstDev),
            unclaim: addr.unclaim(mv, mv.dstDev),
            unmute: addr.unmute(mv, mv.dstDev),
            garp: addr.garp(mv.arping, mv, mv.dstDev),
          }
        : undefined,
    });
    return script;
  }

  private async start(keepImages: boolean): Promise<void> {
    const { ctx } = this;
    const mv = this.setup.moveIp;
    const armed = this.armedGuard;
    this.armedGuard = undefined;
    let early: Buffer[] = [];
    if (armed && !keepImages && !armed.ended) {
      // The armed shell reads its line and becomes the guard (armGuard).
      this.guard = armed.proc;
      early = armed.takeOutput();
      armed.go();
    } else {
      // Not waited for: without a source this is the frozen path.
      void armed?.end();
      this.guard = await ctx.dst.spawn(['sh', '-c', this.guardCommand(keepImages)], { streamStdout: true });
    }
    this.beat(true);
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = parseGuardLine(buf.slice(0, i));
        if (l.word === GUARD_WORD.lazyDone) this.lazyDone = l.detail;
        if (l.word === GUARD_WORD.committed || l.word === GUARD_WORD.removed) this.ended ??= l.word;
        if (l.word === GUARD_WORD.resumeFailed || l.word === GUARD_WORD.announceFailed)
          this.afterCommitTrouble.push(buf.slice(0, i));
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      this.wake();
    };
    this.guard.stdout.on('data', onData);
    for (const d of early) onData(d);
    void this.guard.done.then(() => {
      this.closed = true;
      this.beat(false);
      this.wake();
    });
    const w = await this.next([GUARD_WORD.claimed, GUARD_WORD.claimFailed, GUARD_WORD.removed], 30_000);
    if (w.word !== GUARD_WORD.claimed)
      throw new Error(`the destination's guard could not claim ${mv?.address}: ${w.detail}`);
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
  protected async next(words: string[], timeoutMs: number): Promise<{ word: string; detail: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length) {
        const l = parseGuardLine(this.lines.shift() ?? '');
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

  protected say(word: string): void {
    if (!this.closed) this.guard?.stdin.write(word + '\n');
  }

  private armed?: ArmedCopy;
  private armedGuard?: { proc: Proc; ended: boolean; takeOutput(): Buffer[]; go(): void; end(): Promise<void> };

  /**
   * Before the freeze, what costs an exec channel's opening (26-48 ms, measured) is
   * started and waits: the image copy's two tars (ArmedCopy), and a shell that becomes
   * the guard on one line (startGuard). Nothing on the destination changes until then:
   * the guard's script, its deadline included, starts after the freeze as before. Undo:
   * disarm(), on every way out of the switchover; the tool's death ends both (their
   * stdin closes).
   */
  async arm(): Promise<void> {
    const [copy] = await Promise.all([
      ArmedCopy.arm(this.ctx, this.images.local, this.images.remote, COPY_EXCLUDE, this.deadlineS * 1000).catch(
        () => undefined,
      ),
      this.armGuard().catch(() => undefined),
    ]);
    this.armed = copy;
  }

  private async armGuard(): Promise<void> {
    let proc: Proc;
    try {
      proc = await this.ctx.dst.spawn(armedCommand(['sh', '-c', this.guardCommand(false)]), { streamStdout: true });
    } catch {
      return;
    }
    const stopKeepalive = keepAlive(proc, HEARTBEAT.intervalMs);
    // Its output is read from the start: an SSH channel whose output is not read never
    // closes, and done would not resolve when the shell ends unused (host.ts RemoteHost.spawn).
    const early: Buffer[] = [];
    const keep = (d: Buffer) => early.push(d);
    proc.stdout.on('data', keep);
    const g = {
      proc,
      ended: false,
      /** What it printed so far (nothing, before its line); from now on the caller reads it. */
      takeOutput(): Buffer[] {
        proc.stdout.removeListener('data', keep);
        return early.splice(0);
      },
      go(): void {
        stopKeepalive();
        proc.stdin.write(`${ARMED_GO}\n`);
      },
      async end(): Promise<void> {
        g.ended = true;
        stopKeepalive();
        proc.stdin.on('error', () => undefined);
        proc.stdin.end();
        await endWithin([proc], 5000);
      },
    };
    void proc.done.then(() => (g.ended = true));
    this.armedGuard = g;
  }

  /** Ends what arm() started and was never used. */
  async disarm(): Promise<void> {
    const copy = this.armed;
    const guard = this.armedGuard;
    this.armed = undefined;
    this.armedGuard = undefined;
    await Promise.all([copy?.disarm(), guard?.end()]);
  }

  async copyImages(): Promise<number> {
    const { ctx, images } = this;
    const ps = this.setup.pageServer;
    if (ps) {
      const code = await ps.done;
      if (code !== 0) {
        const errs = criuLogErrors(await this.pageServerLog(), 3);
        throw new Error(
          `the page server on the destination exited ${code}: not every page arrived${errs.length ? `: ${errs.join(' | ')}` : ''}`,
        );
      }
    }
    ctx.faults.fail('copy');
    const armed = this.armed;
    this.armed = undefined;
    const limitMs = this.deadlineS * 1000;
    const bytes =
      (await armed?.fire('copying images', limitMs)) ??
      (await streamDir(ctx, images.local, images.remote, COPY_EXCLUDE, limitMs));
    // Hybrid: no page server took the lazy final dump; the restore finds the pre-dumps through this link.
    if (this.setup.lazy && images.parent)
      await ctx.dst.run(['ln', '-sfn', images.parent, path.join(images.remote, 'parent')]);
    return bytes;
  }

  async syncFiles(): Promise<boolean> {
    const f = this.setup.files;
    if (!f || f.trees.length === 0) return false;
    this.ctx.faults.fail('sync');
    // Tests: the tool dies, or loses its connection, while rsync runs.
    const t = setTimeout(() => this.point('syncing'), 30);
    try {
      await f.finalDelta(this.deadlineS * 1000);
    } finally {
      clearTimeout(t);
    }
    return true;
  }

  async restore(): Promise<void> {
    this.ctx.faults.fail('restore');
    // No heartbeat while the guard restores: it stops the restore on any word.
    this.beat(false);
    this.say(TOOL_WORD.restore);
    // Tests: the tool dies, or loses the connection, while the guard restores.
    this.point('restoring');
    const w = await this.next(
      [GUARD_WORD.verified, GUARD_WORD.restoreFailed, GUARD_WORD.died, GUARD_WORD.nameTaken, GUARD_WORD.removed],
      this.deadlineS * 1000,
    );
    if (w.word === GUARD_WORD.verified) {
      // The guard waits for the commit: it hears from the tool from now on.
      if (!this.setup.lazy) this.beat(true);
      if (this.ctx.faults.at('ssh-drop')) this.ctx.ssh.sever();
      this.ctx.faults.fail('verify');
      if (this.setup.lazy) {
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
    if (w.word === 'died')
      throw new Error(`the restored container is ${w.detail} on the destination right after the restore`);
    if (w.word === 'name-taken')
      throw new Error(
        `a container named ${this.ctx.opts.container} appeared on the destination during the migration; it was left alone`,
      );
    throw new Error(`the restore did not finish: ${w.detail}`);
  }

  /** Post-copy: the lazy-pages daemon's log (its figures, and its errors). */
  get lazyLog(): string {
    return path.join(this.R.criuWork, 'lazy-pages.log');
  }

  async commit(): Promise<{ trouble: string[] }> {
    this.beat(false);
    this.say(TOOL_WORD.commit);
    this.point('commit-sent');
    const w = await this.next([GUARD_WORD.committed, GUARD_WORD.removed], 60_000);
    if (w.word !== GUARD_WORD.committed)
      throw new Error(`the guard answered ${w.word}${w.detail ? ` (${w.detail})` : ''}`);
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
    const f = await this.watchGuard({ reads: this.settleReads() }, (g) => g.committed || !g.alive);
    if (!f) return undefined;
    // Committed while it still continues the copy's tasks (or announces): committed.
    if (f.committed) return 'committed';
    if (f.alive) return undefined;
    // No trace of the guard (its files wiped by a reboot): it may have committed.
    return f.removed || (f.present && (await this.absent())) ? 'removed' : undefined;
  }

  /** How many reads settle() and remove() make of the guard's files (100 ms apart) before they give up. */
  private settleReads(): number {
    return 10 * (this.deadlineS + 30);
  }

  /**
   * Reads the guard's files (over a new connection if need be) until DONE holds, at most
   * READS times or until DEADLINE (Date.now()), whichever the caller gives. undefined:
   * the destination cannot be reached (at once, unless keepTrying) or the bound passed;
   * the last files read otherwise.
   */
  protected async watchGuard(
    bound: { reads: number } | { deadline: number },
    done: (f: GuardFiles) => boolean,
    o: { keepTrying?: boolean; pollMs?: number } = {},
  ): Promise<GuardFiles | undefined> {
    for (let i = 0; 'reads' in bound ? i < bound.reads : Date.now() < bound.deadline; i++) {
      const f = await this.guardFiles();
      if (f && done(f)) return f;
      if (!f && !o.keepTrying) return undefined;
      await new Promise((r) => setTimeout(r, f ? (o.pollMs ?? 100) : 2000));
    }
    return undefined;
  }

  /** The guard's files: committed, removed, or neither yet (its pid still running). */
  protected async guardFiles(): Promise<GuardFiles | undefined> {
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
    const f = await this.watchGuard({ reads: this.settleReads() }, (g) => g.committed || !g.alive);
    if (!f || f.committed || f.alive) return false;
    // The guard removes only what it restored: its word is the confirmation.
    return f.removed || (await this.absent());
  }

  protected async absent(): Promise<boolean> {
    const st = await this.ctx.dst
      .run(runc.state(this.ctx.dstRunc, this.ctx.opts.container), { allowFail: true })
      .catch(() => undefined);
    return !!st && st.code !== 0 && isNotExist(st.stderr);
  }
}
