// When the container actually stopped: its freezer, polled while the final dump starts.
// The downtime runs from there (runc and CRIU take 100 ms or more to start before they
// freeze anything, and the container serves meanwhile). Where no freezer is found, the
// caller keeps the checkpoint's start.
//
// The polls run in a worker thread: the tool's own event loop stalls for tens of ms
// while it spawns runc and talks SSH, exactly while the freeze comes, and a poll from
// there would place the freeze late, or (taking the last look that saw it not asked)
// early by as much. This thread reads the file every millisecond with blocking reads.
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { freezeAsked, freezerControl, v1Mounts, type FreezerControl } from '../../cgroup.js';

/** Milliseconds between two reads of the freezer. */
const POLL_MS = 1;

export interface FreezeWatch {
  /**
   * Stops the watch; returns when (performance.now()) the freezer was last seen not asked
   * to freeze before it was first seen asked, if it was: the freeze came in the next
   * millisecond, so the downtime is never under-reported.
   */
  stop(): Promise<number | undefined>;
}

/** The freezer of the process PID's cgroup (v1 freezer.state, v2 cgroup.freeze), if there is one. */
export async function freezerOf(pid: number): Promise<FreezerControl | undefined> {
  const [text, mounts] = await Promise.all([
    fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => ''),
    fs.readFile('/proc/self/mounts', 'utf8').catch(() => ''),
  ]);
  return text ? freezerControl(text, v1Mounts(mounts)) : undefined;
}

/** Shared with the worker: [0] run (1) or stop (0); times as epoch ms in a Float64Array at 8: [0] last clear, [1] seen asked (NaN: not yet). */
interface WatchShared {
  ctrl: SharedArrayBuffer;
  times: SharedArrayBuffer;
  freezer: FreezerControl;
}

/** Watches FREEZER until stopped; a freezer that cannot be read gives no time. */
export async function watchFreeze(freezer: FreezerControl | undefined): Promise<FreezeWatch> {
  if (!freezer) return { stop: async () => undefined };
  const shared: WatchShared = {
    ctrl: new SharedArrayBuffer(4),
    times: new SharedArrayBuffer(16),
    freezer,
  };
  const ctrl = new Int32Array(shared.ctrl);
  const times = new Float64Array(shared.times);
  times[0] = Number.NaN;
  times[1] = Number.NaN;
  Atomics.store(ctrl, 0, 1);
  const worker = new Worker(new URL(import.meta.url), { workerData: { freezeWatch: shared } });
  const ended = new Promise<void>((resolve) => {
    worker.once('exit', () => resolve());
    worker.once('error', () => resolve());
  });
  // Started: its first look is done (or it failed).
  await new Promise<void>((resolve) => {
    worker.once('message', () => resolve());
    void ended.then(resolve);
  });
  return {
    stop: async () => {
      Atomics.store(ctrl, 0, 0);
      Atomics.notify(ctrl, 0);
      await ended;
      if (Number.isNaN(times[1]) || Number.isNaN(times[0])) return undefined;
      return times[0] - performance.timeOrigin;
    },
  };
}

/** The worker: polls until told to stop, or until the freeze was seen. */
function poll(d: WatchShared): void {
  const ctrl = new Int32Array(d.ctrl);
  const times = new Float64Array(d.times);
  const now = () => performance.timeOrigin + performance.now();
  let first = true;
  while (Atomics.load(ctrl, 0) === 1) {
    const t = now();
    let asked: boolean;
    try {
      asked = freezeAsked(d.freezer.version, readFileSync(d.freezer.file, 'utf8'));
    } catch {
      break;
    }
    if (asked) {
      times[1] = t;
      break;
    }
    times[0] = t;
    if (first) parentPort?.postMessage('started');
    first = false;
    Atomics.wait(ctrl, 0, 1, POLL_MS);
  }
  if (first) parentPort?.postMessage('started');
}

if (!isMainThread && (workerData as { freezeWatch?: WatchShared } | undefined)?.freezeWatch)
  poll((workerData as { freezeWatch: WatchShared }).freezeWatch);
