// The runner: what runs between prepare and the report, the plan's stages in order
// (plan/method.ts METHOD_STAGES for each method): the files' pre-sync while the container
// runs, the pre-dumps, the final dump's page server, and the switchover (stop-and-copy,
// or post-copy's lazy window). It returns after a commit with what the report needs;
// otherwise it throws an AfterFreezeError naming where the container runs, or that the
// migration is in doubt.
import fs from 'node:fs/promises';
import { EXIT, MigrateError } from '../errors.js';
import { hostPort } from '../firewall.js';
import { formatBytes } from '../progress.js';
import type { SyncPass } from './files/rootfs.js';
import { watchTransfer } from './pages/meter.js';
import { precopy } from './pages/precopy.js';
import { startPageServer, type PageRoute, type PageServer } from './pages/transfer.js';
import { isLazy, modeOf } from './plan/method.js';
import { describeTransport, finalImages, type Plan } from './plan/plan.js';
import { required, type Facts } from './preflight/facts.js';
import type { Resources } from './prepare/prepare.js';
import type { Undo } from './prepare/undo.js';
import { INTENT_VERSION, removeIntent, writeIntent, type IntentRecord } from './recover/intent.js';
import type { Migrated, Results } from './report/build.js';
import { AfterFreezeError, afterFreeze, checkInterrupt } from './report/outcome.js';
import type { Session } from './session.js';
import { Destination } from './switchover/destination.js';
import { LazyDestination, LazySource } from './switchover/lazy.js';
import { postCopySwitchover } from './switchover/postcopy.js';
import { CriuFailure, guardDirOf, type FinalImages } from './switchover/shared.js';
import { Source } from './switchover/source.js';
import { switchover, type SwitchoverHooks, type SwitchoverResult } from './switchover/switchover.js';

/** What a runner works with: every stage's output so far. */
export interface Run {
  readonly s: Session;
  readonly facts: Facts;
  readonly plan: Plan;
  readonly res: Resources;
  readonly undo: Undo;
  /** What the report will say: each step sets what it knows, as it happens. */
  readonly results: Results;
  /** Set once the container ended on one host with the other confirmed clean: the record may go. */
  readonly record: { done: boolean };
}

/**
 * Runs the plan's stages in order (plan/method.ts METHOD_STAGES: the same list --dry-run
 * prints), up to the switchover, whose result it returns.
 */
export async function runPlan(r: Run): Promise<Migrated> {
  let last: string | undefined;
  let pageServer: PageServer | undefined;
  for (const stage of r.plan.stages) {
    if (stage === 'presync') await presync(r);
    else if (stage === 'pre-copy') last = await preCopy(r);
    else if (stage === 'page-server') pageServer = await finalPageServer(r, await finalDirs(r, last));
    else if (stage === 'switchover')
      return stopAndCopy(r, pageServer ? finalImages(r.res.work, last) : await finalDirs(r, last), pageServer);
  }
  throw new Error(`internal: the plan's stages (${r.plan.stages.join(', ')}) end without a switchover`);
}

/** The final dump's image directories, made on both hosts. */
async function finalDirs(r: Run, lastPreDump: string | undefined): Promise<FinalImages> {
  const images = finalImages(r.res.work, lastPreDump);
  await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
  if (images.remote !== r.res.work.remote.images) await r.s.dst.run(['mkdir', '-p', '-m', '0700', images.remote]);
  return images;
}

/** The final dump's page server on the destination (tls, direct, tunnel), stopped by the undo stack. */
async function finalPageServer(r: Run, images: FinalImages): Promise<PageServer> {
  const { s, plan } = r;
  const ps = await s.progress.phase(
    'page-server',
    `page server on the destination (${describeTransport(plan.transport)})`,
    () => startPageServer(s, pageRoute(r), images.remote, images.parent),
  );
  r.undo.add('stop the page server', () => ps.stop());
  if (s.faults.at('page-server')) await ps.kill();
  await s.faults.pause('page-server', ps.endpoint);
  return ps;
}

