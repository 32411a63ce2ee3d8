// The plan: what the migration will do, made once from the options and the preflight's
// facts and read-only after: the method (how the memory moves), the transport, the
// limits, and the steps. migrate.ts runs the method's runner from it, and --dry-run prints
// its steps: the same names, in the same order, as switchover() takes them (a unit test
// holds them together).
import path from 'node:path';
import { hostPort } from '../../firewall.js';
import { DEFAULTS } from '../../options.js';
import { runc } from '../../runc.js';
import { commandLine } from '../../shell.js';
import { addr } from '../network/address.js';
import { required, type ChosenTransport, type Facts } from '../preflight/facts.js';
import { workPaths, type WorkDirs } from '../prepare/paths.js';
import type { Session } from '../session.js';
import { holdTimeoutS, lazyWindowS } from '../switchover/hold.js';
import type { FinalImages } from '../switchover/shared.js';
import { SWITCHOVER_STEPS, type SwitchoverStep } from '../switchover/switchover.js';
import { isLazy, METHOD_STAGES, modeOf, type LazyLimits, type Method, type RunStage, type StopRule } from './method.js';

export interface PlanStep {
  /** A switchover step's name (switchover.ts), or 'page-server' / 'pre-copy' before it. */
  step: SwitchoverStep | 'presync' | 'page-server' | 'pre-copy';
  /** What it does, as the commands it runs where they can be shown. */
  what: string;
}

export interface Plan {
  readonly method: Method;
  /** What the runner does, in order (the method's stages with something to do). */
  readonly stages: readonly RunStage[];
  readonly transport: ChosenTransport;
  /** Why the transport (the flag, or auto's reasoning). */
  readonly transportWhy: string;
  /** How long the frozen source waits for the verdict before it resumes by itself. */
  readonly holdTimeoutS: number;
  /** The destination's guard gives up this long after it starts (before the hold would). */
  readonly guardDeadlineS: number;
  readonly steps: readonly PlanStep[];
}

/** The final dump's image directories: the work directories', or the next after the last pre-dump. */
export function finalImages(work: WorkDirs, lastPreDump?: string): FinalImages {
  if (lastPreDump === undefined) return { local: work.local.images, remote: work.remote.images };
  const n = String(Number(lastPreDump) + 1);
  return {
    local: path.join(work.local.images, n),
    remote: path.join(work.remote.images, n),
    parent: `../${lastPreDump}`,
  };
}

/** The method, from the options and the facts: decided here, once. */
export function chooseMethod(s: Session, facts: Facts): Method {
  const o = s.opts;
  const rule: StopRule = { threshold: o.threshold, maxDowntimeMs: o.maxDowntimeMs, maxIterations: o.maxIterations };
  if (o.postCopy) {
    const lazy: LazyLimits = {
      stallS: DEFAULTS.lazyStallS,
      windowS: lazyWindowS(facts.source.memoryBytes, {
        floorS: DEFAULTS.lazyWindowFloorS,
        worstBytesPerS: DEFAULTS.lazyWorstBytesPerS,
      }),
    };
    const sourceAddress = required(facts.destination.sourceAddress, "the source's address as the destination sees it");
    return o.hybrid ? { kind: 'hybrid', rule, sourceAddress, lazy } : { kind: 'post-copy', sourceAddress, lazy };
  }
  return facts.source.mode === 'iterative' ? { kind: 'pre-copy', rule } : { kind: 'one-shot' };
}

