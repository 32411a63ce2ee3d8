// The container's tasks on the source as /proc shows them: their pids (runc ps) and the
// files each holds open or maps. Read by preflight (which files must be equal on the
// destination) and by the final delta (which files may have changed without a write()).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { runc } from '../runc.js';
import type { Context } from './context.js';
import { interestingPath } from './openfiles.js';
import { openForWriting } from './syncplan.js';

/** The container's pids; its init's alone when runc ps cannot tell. */
export async function containerPids(ctx: Context): Promise<number[]> {
  const ps = await ctx.src.run(runc.ps(ctx.srcRunc, ctx.opts.container), { allowFail: true });
  let pids: number[] = [];
  try {
    pids = ps.code === 0 ? JSON.parse(ps.stdout) : [];
  } catch {
    /* none */
  }
  return pids.length === 0 && ctx.state ? [ctx.state.pid] : pids;
}

export interface TaskFiles {
  /** Paths of the open files worth comparing (interestingPath), with whether each is open for writing. */
  open: Array<{ path: string; writing: boolean }>;
  /** /proc/PID/maps. */
  maps: string;
}

/** What task PID holds; undefined once it has ended. writing: read each fd's flags too. */
export function taskFiles(pid: number, o: { writing?: boolean } = {}): TaskFiles | undefined {
  try {
    const open: TaskFiles['open'] = [];
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const path = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (!interestingPath(path)) continue;
        open.push({ path, writing: !!o.writing && openForWriting(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8')) });
      } catch {
        /* fd closed meanwhile */
      }
    }
    return { open, maps: readFileSync(`/proc/${pid}/maps`, 'utf8') };
  } catch {
    return undefined; // the task ended
  }
}