/** The record of this migration (intent.ts), but for its phase: what recover needs. */
export function intentRecord(r: Pick<Run, 's' | 'facts' | 'res'>): IntentRecord {
  const { s } = r;
  const mv = r.facts.destination.moveIp;
  return {
    version: INTENT_VERSION,
    container: s.opts.container,
    srcRunc: s.srcRunc,
    dstRunc: s.dstRunc,
    destination: s.opts.destination,
    pid: process.pid,
    startedAt: new Date().toISOString(),
    localBase: r.res.work.local.base,
    holdDir: r.res.work.local.holdDir,
    remoteBase: r.res.work.remote.base,
    guardDir: guardDirOf(r.res.work.remote.base),
    moveIp: mv
      ? { address: mv.address, prefix: mv.prefix, dev: mv.dev, srcDev: mv.srcDev, dstDev: mv.dstDev }
      : undefined,
  };
}

function syncDetail(p: SyncPass): string {
  const f = p.figures;
  return `(${f.filesTransferred} files, ${formatBytes(f.transferredFileBytes)} changed of ${formatBytes(f.totalFileBytes)}${f.filesDeleted ? `, ${f.filesDeleted} deleted` : ''})`;
}

/** The files' pre-sync while the container runs: a failure refuses (nothing frozen). */
async function presync(r: Run): Promise<void> {
  const files = r.res.files?.trees.length ? r.res.files : undefined;
  if (!files) return;
  await r.s.progress
    .phase('presync', 'sync the files while the container runs (pre-sync)', () => files.presync(), syncDetail)
    .catch((err: Error) => {
      checkInterrupt();
      const hint = (err as Error & { hint?: string }).hint;
      throw new MigrateError(
        `the pre-sync of the container's files failed: ${err.message}`,
        EXIT.PREFLIGHT,
        `Nothing was frozen. ${hint ?? 'Check rsync on both hosts and room on the destination, or give --no-sync-rootfs if the destination keeps its own identical copy.'}`,
      );
    });
  await r.s.faults.pause('presynced');
  checkInterrupt();
}

/** How a page server on the destination is reached (tunnel, direct, tls), from the plan and what prepare made. */
function pageRoute(r: Run): PageRoute {
  const remote = r.res.work.remote;
  const t = r.plan.transport;
  if (t === 'tunnel') return { kind: 'tunnel', remote };
  const address = required(r.facts.destination.address, "the destination's address");
  if (t === 'direct') return { kind: 'direct', address, remote };
  if (t === 'tls')
    return { kind: 'tls', address, remote, tls: required(r.res.certs, 'the TLS certificates').destination };
  throw new Error('internal: no page server with the stream transport');
}

/** Pre-dumps until the stop rule says switch over; returns the last one's directory name. */
async function preCopy(r: Run): Promise<string> {
  const { s, plan } = r;
  const m = plan.method;
  if (m.kind !== 'pre-copy' && m.kind !== 'hybrid') throw new Error(`internal: no pre-copy in ${m.kind}`);
  // The pre-dumps' images (the container's memory) are on both hosts from here: if the
  // tool dies, the record lets recover (or the next run) remove them.
  await writeIntent(s.intentFile, { ...intentRecord(r), phase: 'precopy', updatedAt: '' });
  const run = {
    work: r.res.work,
    route: pageRoute(r),
    rule: m.rule,
    criuConfig: r.res.certs?.criuConfig ?? '',
    memoryBytes: r.facts.source.memoryBytes,
    throttle: r.res.throttle,
    fetchPagemaps: m.kind === 'hybrid',
  };
  const pc = await precopy(s, run, checkInterrupt)
    .catch(async (err: Error) => {
      if (err instanceof MigrateError) throw err;
      // Pre-dumps resume the container themselves: it should run on the source.
      throw await afterFreeze(s, `pre-copy failed: ${err.message}`);
    })
    .finally(() => removeIntent(s.intentFile));
  r.results.precopy = pc;
  // Pre-copy took a while: what changed meanwhile moves now, not in the freeze.
  const files = r.res.files?.trees.length ? r.res.files : undefined;
  if (files) {
    await s.progress
      .phase('presync', 'sync the files again after pre-copy', () => files.presync(), syncDetail)
      .catch(async (err: Error) => {
        checkInterrupt();
        throw await afterFreeze(s, `the second pre-sync of the container's files failed: ${err.message}`);
      });
  }
  return pc.last;
}

