// One migration from start to end: settle an unfinished earlier one, preflight, plan,
// pre-copy, switchover, cleanup, report. Contract: when this returns, the container runs
// on exactly one host and the report says which (or the report says the migration is in
// doubt and what settles it); every page server, forwarder and work directory is removed,
// but for what an in-doubt migration's recovery needs.
import fs from 'node:fs/promises';
import { EXIT, MigrateError } from '../errors.js';
import { LocalHost, RemoteHost } from '../host.js';
import { DEFAULTS, type Options } from '../options.js';
import type { Progress } from '../progress.js';
import type { Report } from '../report.js';
import { SshConnection } from '../ssh/connection.js';
import { resolveEndpoint } from '../ssh/endpoint.js';
import { runcOf, type Context } from './context.js';
import { faultAt, pausePoint, switchoverPoint } from './faults.js';
import { INTENT_VERSION, intentPath, lockContainer, readIntent, removeIntent, RunningAlready, writeIntent, type Intent } from './recover/intent.js';
import { AfterFreezeError, afterFreeze, checkInterrupt, newReport, reportFailure } from './report/outcome.js';
import { describePlan, describeTransport, finalImages, makePlan, type Plan } from './plan/plan.js';
import { precopy } from './pages/precopy.js';
import { DESTINATION_CHECKS, SOURCE_CHECKS, type Check } from './preflight/checks.js';
import { recover } from './recover/recover.js';
import { CriuFailure, Destination, guardDirOf, reconnect, Source, type FinalImages } from './switchover/sides.js';
import { switchover, type LazyWindow, type SwitchoverHooks } from './switchover/switchover.js';
import { postCopySwitchover } from './switchover/postcopy.js';
import type { SyncPass } from './files/rootfs.js';
import { formatBytes } from '../progress.js';
import { startPageServer } from './pages/transfer.js';
import { watchTransfer } from './pages/meter.js';

export { interruption } from './report/outcome.js';

