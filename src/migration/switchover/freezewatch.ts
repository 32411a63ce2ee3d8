// When the container actually stopped: its freezer, polled while the final dump starts.
// The downtime runs from there (runc and CRIU take 100 ms or more to start before they
// freeze anything, and the container serves meanwhile). Where no freezer is found, the
// caller keeps the checkpoint's start.
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { freezeAsked, freezerControl, v1Mounts, type FreezerControl } from '../../cgroup.js';

/** How often the freezer is read while the dump starts, ms. */
const POLL_MS = 2;

export interface FreezeWatch {
  /**
   * Stops the watch; returns when (performance.now()) the freezer was last seen not asked
   * to freeze before it was seen asked, if it was: the freeze came after, so the downtime
   * is never under-reported (a poll that came late only lengthens it).
   */
  stop(): number | undefined;
}

/** The freezer of the process PID's cgroup (v1 freezer.state, v2 cgroup.freeze), if there is one. */
export async function freezerOf(pid: number): Promise<FreezerControl | undefined> {
  const [text, mounts] = await Promise.all([
    fs.readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => ''),
    fs.readFile('/proc/self/mounts', 'utf8').catch(() => ''),
  ]);
  return text ? freezerControl(text, v1Mounts(mounts)) : undefined;
}

/** Polls FREEZER until stopped; a freezer that cannot be read gives no time. */
export function watchFreeze(freezer: FreezerControl | undefined): FreezeWatch {
  let at: number | undefined;
  let lastClear: number | undefined;
  const look = () => {
    if (at !== undefined || !freezer) return;
    const t = performance.now();
    try {
      if (!freezeAsked(freezer.version, readFileSync(freezer.file, 'utf8'))) lastClear = t;
      else at = lastClear;
    } catch {
      freezer = undefined;
    }
  };
  look();
  const timer = setInterval(look, POLL_MS);
  return {
    stop: () => {
      clearInterval(timer);
      look();
      return at;
    },
  };
}
