// The source participant of the switchover (switchover.ts): this machine. It runs the
// checkpoint in its own process group, holds the frozen tasks at CRIU's post-dump until
// the verdict (hold.ts), keeps the intent record that migrate recover reads, and cleans
// up CRIU's lock rules after a commit.
import { freezerOf, watchFreeze } from './freezewatch.js';
import fs from 'node:fs/promises';
import { statSync } from 'node:fs';
import path from 'node:path';
import { criuLogErrors } from '../../criu.js';
import { decodeStatsImage, type DumpStats } from '../../criustats.js';
import { diedAtBirth } from '../../interrupt.js';
import { DEFAULTS } from '../../options.js';
import { runc } from '../../runc.js';
import { containerPids } from '../files/tasks.js';
import { addr } from '../network/address.js';
import { connectionsOf, criuLockRules, removeCriuLockRules, type Connection } from '../network/netlock.js';
import type { LazyLimits } from '../plan/method.js';
import type { MoveIpFacts } from '../preflight/facts.js';
import { DUMP_LOG, type WorkPaths } from '../prepare/paths.js';
import type { Undo } from '../prepare/undo.js';
import { writeIntent, type IntentPhase, type IntentRecord } from '../recover/intent.js';
import type { Session } from '../session.js';
import { diagnose } from './diagnose.js';
import {
  cutLazyServer,
  decide,
  lazyExitFile,
  lazyServerReady,
  readHold,
  readLazyExit,
  recoverArgv,
  waitDumped,
  writeHold,
  type Verdict,
} from './hold.js';
import { CriuFailure, fetchLog, removeContainer, type FinalImages } from './shared.js';
import type { FreezeResult, SourceSide } from './switchover.js';

/** What the source participant needs, and nothing else. */
export interface SourceSetup {
  readonly s: Session;
  /** This host's work directory. */
  readonly work: WorkPaths;
  readonly images: FinalImages;
  readonly intent: { file: string; record: IntentRecord };
  /** How long the frozen source waits for the verdict before it resumes by itself. */
  readonly holdTimeoutS: number;
  readonly undo: Undo;
  /** The container's init. */
  readonly pid: number;
  readonly moveIp?: MoveIpFacts;
  /** TLS lines for CRIU's config (certs.ts), or ''. */
  readonly criuConfig: string;
  /** Where the final dump sends its pages (a page server; post-copy: the source's own lazy one); undefined: written here. */
  readonly pagesTo?: string;
  /** The destination's page server log, for a failed dump's evidence. */
  readonly pageServerLog: () => Promise<string>;
  /** Post-copy: the destination guard's window limits (the source's watchdog adds a margin to each). */
  readonly lazy?: LazyLimits;
}

export class Source implements SourceSide {
  protected ended?: Promise<{ code: number | null; signal?: string; stderr: string }>;
  /** CRIU's figures for the final dump, read after the commit. */
  finalDump?: DumpStats;
  /** The source was destroyed without a hold: its images are the only copy, and stay unless the destination restored them. */
  imagesOnly = false;
  protected readonly ctx: Session;
  protected readonly L: WorkPaths;
  private readonly images: FinalImages;
  private readonly intent: SourceSetup['intent'];

  constructor(protected readonly setup: SourceSetup) {
    this.ctx = setup.s;
    this.L = setup.work;
    this.images = setup.images;
    this.intent = setup.intent;
  }

  /** The checkpoint's outcome; it was started by freeze(). */
  protected checkpoint(): Promise<{ code: number | null; signal?: string; stderr: string }> {
    if (!this.ended) throw new Error('internal: the checkpoint was not started');
    return this.ended;
  }

  async record(phase: IntentPhase): Promise<void> {
    await writeIntent(this.intent.file, {
      ...this.intent.record,
      lockRulesBefore: this.lockRulesBefore,
      connections: this.connections,
      phase,
      updatedAt: '',
    });
  }

  /** When the container's freezer was first seen asked to freeze (performance.now()), if it was. */
  protected frozeAt?: number;