export async function migrate(opts: Options, progress: Progress): Promise<Report> {
  const t0 = performance.now();
  const report = newReport(opts, progress);
  const ctx = newContext(opts, progress);
  try {
    const endpoint = resolveEndpoint(opts);
    for (const w of [endpoint, ...(endpoint.jumps ?? [])].flatMap((e) => e.warnings ?? [])) progress.warn(w);
    const connect = () => progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () => SshConnection.connect(endpoint));
    // Before anything else: a second run of the same container is refused, the first untouched.
    const unlock = await lockContainer(DEFAULTS.intentDir, opts.container).catch((err: Error) => {
      if (err instanceof RunningAlready) throw new MigrateError(`a migration of ${opts.container} is already running on this machine (pid ${err.pid})`, EXIT.PREFLIGHT, 'Wait for it to end. Nothing was changed.');
      throw err;
    });
    ctx.cleanups.unshift({ what: 'release the lock on the container', run: unlock });
    if ((await settleEarlier(ctx, connect)) === 'destination') {
      Object.assign(report, { outcome: 'recovered', exitCode: EXIT.OK, runningOn: 'destination', recoveredWhy: 'an earlier migration had committed; it was finished' });
      return report;
    }
    await runChecks(ctx, SOURCE_CHECKS);
    Object.assign(report, { memoryBytes: ctx.memoryBytes });
    ctx.ssh ??= await connect();
    ctx.dst = new RemoteHost(ctx.ssh, opts.sudo, ctx.log);
    await runChecks(ctx, DESTINATION_CHECKS);
    Object.assign(report, { transport: ctx.transport, transportWhy: ctx.transportWhy });
    checkInterrupt();
    const plan = makePlan(ctx);
    if (opts.dryRun) {
      for (const s of describePlan(ctx, plan)) progress.info(`  ${s}`);
      Object.assign(report, { outcome: 'dry-run', exitCode: EXIT.OK, runningOn: 'source' });
      return report;
    }
    report.mode = opts.hybrid ? 'hybrid' : opts.postCopy ? 'post-copy' : plan.mode;
    const files = ctx.files?.trees.length ? ctx.files : undefined;
    if (ctx.files) report.files = ctx.files.report;
    if (files) {
      await progress.phase('presync', 'sync the files while the container runs (pre-sync)', () => files.presync(), syncDetail).catch((err: Error) => {
        checkInterrupt();
        const hint = (err as Error & { hint?: string }).hint;
        throw new MigrateError(`the pre-sync of the container's files failed: ${err.message}`, EXIT.PREFLIGHT, `Nothing was frozen. ${hint ?? 'Check rsync on both hosts and room on the destination, or give --no-sync-rootfs if the destination keeps its own identical copy.'}`);
      });
      await pausePoint('presynced');
      checkInterrupt();
    }
    let images = finalImages(ctx);
    if (plan.mode === 'iterative') {
      // The pre-dumps' images (the container's memory) are on both hosts from here: if the
      // tool dies, the record lets recover (or the next run) remove them.
      await writeIntent(ctx.intentFile, { ...intentRecord(ctx), phase: 'precopy', updatedAt: '' });
      const pc = await precopy(ctx, checkInterrupt)
        .catch(async (err: Error) => {
          if (err instanceof MigrateError) throw err;
          // Pre-dumps resume the container themselves: it should run on the source.
          throw await afterFreeze(ctx, `pre-copy failed: ${err.message}`);
        })
        .finally(() => removeIntent(ctx.intentFile));
      Object.assign(report, { iterations: pc.iterations.map((it) => ({ ...it })), stopReason: pc.decision.reason, stopWhy: pc.decision.why, predictedDowntimeMs: pc.decision.predictedDowntimeMs });
      images = finalImages(ctx, pc.last);
      // Pre-copy took a while: what changed meanwhile moves now, not in the freeze.
      if (files) {
        await progress.phase('presync', 'sync the files again after pre-copy', () => files.presync(), syncDetail).catch(async (err: Error) => {
          checkInterrupt();
          throw await afterFreeze(ctx, `the second pre-sync of the container's files failed: ${err.message}`);
        });
      }
    }
    // Auto-converge: the throttle goes at the switchover, once CRIU starts to stop the tasks.
    const unthrottled = ctx.throttle?.liftWhenHeld();
    const r = await runSwitchover(ctx, plan, images, report).finally(() => unthrottled?.());
    Object.assign(report, { outcome: 'migrated', exitCode: EXIT.OK, runningOn: 'destination', downtimeMs: r.downtimeMs, bytesMoved: r.bytesMoved, finalDump: r.finalDump, postCopy: r.lazy });
    if (r.sourceLeft) {
      // Migrated, but the source may still hold its frozen copy: exit 5 says so.
      report.exitCode = EXIT.UNSAFE;
      report.error = { message: r.sourceLeft, hint: `Run: migrate recover ${opts.container} ${opts.destination}` };
    } else if (r.announceFailed) {
      // It runs on the destination, but its clients may not find it there.
      report.exitCode = EXIT.UNSAFE;
      report.error = {
        message: `migrated, but the service address was not announced on the destination (${r.announceFailed})`,
        hint: `On the destination: remove the DROP rule for ${opts.moveIp?.address}, set net.ipv4.conf.<dev>.arp_ignore back (0 unless you had another value), and send a gratuitous ARP (arping -U -c1 -s ADDR ADDR).`,
      };
    }
  } catch (err) {
    reportFailure(report, ctx, err);
  } finally {
    await cleanup(ctx);
    await settleRecord(ctx, report);
    report.totalMs = performance.now() - t0;
  }
  return report;
}

/**
 * After a migration that ended on one host with the other confirmed clean (committed, or
 * rolled back): the record goes, unless the destination's work directory (the images:
 * the container's memory) could not be removed. Then the record stays, marked committed
 * or rolled-back, so that migrate recover removes it once the destination can be
 * reached, and the report says so (exit 5 after a commit; a rollback stays exit 4).
 */
async function settleRecord(ctx: Context, report: Report): Promise<void> {
  if (!ctx.recordDone) return;
  try {
    if (!ctx.remoteLeft) return await removeIntent(ctx.intentFile);
    const committed = report.runningOn === 'destination';
    const rec = await readIntent(ctx.intentFile);
    if (rec) await writeIntent(ctx.intentFile, { ...rec, phase: committed ? 'committed' : 'rolled-back' });
    ctx.progress.warn(`the destination's work directory ${ctx.remoteLeft} (the images: the container's memory) could not be removed`);
    const hint = `Run: migrate recover ${ctx.opts.container} ${ctx.opts.destination} once the destination can be reached; it removes what is left on both hosts.`;
    if (committed) {
      report.exitCode = EXIT.UNSAFE;
      report.error = { message: `migrated, but the destination's work directory ${ctx.remoteLeft} could not be removed (the connection was lost after the commit)`, hint };
    } else if (report.error) {
      report.error = { ...report.error, message: `${report.error.message}; the destination's work directory ${ctx.remoteLeft} could not be removed`, hint: [report.error.hint, hint].filter(Boolean).join(' ') };
    }
  } catch (err) {
    ctx.progress.warn(`the record ${ctx.intentFile}: ${(err as Error).message}`);
  }
}

