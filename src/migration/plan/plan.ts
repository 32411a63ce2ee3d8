// The plan: what the migration will do, computed once from the preflight's facts and
// read-only after. The switchover reads its limits here, and --dry-run prints its steps:
// the same names, in the same order, as switchover() takes them (a unit test holds them
// together).
import { hostPort } from '../../firewall.js';
import path from 'node:path';
import { DEFAULTS } from '../../options.js';
import { runc } from '../../runc.js';
import { commandLine } from '../../shell.js';
import { addr } from '../network/address.js';
import type { ChosenTransport, Context } from '../context.js';
import { holdTimeoutS, lazyWindowS } from '../switchover/hold.js';
import type { FinalImages } from '../switchover/sides.js';
import { SWITCHOVER_STEPS, type SwitchoverStep } from '../switchover/switchover.js';

export interface PlanStep {
  /** A switchover step's name (switchover.ts), or 'page-server' / 'pre-copy' before it. */
  step: SwitchoverStep | 'presync' | 'page-server' | 'pre-copy';
  /** What it does, as the commands it runs where they can be shown. */
  what: string;
}

export interface Plan {
  readonly mode: 'iterative' | 'one-shot';
  readonly transport: ChosenTransport;
  /** How long the frozen source waits for the verdict before it resumes by itself. */
  readonly holdTimeoutS: number;
  /** Post-copy: the lazy window's limits on the destination (the source's watchdog adds DEFAULTS.lazySourceMarginS to each). */
  readonly lazy?: { stallS: number; windowS: number };
  /** The destination's guard gives up this long after it starts (before the hold would). */
  readonly guardDeadlineS: number;
  readonly steps: readonly PlanStep[];
}

/** The final dump's image directories: the work directories', or the next after the last pre-dump. */
export function finalImages(ctx: Context, lastPreDump?: string): FinalImages {
  if (lastPreDump === undefined) return { local: ctx.local!.images, remote: ctx.remote!.images };
  const n = String(Number(lastPreDump) + 1);
  return { local: path.join(ctx.local!.images, n), remote: path.join(ctx.remote!.images, n), parent: `../${lastPreDump}` };
}

