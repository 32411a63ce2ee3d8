// Post-copy's extras to the two participants: the source's lazy page server and its
// watchdog, the destination's lazy window (its guard decides alone how it ends: see
// postcopy.ts).
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { lazyFigures } from '../../criu.js';
import { runc } from '../../runc.js';
import { addr } from '../network/address.js';
import { unlockAfterWindow } from '../network/netlock.js';
import type { LazyLimits } from '../plan/method.js';
import { Destination, type DestinationSetup } from './destination.js';
import { decide, lazyServerReady, WATCHDOG_PID } from './hold.js';
import type { LazyDestinationSide, LazySourceSide } from './postcopy.js';
import { GUARD_WORD, TOOL_WORD } from './protocol.js';
import { Source, type SourceSetup } from './source.js';

export class LazySource extends Source implements LazySourceSide {
  constructor(setup: SourceSetup & { readonly lazy: LazyLimits }) {
    super(setup);
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
    const end = this.checkpoint();
    void end.then(() => (ended = true));
    while (!lazyServerReady(this.lazyStatusFile)) {
      if (ended)
        throw new Error(
          `the checkpoint ended before its lazy page server listened: ${(await end).stderr.trim().split('\n').pop()}`,
        );
      if (Date.now() > deadline) throw new Error('the lazy page server on the source did not listen within 30 s');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Post-copy: how the checkpoint ended (0: every page was fetched and runc destroyed the source). */
  async checkpointEnd(): Promise<number | null> {
    return (await this.checkpoint()).code;
  }

  /**
   * Post-copy, after CRIU resumed the source at the end of a failed window: what the hold
   * would have done on a rollback, done here (its script has already exited): the address
   * back, CRIU's lock off (netlock.unlockAfterWindow).
   */
  async afterWindowRollback(): Promise<void> {
    const { ctx } = this;
    const m = this.setup.moveIp;
    if (m && existsSync(path.join(this.L.holdDir, 'address-released')))
      await ctx.src.run(addr.giveBack(m.srcArping, m, m.srcDev, this.L.holdDir), { allowFail: true });
    const hung = await unlockAfterWindow((argv) => ctx.src.run(argv, { allowFail: true }), {
      pid: this.setup.pid,
      ps: runc.ps(ctx.srcRunc, ctx.opts.container),
      keep: this.lockRulesBefore,
      mine: this.connections,
    });
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
}

export class LazyDestination extends Destination implements LazyDestinationSide {
  constructor(setup: DestinationSetup & { readonly lazy: NonNullable<DestinationSetup['lazy']> }) {
    super(setup);
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
    const f = await this.watchGuard({ deadline }, (g) => g.committed || g.removed || !g.alive, {
      keepTrying: true,
      pollMs: 200,
    });
    if (!f) return undefined;
    if (f.committed) return 'committed';
    if (f.removed) return 'removed';
    return (await this.absent()) ? 'removed' : undefined;
  }

  /** Post-copy: the lazy-pages daemon's figures (criu.lazyFigures), best effort. */
  async lazyFigures(): Promise<ReturnType<typeof lazyFigures> | undefined> {
    const r = await this.ctx.dst.run(['cat', this.lazyLog], { allowFail: true }).catch(() => undefined);
    return r && r.code === 0 ? lazyFigures(r.stdout) : undefined;
  }
}