/** The record of this migration (intent.ts), but for its phase: what recover needs, from this run's context. */
function intentRecord(ctx: Context): Omit<Intent, 'phase' | 'updatedAt'> {
  const { opts } = ctx;
  const L = ctx.local!;
  const R = ctx.remote!;
  return {
    version: INTENT_VERSION,
    container: opts.container,
    srcRunc: ctx.srcRunc,
    dstRunc: ctx.dstRunc,
    destination: opts.destination,
    pid: process.pid,
    startedAt: new Date().toISOString(),
    localBase: L.base,
    holdDir: L.holdDir,
    remoteBase: R.base,
    guardDir: guardDirOf(R.base),
    moveIp: opts.moveIp && ctx.moveIp ? { ...opts.moveIp, srcDev: ctx.moveIp.srcDev, dstDev: ctx.moveIp.dstDev } : undefined,
  };
}

function syncDetail(p: SyncPass): string {
  const f = p.figures;
  return `(${f.filesTransferred} files, ${formatBytes(f.transferredFileBytes)} changed of ${formatBytes(f.totalFileBytes)}${f.filesDeleted ? `, ${f.filesDeleted} deleted` : ''})`;
}

function newContext(opts: Options, progress: Progress): Context {
  const log = (host: string, line: string) => progress.command(host, line);
  return {
    opts,
    progress,
    log,
    src: new LocalHost(log),
    dst: undefined as any,
    ssh: undefined as any,
    ...runcOf(opts),
    cleanups: [],
    intentFile: intentPath(DEFAULTS.intentDir, opts.container),
  };
}

async function runChecks(ctx: Context, checks: Check[]): Promise<void> {
  for (const c of checks) {
    checkInterrupt();
    if (c.skippable && ctx.opts.force) {
      ctx.progress.warn(`skipped (--force): ${c.title}`);
      continue;
    }
    await ctx.progress.phase(`preflight:${c.title.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`, c.title, () => c.run(ctx), (d) => (d ? `(${d})` : undefined));
  }
}

/** Every exit path: the undo actions last-in first-out, over a new connection if the old one dropped. */
async function cleanup(ctx: Context): Promise<void> {
  if (ctx.ssh && !ctx.ssh.alive && ctx.remote) await reconnect(ctx);
  for (const c of ctx.cleanups.reverse()) {
    try {
      await c.run();
    } catch (err) {
      ctx.progress.warn(`cleanup: could not ${c.what}: ${(err as Error).message}`);
    }
  }
  ctx.ssh?.close();
}

/**
 * A record of an unfinished migration of this container is settled first (as migrate
 * recover would), when it went to the same destination. Returns where the container
 * ended, or undefined when there was nothing to settle.
 */
async function settleEarlier(ctx: Context, connect: () => Promise<SshConnection>): Promise<'source' | 'destination' | undefined> {
  const { opts, progress } = ctx;
  const rec = await readIntent(ctx.intentFile).catch((err: Error) => {
    throw new MigrateError(err.message, EXIT.PREFLIGHT, `Nothing was frozen. Look at the record: it describes a migration of ${opts.container} that did not finish; remove it only once that container runs on exactly one host.`);
  });
  if (!rec) return undefined;
  if (rec.destination !== opts.destination || rec.srcRunc.root !== ctx.srcRunc.root) {
    throw new MigrateError(
      `an unfinished migration of ${opts.container} (runc root ${rec.srcRunc.root}) to ${rec.destination} (started ${rec.startedAt}) must be settled first`,
      EXIT.PREFLIGHT,
      `Run: migrate recover ${opts.container} ${rec.destination}`,
    );
  }
  progress.warn(`an earlier migration of ${opts.container} did not finish (${rec.phase}): settling it first, as migrate recover would`);
  ctx.ssh = await connect();
  const env = { src: ctx.src, dst: new RemoteHost(ctx.ssh, opts.sudo, ctx.log), warn: (m: string) => progress.warn(m), info: (m: string) => progress.info(m) };
  const r = await progress.phase('recover', 'settle the earlier migration', () => recover(ctx.intentFile, env));
  if (r?.runningOn === 'in-doubt') {
    throw new AfterFreezeError(`an earlier migration of ${opts.container} is in doubt: ${r.why}`, EXIT.UNSAFE, `Run migrate recover ${opts.container} ${opts.destination} once the destination can be reached.`, [], 'unknown', true);
  }
  if (r?.runningOn === 'kept' || r?.runningOn === 'nowhere') {
    throw new AfterFreezeError(`an earlier migration of ${opts.container}: ${r.why}`, EXIT.UNSAFE, `Run migrate recover ${opts.container} ${opts.destination} and read what it says.`, [], 'unknown', true);
  }
  return r?.runningOn;
}

/**
 * The switchover (switchover.ts) between this machine and the destination, in the
 * report's terms. Returns after a commit; otherwise throws AfterFreezeError naming where
 * the container runs, or that the migration is in doubt.
 */
