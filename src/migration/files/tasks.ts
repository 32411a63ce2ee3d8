// The container's tasks on the source as /proc shows them: their pids and the
// files each holds open or maps. Read by preflight (which files must be equal on the
// destination) and by the final delta (which files may have changed without a write()).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { runc } from '../../runc.js';
import type { LocalSession } from '../session.js';
import { interestingPath } from './openfiles.js';
import { openForWriting } from './syncplan.js';

/**
 * The container's pids: the processes in its init's pid namespace (a scan of /proc, a few
 * milliseconds: it runs in the freeze), or, when the container shares the tool's pid
 * namespace, what runc ps says (its init's alone when runc ps cannot tell). A pid
 * namespace nested in the container's is not looked into.
 */
export async function containerPids(ctx: LocalSession, init: number): Promise<number[]> {
  const inNamespace = init ? pidsInNamespaceOf(init) : undefined;
  if (inNamespace?.length) return inNamespace;
  const ps = await ctx.src.run(runc.ps(ctx.srcRunc, ctx.opts.container), { allowFail: true });
  let pids: number[] = [];
  try {
    pids = ps.code === 0 ? JSON.parse(ps.stdout) : [];
  } catch {
    /* none */
  }
  return pids.length === 0 && init ? [init] : pids;
}

/** The pids (as this host sees them) in the pid namespace of INIT; undefined when that is the tool's own. */
function pidsInNamespaceOf(init: number): number[] | undefined {
  let ns: string;
  try {
    ns = readlinkSync(`/proc/${init}/ns/pid`);
    if (ns === readlinkSync('/proc/self/ns/pid')) return undefined;
  } catch {
    return undefined;
  }
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readlinkSync(`/proc/${e}/ns/pid`) === ns) out.push(Number(e));
    } catch {
      /* gone, or a kernel thread */
    }
  }
  return out;
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
