// Auto-converge's watch on CRIU, in a worker thread (throttle.ts starts it).
//
// The throttle has to be off while CRIU holds the tasks (its freeze and its parasite run
// in the container's cgroup) and back the moment CRIU lets them go: a whole-page writer
// needs about 5 ms of CPU to rewrite a quarter of 48 MiB. Watched from the tool's event
// loop, between CRIU and runc on one CPU, the way back took 100-400 ms in the VMs, and
// the container dirtied in that gap, unthrottled, most of what the next dump then had
// to carry. This thread polls every millisecond with blocking reads and writes the
// quota itself, so the gap is one poll.
//
// Jobs arrive as messages; a job runs until it is done or the control word says stop.
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { freezeAsked, type FreezerControl } from '../../cgroup.js';

/** What the worker is started with. ctrl: an Int32Array over a SharedArrayBuffer; [0] is RUN or STOP. */
export interface WatchData {
  ctrl: SharedArrayBuffer;
  pid: number;
  quotaFile: string;
  /** The quota the container had (written while CRIU holds it). */
  original: string;
  freezer?: FreezerControl;
}

/**
 * suspend: the original quota while CRIU holds the tasks, THROTTLED again once it lets
 * them go (for as long as the job runs: a pre-dump). lift: the original quota once CRIU
 * holds the tasks, then done (the switchover).
 */
export type WatchJob = { op: 'suspend'; throttled: string } | { op: 'lift' };

/** Posted when a job ends. lifted: the original quota is in force. */
export interface WatchDone {
  done: true;
  lifted: boolean;
  error?: string;
}

export const RUN = 0;
export const STOP = 1;

/** Milliseconds between polls: while CRIU holds the tasks (the way back is what counts), and before. */
const POLL_HELD_MS = 1;
const POLL_MS = 2;

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Whether CRIU holds the tasks: the freeze asked for (before the seize), or the init traced. */
export function holds(d: Pick<WatchData, 'pid' | 'freezer'>): boolean {
  if (d.freezer && freezeAsked(d.freezer.version, read(d.freezer.file))) return true;
  return Number(read(`/proc/${d.pid}/status`).match(/^TracerPid:\s*(\d+)/m)?.[1] ?? 0) !== 0;
}

/** Runs JOB until it is done or CTRL says stop. */
export function runJob(d: WatchData, job: WatchJob): WatchDone {
  const ctrl = new Int32Array(d.ctrl);
  let lifted = false;
  try {
    while (Atomics.load(ctrl, 0) === RUN) {
      const held = holds(d);
      if (held && !lifted) {
        fs.writeFileSync(d.quotaFile, d.original + '\n');
        lifted = true;
        if (job.op === 'lift') break;
      } else if (!held && lifted && job.op === 'suspend') {
        fs.writeFileSync(d.quotaFile, job.throttled);
        lifted = false;
      }
      Atomics.wait(ctrl, 0, RUN, lifted ? POLL_HELD_MS : POLL_MS);
    }
    // A pre-dump that ended while its tasks were held (CRIU failed; they run again now).
    if (lifted && job.op === 'suspend') {
      fs.writeFileSync(d.quotaFile, job.throttled);
      lifted = false;
    }
    return { done: true, lifted };
  } catch (err) {
    return { done: true, lifted, error: (err as Error).message };
  }
}

if (parentPort && workerData && (workerData as { throttleWatch?: WatchData }).throttleWatch) {
  const d = (workerData as { throttleWatch: WatchData }).throttleWatch;
  const port = parentPort;
  port.on('message', (job: WatchJob) => port.postMessage(runJob(d, job)));
}