/**
 * The switchover (switchover.ts, or postcopy.ts for a lazy method) between this machine
 * and the destination, in the report's terms.
 */
async function stopAndCopy(r: Run, images: FinalImages, pageServer: PageServer | undefined): Promise<Migrated> {
  const { s, plan, facts, res, undo } = r;
  const { opts, progress } = s;
  const L = res.work.local;
  const m = plan.method;
  // The last moment to stop without freezing anything.
  checkInterrupt();
  const files = res.files?.trees.length ? res.files : undefined;
  const dstSetup = {
    s,
    work: res.work,
    images,
    deadlineS: plan.guardDeadlineS,
    bundle: facts.source.bundle,
    moveIp: facts.destination.moveIp,
    pageServer,
    files,
    spendImages: facts.destination.punchHoles,
  };
  const srcSetup = {
    s,
    work: L,
    images,
    intent: { file: s.intentFile, record: intentRecord(r) },
    holdTimeoutS: plan.holdTimeoutS,
    undo,
    pid: facts.source.state.pid,
    moveIp: facts.destination.moveIp,
    criuConfig: res.certs?.criuConfig ?? '',
  };
  const hooks: SwitchoverHooks = {
    step: (name, title, run) =>
      progress.phase(name, title, async () => {
        if (name !== 'dump') return run();
        // On a terminal: the final dump's bytes as they arrive.
        const stream = plan.transport === 'stream';
        const stop = await watchTransfer(
          s,
          stream ? 'src' : 'dst',
          stream ? images.local : images.remote,
          modeOf(m) === 'one-shot' ? facts.source.memoryBytes : undefined,
        );
        try {
          return await run();
        } finally {
          await stop();
        }
      }),
    warn: (w) => progress.warn(w),
    killPoint: (point) => s.faults.point(point, () => s.ssh.sever(), L),
    fail: (point) => s.faults.fail(point),
    moveIp: facts.destination.moveIp !== undefined,
    syncFiles: files !== undefined,
  };
  // Auto-converge: the throttle goes at the switchover, once CRIU starts to stop the tasks.
  const unthrottled = res.throttle?.liftWhenHeld();
  let result: SwitchoverResult;
  let source: Source;
  try {
    if (isLazy(m)) {
      const tls = required(res.certs, 'the TLS certificates');
      const dst = new LazyDestination({
        ...dstSetup,
        lazy: { limits: m.lazy, sourceAddress: m.sourceAddress, tls: tls.destination },
      });
      const src = new LazySource({
        ...srcSetup,
        lazy: m.lazy,
        pagesTo: hostPort(m.sourceAddress, opts.pageServerPort),
        pageServerLog: () => dst.pageServerLog(),
      });
      source = src;
      result = await armedAround(src, dst, () =>
        postCopySwitchover(src, dst, { ...hooks, ...m.lazy, pause: (p) => s.faults.pause(p) }),
      );
    } else {
      const dst = new Destination(dstSetup);
      const src = new Source({ ...srcSetup, pagesTo: pageServer?.endpoint, pageServerLog: () => dst.pageServerLog() });
      source = src;
      result = await armedAround(src, dst, () => switchover(src, dst, hooks));
    }
  } finally {
    unthrottled?.();
  }
  return switchoverOutcome(r, images, source, result);
}

/**
 * RUN (a switchover) with the destination's copy and guard armed before it (beside the
 * source's snapshot of CRIU's lock rules), and whatever it left unused ended after it,
 * on every way out. Destination.arm never rejects.
 */