  /** CRIU lock rules present before this dump: another dump's, left alone after the commit. */
  protected lockRulesBefore: string[] = [];

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
    if (ctx.opts.tcpEstablished)
      this.connections = await connectionsOf(this.setup.pid, await containerPids(ctx, this.setup.pid), run);
  }

  /** The container's TCP connections before the dump (--tcp-established). */
  protected connections?: Connection[];

  async freeze(): Promise<FreezeResult> {
    const { ctx, L, images } = this;
    const m = this.setup.moveIp;
    const mv = m ? addr.giveBack(m.srcArping, m, m.srcDev, L.holdDir) : undefined;
    const lim = this.setup.lazy;
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
    const hold = await writeHold(
      L,
      process.pid,
      this.setup.holdTimeoutS,
      mv,
      path.join(DEFAULTS.intentDir, 'hold'),
      this.setup.criuConfig,
      watchdog,
      ctx.faults.at('dump'),
    );
    const env = hold.env;
    // The link CRIU names the hold by (a work directory CRIU's config cannot name): gone with the run.
    if (hold.link) {
      const link = hold.link;
      this.setup.undo.add(`remove ${link}`, async () => {
        await fs.rm(link, { force: true });
        await fs.rmdir(path.dirname(link)).catch(() => undefined); // when no other run's link is there
      });
    }
    await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
    const lazy = lim !== undefined;
    const argv = runc.checkpoint(ctx.srcRunc, ctx.opts.container, {
      imagePath: images.local,
      workPath: L.criuWork,
      pageServer: this.setup.pagesTo,
      tcpEstablished: ctx.opts.tcpEstablished,
      parentPath: images.parent,
      lazyStatusFd: lazy ? 3 : undefined,
    });
    // Its own process group, and its output in files: it outlives the tool if the tool
    // dies (the hold then decides), and a closed pipe must not kill runc half-way.
    const out = path.join(L.holdDir, 'checkpoint.out');
    // Test fault: a wrapper that drops CRIU_CONFIG_FILE, so CRIU never runs the hold.
    const run = ctx.faults.at('no-hold') ? ['env', '-u', 'CRIU_CONFIG_FILE', ...argv] : argv;
    // Post-copy: fd 3 gets the lazy page server's NUL; the exit status is kept in a file,
    // for migrate recover (the checkpoint ends after the lazy window, maybe after the tool).
    const wrapper = lazy
      ? 'out=$1; st=$2; rc=$3; shift 3; "$@" 3>"$st" > "$out" 2>&1; echo $? > "$rc"'
      : 'out=$1; shift; exec "$@" > "$out" 2>&1';
    const wrapperArgs = lazy ? [out, this.lazyStatusFile, lazyExitFile(L.holdDir)] : [out];
    const start = async () => {
      const checkpoint = await ctx.src.spawn(['sh', '-c', wrapper, 'sh', ...wrapperArgs, ...run], { env });
      this.ended = checkpoint.done.then(async (r) => ({
        code: lazy ? await readLazyExit(L.holdDir, r.code) : r.code,
        signal: r.signal,
        stderr: await fs.readFile(out, 'utf8').catch(() => ''),
      }));
      // A lazy page server that starts without the hold (CRIU never ran it) counts as an end.
      return waitDumped(L, checkpoint.done, lazy ? () => lazyServerReady(this.lazyStatusFile) : undefined);
    };
    // When the container actually stops: the downtime starts there.
    const watch = await watchFreeze(await freezerOf(this.setup.pid));
    let held: Awaited<ReturnType<typeof start>>;
    try {
      held = await start();
      // Killed at birth by the signal the tool received (interrupt.ts): nothing ran, nothing froze.
      for (let i = 0; i < 3 && held === 'exited' && diedAtBirth((await this.checkpoint()).signal); i++)
        held = await start();
    } finally {
      this.frozeAt = await watch.stop();
    }
    if (held === 'dumped') return { held: true, frozeAt: this.frozeAt };
    if (held === 'ready') {
      // Post-copy without the hold: the lazy page server already serves, with no way to
      // hold the source back. Ending it resumes the source.
      await this.abortLazyServer();
      const r = await this.checkpoint();
      return {
        held: false,
        failure: new Error(
          `runc checkpoint started the lazy page server without holding the source (CRIU did not run the hold script; is CRIU_CONFIG_FILE passed through?); it was stopped and the source resumed (runc exited ${r.code})`,
        ),
      };
    }
    const res = await this.checkpoint();
    const last = res.stderr.trim().split('\n').pop() ?? '';
    if (res.code === 0) {
      // runc finished without the hold: CRIU ignored CRIU_CONFIG_FILE and the source is
      // gone. The images are the only copy: nothing may delete them.
      this.imagesOnly = true;
      return {
        held: false,
        destroyed: true,
        why: `runc checkpoint finished without holding the source (CRIU did not run the hold script; is CRIU_CONFIG_FILE passed through?): the source is gone, its images (${images.local}) are the only copy`,
      };
    }
    // The page server's side of a failed dump (a refused certificate, a stranger on its port).
    const dumpErrors = criuLogErrors(await fetchLog(ctx.src, path.join(L.criuWork, DUMP_LOG)), 5);
    const d = diagnose([...dumpErrors, ...criuLogErrors(await this.setup.pageServerLog(), 3)].join('\n'), 8);
    return {
      held: false,
      failure: new CriuFailure(`the checkpoint failed on the source (runc exited ${res.code}: ${last})`, d),
    };
  }

  async releaseAddress(): Promise<void> {
    const { ctx } = this;
    // Marked first: from here on every rollback of the hold gives the address back.
    await fs.writeFile(path.join(this.L.holdDir, 'address-released'), '');
    const m = this.setup.moveIp;
    if (!m) return;
    let release = addr.release(m, m.srcDev, this.L.holdDir);
    // Test fault: the release starts 1 s late, and the tool dies as it starts ('releasing').
    if (ctx.faults.at('release-late')) release = ['sh', '-c', 'sleep 1; exec "$@"', 'sh', ...release];
    const done = ctx.src.run(release);
    ctx.faults.point('releasing', () => ctx.ssh.sever(), this.L);
    await done;
  }

  async prepare(): Promise<boolean> {
    const v = await decide(this.L.holdDir, 'verdict', 'prepared');
    return v === 'prepared';
  }

  async finish(v: Verdict): Promise<void> {
    const inForce = await decide(this.L.holdDir, 'final', v);
    const res = await this.checkpoint();
    if (inForce !== v) throw new Error(`the final verdict was already ${inForce}`);
    // CRIU failed after the verdict and resumed the source, which must not run now.
    if (v === 'commit' && res.code !== 0)
      await this.removeResumedCopy(`runc checkpoint failed after the commit (${res.stderr.trim().split('\n').pop()})`);
  }

  /** When the hold resumes the source by itself (its deadline, counted from its start: the marker it wrote). */
  holdEndsAt(): number {
    try {
      return statSync(this.L.dumpedMarker).mtimeMs + this.setup.holdTimeoutS * 1000;
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
  protected get lazyStatusFile(): string {
    return path.join(this.L.holdDir, 'lazy-status');
  }

  /**
   * Post-copy: ends the lazy page server (hold.cutLazyServer): CRIU resumes the source.
   * For a server nobody reached yet (the restore failed before its daemon connected).
   */
  async abortLazyServer(): Promise<void> {
    await this.ctx.src.run(cutLazyServer(this.ctx.opts.pageServerPort), { allowFail: true });
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
    if (ctx.opts.tcpEstablished)
      await removeCriuLockRules(
        (argv) => ctx.src.run(argv, { allowFail: true }),
        this.lockRulesBefore,
        this.connections,
      );
    const stats = await fs.readFile(path.join(this.L.criuWork, 'stats-dump')).catch(() => undefined);
    try {
      this.finalDump = stats ? decodeStatsImage(stats) : undefined;
    } catch (err) {
      // A truncated image (CRIU ran out of room writing it) costs the figures, nothing else.
      ctx.progress.warn(
        `CRIU's stats of the final dump are unreadable (${(err as Error).message}): reported without them`,
      );
    }
  }
}
