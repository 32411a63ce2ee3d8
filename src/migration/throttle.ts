// Auto-converge's lever (--auto-converge): the container's CPU quota on the source. A
// throttle of P % lets the container use (100 - P) % of the CPU time it used before any
// throttle, so it dirties memory more slowly and pre-copy can catch up (QEMU's idea).
//
// Contract: the original quota is put back by lift(), which runs once CRIU starts to stop
// the tasks for the final dump (liftWhenHeld) and in the cleanups on every exit path; if
// the tool dies, a keeper (keeper.ts) puts it back. Nothing else of the container is touched.
import fs from 'node:fs/promises';
import { cpuControl, freezerControl, throttledQuota, v1Mounts, type CpuControl } from '../cgroup.js';
import { localKeeper, type EndKeeper } from './keeper.js';

/** The process holding PID under ptrace (CRIU, while it holds the tasks); 0 when none. */
async function tracerPid(pid: number): Promise<number> {
  return Number((await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')).match(/^TracerPid:\s*(\d+)/m)?.[1] ?? 0);
}

/** Watches how far CRIU holds the container: frozen through its cgroup, or seized. */
type Held = () => Promise<boolean>;

export class Throttle {
  /** The throttle in force, percent (0: none). */
  pct = 0;
  /** CPUs the container used before the first throttle (the base the quota is cut from). */
  private baseCpus?: number;

  private constructor(
    private readonly ctl: CpuControl,
    private readonly quotaFile: string,
    private readonly original: string,
    private readonly periodUs: number,
    private readonly endKeeper: EndKeeper,
    private readonly freezer?: { file: string; asked: (text: string) => boolean },
  ) {}

  /**
   * Whether CRIU holds the container whose init is PID: its cgroup's freeze asked for
   * (CRIU freezes through the cgroup runc hands it, before it seizes the tasks), or the
   * init traced. A throttled cgroup freezes only as fast as its tasks get CPU to stop:
   * 325 ms in the VMs at 99 %, against 9 ms unthrottled; so the freeze is the signal.
   */
  private held(pid: number): Held {
    return async () => {
      if (this.freezer && this.freezer.asked(await fs.readFile(this.freezer.file, 'utf8').catch(() => ''))) return true;
      return (await tracerPid(pid)) !== 0;
    };
  }

  /** Finds the controller of the container whose init is PID; the reason when it cannot be throttled. */
  static async locate(pid: number): Promise<Throttle | { refuse: string }> {
    const text = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    const mounts = await fs.readFile('/proc/self/mounts', 'utf8').catch(() => '');
    const ctl = cpuControl(text, v1Mounts(mounts));
    if (!ctl) return { refuse: `no CPU controller found for pid ${pid} (/proc/${pid}/cgroup)` };
    const quotaFile = ctl.version === 2 ? `${ctl.dir}/cpu.max` : `${ctl.dir}/cpu.cfs_quota_us`;
    const original = (await fs.readFile(quotaFile, 'utf8').catch(() => '')).trim();
    if (!original) return { refuse: `${quotaFile} cannot be read (is the cpu controller enabled for the container's cgroup?)` };
    const periodUs = ctl.version === 2 ? Number(original.split(/\s+/)[1] ?? 100000) : Number((await fs.readFile(`${ctl.dir}/cpu.cfs_period_us`, 'utf8').catch(() => '100000')).trim());
    // Written back as it was, whatever happens to the tool.
    const end = await localKeeper('throttle-keeper', ['sh', '-c', 'printf "%s\\n" "$1" > "$2"', 'sh', original, quotaFile]);
    return new Throttle(ctl, quotaFile, original, periodUs, end, freezerControl(text, v1Mounts(mounts)));
  }

  describe(): string {
    return `${this.quotaFile} (now ${this.original})`;
  }

  /** The container's CPU time so far, seconds. */
  async usageS(): Promise<number | undefined> {
    if (this.ctl.version === 2) {
      const stat = await fs.readFile(`${this.ctl.dir}/cpu.stat`, 'utf8').catch(() => '');
      const us = Number(stat.match(/^usage_usec (\d+)/m)?.[1]);
      return Number.isFinite(us) ? us / 1e6 : undefined;
    }
    if (!this.ctl.cpuacct) return undefined;
    const ns = Number((await fs.readFile(`${this.ctl.cpuacct}/cpuacct.usage`, 'utf8').catch(() => '')).trim());
    return Number.isFinite(ns) ? ns / 1e9 : undefined;
  }

  /**
   * Sets a throttle of PCT percent. CPUS: the CPUs the container used lately (taken as
   * the base the first time; later steps cut the same base).
   */
  async set(pct: number, cpus: number | undefined): Promise<void> {
    this.baseCpus ??= Math.max(0.05, cpus ?? 1);
    const q = throttledQuota(this.baseCpus, pct, this.periodUs, this.ctl.version === 2);
    await fs.writeFile(this.quotaFile, this.ctl.version === 2 ? `${q.quotaUs} ${q.periodUs}\n` : `${q.quotaUs}\n`);
    this.pct = pct;
  }

  /**
   * Runs a pre-dump (RUN) with the throttle off while CRIU holds the tasks: CRIU's
   * parasite code runs inside them, in their cgroup, and a throttled parasite makes the
   * freeze as many times longer. The throttle goes when CRIU asks the freeze (held())
   * and comes back when the tasks are thawed and free again (the container runs
   * throttled while CRIU starts and while the pages are sent); at the latest when RUN ends.
   */
  async suspendedDuring<T>(pid: number, run: () => Promise<T>): Promise<T> {
    const pct = this.pct;
    if (pct === 0) return run();
    const held = this.held(pid);
    let done = false;
    let lifted = false;
    const watch = (async () => {
      while (!done) {
        const h = await held();
        if (h && !lifted) {
          await fs.writeFile(this.quotaFile, this.original + '\n');
          lifted = true;
        } else if (!h && lifted) break;
        await new Promise((r) => setTimeout(r, 2));
      }
      if (lifted) await this.set(pct, undefined);
    })();
    try {
      return await run();
    } finally {
      done = true;
      await watch;
    }
  }

  /**
   * The switchover: the throttle stays until CRIU starts to stop the tasks for the final
   * dump (lifted earlier, the container would dirty again, unthrottled, everything
   * pre-copy had caught up with while runc and CRIU start), then goes for good. The
   * returned function ends the watch and makes sure the throttle is gone.
   */
  liftWhenHeld(pid: number): () => Promise<void> {
    const held = this.held(pid);
    let done = false;
    const watch = (async () => {
      while (!done && this.pct !== 0) {
        if (await held()) break;
        await new Promise((r) => setTimeout(r, 2));
      }
      await this.lift();
    })();
    return async () => {
      done = true;
      await watch;
    };
  }

  /** Puts the original quota back (the keeper does it, and ends). Idempotent. */
  async lift(): Promise<void> {
    await fs.writeFile(this.quotaFile, this.original + '\n').catch(() => undefined);
    this.pct = 0;
    await this.endKeeper();
  }
}
