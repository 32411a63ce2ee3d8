// Auto-converge's lever (--auto-converge): the container's CPU quota on the source. A
// throttle of P % lets the container use (100 - P) % of the CPU time it used before any
// throttle, so it dirties memory more slowly and pre-copy can catch up (QEMU's idea).
//
// Contract: the original quota is put back once CRIU starts to stop the tasks for the
// final dump (liftWhenHeld, from the watch thread: throttle-watch.ts), and by lift() at
// the switchover's end and in the cleanups on every exit path; if the tool dies, a keeper
// (keeper.ts) puts it back. Nothing else of the container is touched.
import fs from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { cpuControl, freezerControl, throttledQuota, v1Mounts, type CpuControl } from '../../cgroup.js';
import { localKeeper, type EndKeeper } from '../prepare/keeper.js';
import { RUN, STOP, type WatchData, type WatchDone, type WatchJob } from './throttle-watch.js';

export class Throttle {
  /** The throttle in force, percent (0: none). */
  pct = 0;
  /** CPUs the container used before the first throttle (the base the quota is cut from). */
  private baseCpus?: number;

  /** The quota text set() wrote last (what a pre-dump puts back when CRIU lets the tasks go). */
  private throttled?: string;

  private constructor(
    private readonly ctl: CpuControl,
    private readonly quotaFile: string,
    private readonly original: string,
    private readonly periodUs: number,
    private readonly endKeeper: EndKeeper,
    private readonly watch: { worker: Worker; ctrl: Int32Array },
  ) {}

  /** Whether the container whose init is PID can be throttled (reads only): its quota file, or why not. */
  static async check(pid: number): Promise<{ describe: string } | { refuse: string }> {
    const f = await Throttle.find(pid);
    return 'refuse' in f ? f : { describe: `${f.quotaFile} (now ${f.original})` };
  }

  private static async find(
    pid: number,
  ): Promise<
    { refuse: string } | { ctl: CpuControl; quotaFile: string; original: string; text: string; mounts: string }
  > {
    const text = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    const mounts = await fs.readFile('/proc/self/mounts', 'utf8').catch(() => '');
    const ctl = cpuControl(text, v1Mounts(mounts));
    if (!ctl) return { refuse: `no CPU controller found for pid ${pid} (/proc/${pid}/cgroup)` };
    const quotaFile = ctl.version === 2 ? `${ctl.dir}/cpu.max` : `${ctl.dir}/cpu.cfs_quota_us`;
    const original = (await fs.readFile(quotaFile, 'utf8').catch(() => '')).trim();
    if (!original)
      return { refuse: `${quotaFile} cannot be read (is the cpu controller enabled for the container's cgroup?)` };
    return { ctl, quotaFile, original, text, mounts };
  }

  /** Takes the container's CPU quota in hand: its original is written back whatever happens to the tool. */
  static async locate(pid: number): Promise<Throttle | { refuse: string }> {
    const f = await Throttle.find(pid);
    if ('refuse' in f) return f;
    const { ctl, quotaFile, original, text, mounts } = f;
    const periodUs =
      ctl.version === 2
        ? Number(original.split(/\s+/)[1] ?? 100000)
        : Number((await fs.readFile(`${ctl.dir}/cpu.cfs_period_us`, 'utf8').catch(() => '100000')).trim());
    // Written back as it was, whatever happens to the tool.
    const end = await localKeeper('throttle-keeper', [
      'sh',
      '-c',
      'printf "%s\\n" "$1" > "$2"',
      'sh',
      original,
      quotaFile,
    ]);
    // The watch on CRIU (throttle-watch.ts) runs in its own thread: see there why.
    const data: WatchData = {
      ctrl: new SharedArrayBuffer(4),
      pid,
      quotaFile,
      original,
      freezer: freezerControl(text, v1Mounts(mounts)),
    };
    const worker = new Worker(new URL('./throttle-watch.js', import.meta.url), { workerData: { throttleWatch: data } });
    worker.unref();
    return new Throttle(ctl, quotaFile, original, periodUs, end, { worker, ctrl: new Int32Array(data.ctrl) });
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
    this.throttled = this.ctl.version === 2 ? `${q.quotaUs} ${q.periodUs}\n` : `${q.quotaUs}\n`;
    await fs.writeFile(this.quotaFile, this.throttled);
    this.pct = pct;
  }

  /** Starts JOB on the watch thread; stop() ends it and returns how it ended. */
  private job(job: WatchJob): { stop: () => Promise<WatchDone> } {
    const { worker, ctrl } = this.watch;
    const done = new Promise<WatchDone>((resolve) => {
      const end = (r: WatchDone) => {
        worker.off('message', end);
        worker.off('error', failed);
        worker.off('exit', exited);
        resolve(r);
      };
      const failed = (err: Error) => end({ done: true, lifted: false, error: err.message });
      const exited = () => end({ done: true, lifted: false, error: 'the watch thread ended' });
      worker.on('message', end);
      worker.on('error', failed);
      worker.on('exit', exited);
    });
    Atomics.store(ctrl, 0, RUN);
    worker.postMessage(job);
    return {
      stop: () => {
        this.stopWatch();
        return done;
      },
    };
  }

  /** Tells the watch thread's running job, if any, to end (it checks between polls). */
  private stopWatch(): void {
    Atomics.store(this.watch.ctrl, 0, STOP);
    Atomics.notify(this.watch.ctrl, 0);
  }

  /**
   * Runs a pre-dump (RUN) with the throttle off while CRIU holds the tasks: CRIU's
   * parasite code runs inside them, in their cgroup, and a throttled parasite makes the
   * freeze as many times longer. The throttle goes when CRIU asks the freeze and comes
   * back the moment the tasks are free again (the container runs throttled while CRIU
   * starts and while the pages are sent); at the latest when RUN ends.
   */
  async suspendedDuring<T>(run: () => Promise<T>): Promise<T> {
    if (this.pct === 0 || !this.throttled) return run();
    const job = this.job({ op: 'suspend', throttled: this.throttled });
    try {
      return await run();
    } finally {
      const r = await job.stop();
      // Without its watch the quota may be the original one: set it again.
      if (r.error) await this.set(this.pct, undefined);
    }
  }

  /**
   * The switchover: the throttle stays until CRIU starts to stop the tasks for the final
   * dump (lifted earlier, the container would dirty again, unthrottled, everything
   * pre-copy had caught up with while runc and CRIU start), then goes for good. The
   * returned function ends the watch and makes sure the throttle is gone.
   */
  liftWhenHeld(): () => Promise<void> {
    if (this.pct === 0) return () => this.lift();
    const job = this.job({ op: 'lift' });
    return async () => {
      await job.stop();
      await this.lift();
    };
  }

  /** Ends the watch thread (first: it could write a throttle), puts the original quota back (the keeper does it too, and ends). Idempotent. */
  async lift(): Promise<void> {
    this.stopWatch();
    await this.watch.worker.terminate().catch(() => undefined);
    await fs.writeFile(this.quotaFile, this.original + '\n').catch(() => undefined);
    this.pct = 0;
    await this.endKeeper();
  }
}