export function makePlan(s: Session, facts: Facts): Plan {
  const o = s.opts;
  const src = facts.source;
  const d = facts.destination;
  const method = chooseMethod(s, facts);
  // The work directories' names are made by prepare: shown here by their pattern.
  const L = workPaths(path.join(o.workDir, 'runc-migrate.XXXXXX'));
  const R = workPaths(path.join(o.remoteWorkDir, 'runc-migrate.XXXXXXXX'));
  const mode = modeOf(method);
  const transport = d.transport;
  const hold = holdTimeoutS(src.memoryBytes, {
    floorS: DEFAULTS.holdFloorS,
    worstBytesPerS: DEFAULTS.holdWorstBytesPerS,
    override: o.holdTimeoutS,
  });
  const guard = hold - DEFAULTS.guardMarginS;
  const rule = o.threshold
    ? `--threshold ${'bytes' in o.threshold ? `${o.threshold.bytes} bytes` : `${o.threshold.percent}%`}`
    : `--max-downtime ${o.maxDowntimeMs} ms`;
  const mv = d.moveIp;
  const files = d.files?.plan.trees.length ? d.files : undefined;
  const resumes = `it resumes by itself after ${hold} s, or if the tool dies`;
  const unmute = mv ? commandLine([...addr.unmute(mv, mv.dstDev), 'OLD']) : undefined;
  const garp = mv ? commandLine(addr.garp(mv.arping, mv, mv.dstDev)) : undefined;
  const restoreArgs = {
    bundle: src.bundle,
    imagePath: R.images,
    workPath: R.criuWork,
    tcpEstablished: o.tcpEstablished,
    spendImages: d.punchHoles,
  };
  const common = {
    copy:
      `[src->dst] tar ${L.images} -> ${R.images}; beside it ` +
      (files
        ? `[src->dst] rsync (the files' final delta, frozen): ${files.plan.trees.map((t) => `${t.what} ${t.src} -> ${t.dst}`).join('; ')}` +
          ' (files mapped shared or open for writing compared by content), '
        : '') +
      (mv
        ? `[src] ${commandLine(addr.release(mv, mv.srcDev, L.holdDir))} (the hold puts it back on any rollback), `
        : '') +
      '[dst] the guard starts' +
      (mv ? `: ${commandLine(addr.claim(mv, mv.dstDev))}` : '') +
      ` (it removes everything it made if its channel closes or ${guard} s pass before the commit)`,
    rollback: undefined,
  };
  let what: Record<SwitchoverStep, string | undefined>;
  if (isLazy(method)) {
    const endpoint = hostPort(method.sourceAddress, o.pageServerPort);
    const margin = DEFAULTS.lazySourceMarginS;
    const { stallS, windowS } = method.lazy;
    const checkpoint = runc.checkpoint(s.srcRunc, o.container, {
      imagePath: L.images,
      workPath: L.criuWork,
      pageServer: endpoint,
      tcpEstablished: o.tcpEstablished,
      lazyStatusFd: 3,
    });
    const daemon = `criu lazy-pages --page-server --address ${method.sourceAddress} --port ${o.pageServerPort} --tls ...`;
    const restore = commandLine(runc.restore(s.dstRunc, o.container, { ...restoreArgs, lazy: true }));
    what = {
      ...common,
      dump: `[src] ${commandLine(checkpoint)}  (memory stays in the frozen tasks; held at post-dump; ${resumes})`,
      window:
        `[src] verdict "lazy": CRIU starts its lazy page server on ${endpoint} (TLS); the tasks stay frozen until the ` +
        `destination has every page; a watchdog cuts it (the source resumes) if no destination connects within ${hold} s, ` +
        `no byte moves for ${stallS + margin} s, or the window lasts ${windowS + margin} s`,
      restore: `[dst] guard: ${daemon}; ${restore}; running for ${DEFAULTS.lazyVerifyWindowMs} ms; then it serves${unmute ? ` (${unmute}; ${garp})` : ''}`,
      pages:
        '[dst<-src] the lazy window: pages fetched as the container faults on them and pushed in the background; ' +
        'the guard decides alone: its daemon exited 0 with every page (it commits; the source is destroyed, or removed ' +
        'if CRIU resumed it) or anything else (it removes the copy; the source resumes); ' +
        `it kills the daemon after ${stallS} s without a byte or ${windowS} s in all`,
      prepare: undefined,
      commit: undefined,
      finish: undefined,
    };
  } else {
    const checkpoint = runc.checkpoint(s.srcRunc, o.container, {
      imagePath: L.images,
      workPath: L.criuWork,
      pageServer: transport !== 'stream' ? 'HOST:PORT' : undefined,
      tcpEstablished: o.tcpEstablished,
    });
    const restore = commandLine(runc.restore(s.dstRunc, o.container, restoreArgs));
    what = {
      ...common,
      dump: `[src] ${commandLine(checkpoint)}  (held at post-dump; ${resumes})`,
      window: undefined,
      restore: `[dst] guard: ${restore} with CRIU's leave-stopped (the copy stays stopped); every task stopped; continued on the commit`,
      pages: undefined,
      prepare:
        '[src] verdict "prepared": from here the hold waits for the final verdict, whatever happens (in doubt if the tool dies)',
      commit: `[dst] guard: commit${unmute ? `; ${unmute}` : ''}; continue the tasks${garp ? `; ${garp}` : ''}  (the point of no return)`,
      finish: `[src] final verdict "commit": CRIU finishes, runc destroys the source; this dump's CRIU lock rules removed`,
    };
  }
  const stages = METHOD_STAGES[method.kind].filter((st) =>
    st === 'presync' ? !!files : st === 'page-server' ? transport !== 'stream' : true,
  );
  const steps: PlanStep[] = [];
  for (const stage of stages) {
    if (stage === 'presync' && files) {
      steps.push({
        step: 'presync',
        what:
          `[src->dst] rsync while the container runs${mode === 'iterative' ? ' (again after pre-copy)' : ''}: ` +
          files.plan.trees.map((t) => t.what).join(', ') +
          (files.srcConfig !== undefined ? `; ${src.bundle}/config.json written from the source's` : ''),
      });
    } else if (stage === 'pre-copy') {
      steps.push({
        step: 'pre-copy',
        what: `pre-dumps to a page server on the destination until ${rule} (at most ${o.maxIterations})`,
      });
    } else if (stage === 'page-server') {
      steps.push({
        step: 'page-server',
        what: `[dst] criu page-server --images-dir ${R.images} ... (${describeTransport(transport)})`,
      });
    } else if (stage === 'switchover') {
      for (const sw of SWITCHOVER_STEPS) {
        const w = what[sw];
        if (w !== undefined) steps.push({ step: sw, what: w });
      }
    }
  }
  return { method, stages, transport, transportWhy: d.transportWhy, holdTimeoutS: hold, guardDeadlineS: guard, steps };
}

/** How pages reach the page server, in a few words. */
export function describeTransport(t: ChosenTransport): string {
  return {
    tls: "CRIU's TLS on the destination's address, certificates made for this migration",
    tunnel: '127.0.0.1, through the SSH connection',
    direct: "plain TCP on the destination's address",
    stream: 'tar over the SSH connection',
  }[t];
}

/** The plan as --dry-run prints it. */
export function describePlan(p: Plan, facts: Facts): string[] {
  const files = facts.destination.files?.plan.trees.length;
  return [
    `mode: ${modeOf(p.method)} (${p.method.kind}); transport: ${p.transport} (${p.transportWhy})`,
    ...p.steps.map((s) => `${s.step.padEnd(11)} ${s.what}`),
    (isLazy(p.method)
      ? 'any failure before the last page arrived: the destination is cleaned and the source resumes (after the restore, what the container did on the destination is lost and its TCP peers are reset)'
      : 'any failure before "commit": the destination is cleaned and the source resumes') +
      (files ? " (the destination's synced files stay as synced)" : ''),
  ];
}