async function runSwitchover(ctx: Context, plan: Plan, images: FinalImages, report: Report): Promise<{ downtimeMs: number; bytesMoved?: number; finalDump?: Source['finalDump']; sourceLeft?: string; lazy?: LazyWindow; announceFailed?: string }> {
  const { opts, progress } = ctx;
  const L = ctx.local!;
  const R = ctx.remote!;
  await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
  if (images.remote !== R.images) await ctx.dst.run(['mkdir', '-p', '-m', '0700', images.remote]);
  if (plan.transport !== 'stream' && !opts.postCopy) {
    const ps = await progress.phase('page-server', `page server on the destination (${describeTransport(plan.transport)})`, () => startPageServer(ctx, images.remote, images.parent));
    ctx.pageServer = ps;
    ctx.cleanups.push({ what: 'stop the page server', run: () => ps.stop() });
    if (faultAt('page-server')) await ps.kill();
    await pausePoint('page-server', ps.endpoint);
  }
  // The last moment to stop without freezing anything.
  checkInterrupt();
  const dst = new Destination(ctx, images, plan.guardDeadlineS, plan.lazy);
  const record = intentRecord(ctx);
  const src = new Source(ctx, images, { file: ctx.intentFile, record }, plan.holdTimeoutS, plan.lazy);
  await src.snapshotLockRules();
  const hooks: SwitchoverHooks = {
    step: (name, title, run) =>
      progress.phase(name, title, async () => {
        if (name !== 'dump') return run();
        // On a terminal: the final dump's bytes as they arrive.
        const stop = await watchTransfer(ctx, plan.transport === 'stream' ? 'src' : 'dst', plan.transport === 'stream' ? images.local : images.remote, plan.mode === 'one-shot' ? ctx.memoryBytes : undefined);
        try {
          return await run();
        } finally {
          await stop();
        }
      }),
    warn: (m) => progress.warn(m),
    killPoint: (point) => switchoverPoint(point, () => ctx.ssh.sever(), L),
    moveIp: !!opts.moveIp,
    syncFiles: !!ctx.files?.trees.length,
  };
  const r = opts.postCopy ? await postCopySwitchover(src, dst, { ...hooks, stallS: plan.lazy!.stallS, windowS: plan.lazy!.windowS }) : await switchover(src, dst, hooks);
  if ('lazy' in r && r.lazy) report.postCopy = { ...r.lazy, rolledBack: r.runningOn === 'source' ? true : undefined };
  if (r.runningOn === 'destination') {
    // After the commit: figures and tidying only, never a failure.
    let bytesMoved = r.bytesMoved;
    try {
      if (r.sourceLeft) ctx.keepWorkDirs = true;
      else ctx.recordDone = true;
      // The images that arrived (the page server's and the copied files).
      const du = await ctx.dst.run(['du', '-s', '-B1', '--apparent-size', R.images], { allowFail: true });
      const duBytes = Number(du.stdout.split(/\s/)[0]);
      if (Number.isFinite(duBytes) && duBytes > 0) bytesMoved = duBytes;
    } catch (err) {
      progress.warn(`after the commit: ${(err as Error).message}`);
    }
    return { downtimeMs: r.downtimeMs, bytesMoved, finalDump: src.finalDump, sourceLeft: r.sourceLeft, lazy: r.lazy, announceFailed: r.announceFailed };
  }
  if (r.runningOn === 'nowhere') {
    ctx.keepWorkDirs = true;
    await removeIntent(ctx.intentFile);
    const hint = opts.postCopy
      ? `The container's memory was only in the source's tasks and is lost; its files are on both hosts (work directories kept: ${ctx.local!.base} here).`
      : `Restore it by hand from ${images.local} on the source (runc restore --image-path ...), or copy the images to the destination.`;
    throw new AfterFreezeError(r.error.message, EXIT.UNSAFE, hint, [], 'none');
  }
  if (r.runningOn === 'in-doubt') {
    ctx.keepWorkDirs = true;
    throw new AfterFreezeError(
      `${r.error.message}; the migration is in doubt`,
      EXIT.UNSAFE,
      opts.postCopy
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
  if (r.destinationClean) ctx.recordDone = true;
  else ctx.keepWorkDirs = true;
  if (ctx.keepImages) ctx.keepWorkDirs = true;
  if (ctx.files?.report.final) progress.warn(`the destination's copy of the container's files (${ctx.files.trees.map((t) => t.dst).join(', ')}) was synced to the frozen source and stays so; the source's files were not changed`);
  const criuInfo = r.error instanceof CriuFailure ? r.error.criu : undefined;
  throw await afterFreeze(ctx, `${r.error.message}; rolled back`, { hint: criuInfo?.cause, criuErrors: criuInfo?.errors, dstClean: r.destinationClean });
}