async function armedAround(
  src: Source,
  dst: Destination,
  run: () => Promise<SwitchoverResult>,
): Promise<SwitchoverResult> {
  const armed = dst.arm();
  try {
    await src.snapshotLockRules();
    await armed;
    return await run();
  } finally {
    await armed;
    await dst.disarm();
  }
}

/** The switchover's result in the report's terms: the figures after a commit; otherwise the error that says where the container runs. */
async function switchoverOutcome(
  r: Run,
  images: FinalImages,
  src: Source,
  result: SwitchoverResult,
): Promise<Migrated> {
  const { s, res, undo, results } = r;
  const { opts, progress } = s;
  const lazy = isLazy(r.plan.method);
  if ('lazy' in result && result.lazy)
    results.lazy = { ...result.lazy, rolledBack: result.runningOn === 'source' ? true : undefined };
  if (result.runningOn === 'destination') {
    // After the commit: figures and tidying only, never a failure.
    let bytesMoved = result.bytesMoved;
    try {
      if (result.sourceLeft) undo.keepWorkDirs();
      else r.record.done = true;
      // The images that arrived (the page server's and the copied files).
      const du = await s.dst.run(['du', '-s', '-B1', '--apparent-size', res.work.remote.images], { allowFail: true });
      const duBytes = Number(du.stdout.split(/\s/)[0]);
      if (Number.isFinite(duBytes) && duBytes > 0) bytesMoved = duBytes;
    } catch (err) {
      progress.warn(`after the commit: ${(err as Error).message}`);
    }
    return {
      downtimeMs: result.downtimeMs,
      downtimeParts: result.downtimeParts,
      bytesMoved,
      finalDump: src.finalDump,
      sourceLeft: result.sourceLeft,
      lazy: result.lazy,
      announceFailed: result.announceFailed,
    };
  }
  if (result.runningOn === 'nowhere') {
    undo.keepWorkDirs();
    await removeIntent(s.intentFile);
    const hint = lazy
      ? `The container's memory was only in the source's tasks and is lost; its files are on both hosts (work directories kept: ${res.work.local.base} here).`
      : `Restore it by hand from ${images.local} on the source (runc restore --image-path ...), or copy the images to the destination.`;
    throw new AfterFreezeError(result.error.message, EXIT.UNSAFE, hint, [], 'none');
  }
  if (result.runningOn === 'in-doubt') {
    undo.keepWorkDirs();
    throw new AfterFreezeError(
      `${result.error.message}; the migration is in doubt`,
      EXIT.UNSAFE,
      lazy
        ? `A source CRIU resumed stays cut off by CRIU's network lock until this is settled. Run: migrate recover ${opts.container} ${opts.destination} (with the same SSH options) once the destination can be reached. It asks the destination whether it kept its copy, then removes the source or unlocks it.`
        : `The source stays frozen until this is settled. Run: migrate recover ${opts.container} ${opts.destination} (with the same SSH options). It asks the destination whether it committed, then removes the source or resumes it.`,
      [],
      'unknown',
      true,
    );
  }
  // A destination not confirmed clean keeps the record and the work directories: recover
  // confirms that its guard removed the stopped copy, then cleans both hosts.
  // A clean one: the record goes once the clean-up has run (settleRecord), or stays for
  // what it could not remove there.
  if (result.destinationClean) r.record.done = true;
  else undo.keepWorkDirs();
  if (src.imagesOnly) undo.keepWorkDirs();
  const files = res.files;
  if (files?.report.final)
    progress.warn(
      `the destination's copy of the container's files (${files.trees.map((t) => t.dst).join(', ')}) was synced to the frozen source and stays so; the source's files were not changed`,
    );
  const criuInfo = result.error instanceof CriuFailure ? result.error.criu : undefined;
  throw await afterFreeze(s, `${result.error.message}; rolled back`, {
    hint: criuInfo?.cause,
    criuErrors: criuInfo?.errors,
    dstClean: result.destinationClean,
  });
}