export function makePlan(ctx: Context): Plan {
  const o = ctx.opts;
  const L = ctx.local!;
  const R = ctx.remote!;
  const mode = ctx.mode!;
  const transport = ctx.transport!;
  const hold = holdTimeoutS(ctx.memoryBytes, { floorS: DEFAULTS.holdFloorS, worstBytesPerS: DEFAULTS.holdWorstBytesPerS, override: o.holdTimeoutS });
  const guard = hold - DEFAULTS.guardMarginS;
  const rule = o.threshold ? `--threshold ${'bytes' in o.threshold ? `${o.threshold.bytes} bytes` : `${o.threshold.percent}%`}` : `--max-downtime ${o.maxDowntimeMs} ms`;
  const mv = o.moveIp && ctx.moveIp ? { m: o.moveIp, ...ctx.moveIp } : undefined;
  const lazy = o.postCopy;
  const limits = lazy ? { stallS: DEFAULTS.lazyStallS, windowS: lazyWindowS(ctx.memoryBytes, { floorS: DEFAULTS.lazyWindowFloorS, worstBytesPerS: DEFAULTS.lazyWorstBytesPerS }) } : undefined;
  const lazyEndpoint = ctx.sourceAddress ? hostPort(ctx.sourceAddress, o.pageServerPort) : `SOURCE:${o.pageServerPort}`;
  const what: Record<SwitchoverStep, string | undefined> = {
    dump: lazy
      ? `[src] ${commandLine(runc.checkpoint(ctx.srcRunc, o.container, { imagePath: L.images, workPath: L.criuWork, pageServer: lazyEndpoint, tcpEstablished: o.tcpEstablished, lazyStatusFd: 3 }))}  (memory stays in the frozen tasks; held at post-dump; it resumes by itself after ${hold} s, or if the tool dies)`
      : `[src] ${commandLine(runc.checkpoint(ctx.srcRunc, o.container, { imagePath: L.images, workPath: L.criuWork, pageServer: transport !== 'stream' ? 'HOST:PORT' : undefined, tcpEstablished: o.tcpEstablished }))}  (held at post-dump; it resumes by itself after ${hold} s, or if the tool dies)`,
    'move-ip': mv ? `[src] ${commandLine(addr.del(mv.m, mv.srcDev))}  (the hold puts it back on any rollback)` : undefined,
    copy:
      `[src->dst] tar ${L.images} -> ${R.images}; meanwhile [dst] the guard starts` +
      (mv ? `: ${commandLine(addr.claim(mv.m, mv.dstDev))}` : '') +
      ` (it removes everything it made if its channel closes or ${guard} s pass before the commit)`,
    sync: ctx.files?.trees.length
      ? `[src->dst] rsync (final delta, frozen): ${ctx.files.trees.map((t) => `${t.what} ${t.src} -> ${t.dst}`).join('; ')}; files mapped shared or open for writing compared by content`
      : undefined,
    window: limits
      ? `[src] verdict "lazy": CRIU starts its lazy page server on ${lazyEndpoint} (TLS); the tasks stay frozen until the destination has every page; a watchdog cuts it (the source resumes) if no destination connects within ${hold} s, no byte moves for ${limits.stallS + DEFAULTS.lazySourceMarginS} s, or the window lasts ${limits.windowS + DEFAULTS.lazySourceMarginS} s`
      : undefined,
    restore: lazy
      ? `[dst] guard: criu lazy-pages --page-server --address ${ctx.sourceAddress ?? 'SOURCE'} --port ${o.pageServerPort} --tls ...; ${commandLine(runc.restore(ctx.dstRunc, o.container, { bundle: ctx.bundle!, imagePath: R.images, workPath: R.criuWork, tcpEstablished: o.tcpEstablished, lazy: true }))}; running for ${DEFAULTS.lazyVerifyWindowMs} ms; then it serves${mv ? ` (${commandLine([...addr.announce(mv.arping, mv.m, mv.dstDev), 'OLD'])})` : ''}`
      : `[dst] guard: ${commandLine(runc.restore(ctx.dstRunc, o.container, { bundle: ctx.bundle!, imagePath: R.images, workPath: R.criuWork, tcpEstablished: o.tcpEstablished }))} with CRIU's leave-stopped (the copy stays stopped); every task stopped; continued on the commit`,
    pages: limits
      ? `[dst<-src] the lazy window: pages fetched as the container faults on them and pushed in the background; the guard decides alone: its daemon exited 0 with every page (it commits; the source is destroyed, or removed if CRIU resumed it) or anything else (it removes the copy; the source resumes); it kills the daemon after ${limits.stallS} s without a byte or ${limits.windowS} s in all`
      : undefined,
    prepare: lazy ? undefined : '[src] verdict "prepared": from here the hold waits for the final verdict, whatever happens (in doubt if the tool dies)',
    commit: lazy ? undefined : `[dst] guard: commit${mv ? `; ${commandLine([...addr.announce(mv.arping, mv.m, mv.dstDev), 'OLD'])}` : ''}  (the point of no return)`,
    finish: lazy ? undefined : `[src] final verdict "commit": CRIU finishes, runc destroys the source; this dump's CRIU lock rules removed`,
    rollback: undefined,
  };
  const steps: PlanStep[] = [];
  if (ctx.files?.trees.length) steps.push({ step: 'presync', what: `[src->dst] rsync while the container runs${mode === 'iterative' ? ' (again after pre-copy)' : ''}: ${ctx.files.trees.map((t) => t.what).join(', ')}${ctx.files.report.createdConfig ? `; ${ctx.bundle}/config.json written from the source's` : ''}` });
  if (mode === 'iterative') steps.push({ step: 'pre-copy', what: `pre-dumps to a page server on the destination until ${rule} (at most ${o.maxIterations})` });
  if (transport !== 'stream' && !lazy) steps.push({ step: 'page-server', what: `[dst] criu page-server --images-dir ${R.images} ... (${describeTransport(transport)})` });
  for (const s of SWITCHOVER_STEPS) {
    const w = what[s];
    if (w !== undefined) steps.push({ step: s, what: w });
  }
  return { mode, transport, holdTimeoutS: hold, guardDeadlineS: guard, lazy: limits, steps };
}

/** How pages reach the page server, in a few words. */
export function describeTransport(t: ChosenTransport): string {
  return { tls: "CRIU's TLS on the destination's address, certificates made for this migration", tunnel: '127.0.0.1, through the SSH connection', direct: 'plain TCP on the destination\'s address', stream: 'tar over the SSH connection' }[t];
}

/** The plan as --dry-run prints it. */
export function describePlan(ctx: Context, p: Plan): string[] {
  return [
    `mode: ${p.mode}; transport: ${p.transport} (${ctx.transportWhy ?? (ctx.memoryBytes !== undefined ? `${ctx.memoryBytes} bytes in use` : 'memory use unknown')})`,
    ...p.steps.map((s) => `${s.step.padEnd(11)} ${s.what}`),
    (ctx.opts.postCopy
      ? 'any failure before the last page arrived: the destination is cleaned and the source resumes (after the restore, what the container did on the destination is lost and its TCP peers are reset)'
      : 'any failure before "commit": the destination is cleaned and the source resumes') + (ctx.files?.trees.length ? " (the destination's synced files stay as synced)" : ''),
  ];
}
