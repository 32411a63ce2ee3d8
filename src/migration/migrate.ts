// One migration from start to end: connect, preflight, pre-copy, switchover, cleanup,
// report. Contract: when this returns, the container runs on exactly one host and the
// report says which (or the report says the migration is in doubt and what settles it);
// every remote page server, forwarder and work directory is removed.
import fs from 'node:fs/promises';
import path from 'node:path';
import { CommandError, EXIT, MigrateError, PreflightError, type ExitCode } from '../errors.js';
import { LocalHost, RemoteHost } from '../host.js';
import type { Options } from '../options.js';
import { Progress } from '../progress.js';
import type { Report } from '../report.js';
import { parseState, runc } from '../runc.js';
import { SshConnection } from '../ssh/connection.js';
import { resolveEndpoint } from '../ssh/endpoint.js';
import { addr } from './address.js';
import type { Context } from './context.js';
import { faultAt, switchoverPoint } from './faults.js';
import { holdTimeoutS } from './hold.js';
import { intentPath, readIntent, removeIntent } from './intent.js';
import { recover } from './recover.js';
import { DESTINATION_CHECKS, SOURCE_CHECKS, type Check } from './preflight.js';
import { startPageServer } from './transfer.js';
import { precopy } from './precopy.js';
import { DEFAULTS } from '../options.js';
import { commandLine } from '../shell.js';
import { CriuFailure, Destination, reconnect, Source, type FinalImages } from './sides.js';
import { switchover } from './switchover.js';

/** Set by the CLI's signal handler; checked between phases before the freeze. */
export const interruption = { requested: false as boolean, signal: '' as string };

class Interrupted extends MigrateError {
  constructor() {
    super(`interrupted by ${interruption.signal} before the freeze`, EXIT.INTERRUPTED, 'Nothing was frozen; run it again when ready.');
  }
}

function checkInterrupt(): void {
  if (interruption.requested) throw new Interrupted();
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

/** A failure after the freeze: says where the container runs. */
class AfterFreezeError extends MigrateError {
  constructor(
    message: string,
    exitCode: ExitCode,
    hint: string | undefined,
    readonly criuErrors: string[],
    readonly runningOn: Report['runningOn'],
    readonly inDoubt = false,
  ) {
    super(message, exitCode, hint);
  }
}

async function sourceRunning(ctx: Context): Promise<boolean> {
  const r = await ctx.src.run(runc.state(ctx.srcRunc, ctx.opts.container), { allowFail: true });
  return r.code === 0 && parseState(r.stdout).status === 'running';
}

/**
 * The error for a failure after a freeze, once the source has had its chance to resume:
 * rolled back only if the source runs and the destination holds no copy (dstClean).
 */
async function afterFreeze(ctx: Context, message: string, o: { hint?: string; criuErrors?: string[]; dstClean?: boolean } = {}): Promise<AfterFreezeError> {
  const running = await sourceRunning(ctx);
  const dstClean = o.dstClean ?? true;
  return new AfterFreezeError(
    message + (dstClean ? '' : ', but the destination could not be confirmed clean'),
    running && dstClean ? EXIT.ROLLED_BACK : EXIT.UNSAFE,
    dstClean ? o.hint : `Check the destination by hand: runc --root ${ctx.opts.remoteRuncRoot} list; delete its copy of ${ctx.opts.container} if one runs there.`,
    o.criuErrors ?? [],
    running ? 'source' : 'unknown',
  );
}

/**
 * Runs the switchover (switchover.ts) between this machine and the destination, and turns
 * its result into the report's terms. Returns only after a commit; otherwise throws
 * AfterFreezeError naming where the container runs.
 */
async function runSwitchover(ctx: Context, images: FinalImages): Promise<{ downtimeMs: number; bytesMoved?: number; finalDump?: Source['finalDump']; sourceLeft?: string }> {
  const { opts, progress } = ctx;
  const L = ctx.local!;
  const R = ctx.remote!;
  const holdS = holdTimeoutS(ctx.memoryBytes, { floorS: DEFAULTS.holdFloorS, worstBytesPerS: DEFAULTS.holdWorstBytesPerS, override: opts.holdTimeoutS });
  await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
  if (images.remote !== R.images) await ctx.dst.run(['mkdir', '-p', '-m', '0700', images.remote]);
  if (ctx.transport !== 'stream') {
    const ps = await progress.phase('page-server', `page server on the destination (${ctx.transport === 'page-server' ? 'through SSH' : 'direct TCP'})`, () => startPageServer(ctx, images.remote, images.parent));
    ctx.pageServer = ps;
    ctx.cleanups.push({ what: 'stop the page server', run: () => ps.stop() });
    if (faultAt('page-server')) await ps.kill();
  }
  // The last moment to stop without freezing anything.
  checkInterrupt();
  const dst = new Destination(ctx, images, Math.max(5, holdS - DEFAULTS.guardMarginS));
  const src = new Source(ctx, images, {
    file: ctx.intentFile!,
    record: {
      container: opts.container,
      runcRoot: opts.runcRoot,
      destination: opts.destination,
      remoteRuncRoot: opts.remoteRuncRoot,
      pid: process.pid,
      startedAt: new Date().toISOString(),
      localBase: L.base,
      holdDir: L.holdDir,
      remoteBase: R.base,
      guardDir: dst.guardDir,
      moveIp: opts.moveIp && ctx.moveIp ? { ...opts.moveIp, srcDev: ctx.moveIp.srcDev, dstDev: ctx.moveIp.dstDev } : undefined,
    },
  }, holdS);
  const r = await switchover(src, dst, {
    step: (name, title, run) => progress.phase(name, title, run),
    warn: (m) => progress.warn(m),
    killPoint: (point) => switchoverPoint(point, () => ctx.ssh.sever(), L.base),
    moveIp: !!opts.moveIp,
  });
  if (r.runningOn === 'destination') {
    // After the commit: figures and tidying only, never a failure.
    let bytesMoved = r.bytesMoved;
    try {
      if (r.sourceLeft) ctx.keepWorkDirs = true;
      else await removeIntent(ctx.intentFile!);
      // The images that arrived (the page server's and the copied files).
      const du = await ctx.dst.run(['du', '-s', '-B1', '--apparent-size', R.images], { allowFail: true });
      const duBytes = Number(du.stdout.split(/\s/)[0]);
      if (Number.isFinite(duBytes) && duBytes > 0) bytesMoved = duBytes;
    } catch (err) {
      progress.warn(`after the commit: ${(err as Error).message}`);
    }
    return { downtimeMs: r.downtimeMs, bytesMoved, finalDump: src.finalDump, sourceLeft: r.sourceLeft };
  }
  if (r.runningOn === 'in-doubt') {
    ctx.keepWorkDirs = true;
    throw new AfterFreezeError(
      `${r.error.message}; the migration is in doubt`,
      EXIT.UNSAFE,
      `The source stays frozen until this is settled. Run: migrate recover ${opts.container} ${opts.destination} (with the same SSH options). It asks the destination whether it committed, then removes the source or resumes it.`,
      [],
      'unknown',
      true,
    );
  }
  await removeIntent(ctx.intentFile!);
  if (ctx.keepImages) ctx.keepWorkDirs = true;
  const criuInfo = r.error instanceof CriuFailure ? r.error.criu : undefined;
  throw await afterFreeze(ctx, `${r.error.message}; rolled back`, { hint: criuInfo?.cause, criuErrors: criuInfo?.errors, dstClean: r.destinationClean });
}

function describePlan(ctx: Context): string[] {
  const o = ctx.opts;
  const L = ctx.local!;
  const R = ctx.remote!;
  const rule = o.threshold ? `--threshold ${'bytes' in o.threshold ? `${o.threshold.bytes} bytes` : `${o.threshold.percent}%`}` : `--max-downtime ${o.maxDowntimeMs} ms`;
  const steps = [
    `mode: ${ctx.mode}${ctx.mode === 'iterative' ? ` (pre-dumps until ${rule}, at most ${o.maxIterations})` : ''}`,
    `transport: ${ctx.transport} (${ctx.memoryBytes !== undefined ? `${ctx.memoryBytes} bytes in use` : 'memory use unknown'})`,
  ];
  if (ctx.transport !== 'stream') steps.push(`[dst] criu page-server --images-dir ${R.images} ... (${ctx.transport === 'page-server' ? '127.0.0.1, through SSH' : 'direct TCP'})`);
  steps.push(`[src] ${commandLine(runc.checkpoint(ctx.srcRunc, o.container, { imagePath: L.images, workPath: L.criuWork, pageServer: ctx.transport !== 'stream' ? 'HOST:PORT' : undefined, tcpEstablished: o.tcpEstablished }))}  (held at post-dump)`);
  if (o.moveIp) steps.push(`[src] ${commandLine(addr.del(o.moveIp, ctx.moveIp!.srcDev))}`);
  steps.push(`[src->dst] tar ${L.images} -> ${R.images}`);
  if (o.moveIp) steps.push(`[dst] ${commandLine(addr.claim(o.moveIp, ctx.moveIp!.dstDev))}  (during the copy)`);
  steps.push(`[dst] ${commandLine(runc.restore(ctx.dstRunc, o.container, { bundle: ctx.bundle!, imagePath: R.images, workPath: R.criuWork, tcpEstablished: o.tcpEstablished }))}`);
  steps.push(`[dst] ${commandLine(runc.state(ctx.dstRunc, o.container))}  (must be running)`);
  if (o.moveIp) steps.push(`[dst] ${commandLine([...addr.announce(ctx.moveIp!.arping, o.moveIp, ctx.moveIp!.dstDev), 'OLD'])}  (by the guard, on commit)`);
  steps.push('commit: the source is destroyed; CRIU lock rules removed. Any failure before: the source resumes.');
  return steps;
}

/** Where the container is after a refusal before the freeze: as the preflight last saw it. */
function beforeFreeze(ctx: Context): Report['runningOn'] {
  if (ctx.sourceStatus === undefined) return 'unknown';
  return ctx.sourceStatus === 'running' ? 'source' : 'none';
}

/**
 * A record of an unfinished migration of this container: settled first (migrate recover),
 * when it went to the same destination. Returns where the container ended, or undefined
 * when there was nothing to settle.
 */
async function settleEarlier(ctx: Context, endpoint: ReturnType<typeof resolveEndpoint>, log: (h: string, l: string) => void): Promise<'source' | 'destination' | undefined> {
  const { opts, progress } = ctx;
  const rec = await readIntent(ctx.intentFile!);
  if (!rec) return undefined;
  if (rec.destination !== opts.destination) {
    throw new PreflightError(
      `an unfinished migration of ${opts.container} to ${rec.destination} (started ${rec.startedAt}) must be settled first`,
      `Run: migrate recover ${opts.container} ${rec.destination}`,
    );
  }
  progress.warn(`an earlier migration of ${opts.container} did not finish (${rec.phase}): settling it first, as migrate recover would`);
  ctx.ssh = await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () => SshConnection.connect(endpoint));
  const r = await progress.phase('recover', 'settle the earlier migration', () =>
    recover(ctx.intentFile!, { src: ctx.src, dst: new RemoteHost(ctx.ssh, opts.sudo, log), srcRunc: ctx.srcRunc, dstRunc: ctx.dstRunc, warn: (m) => progress.warn(m), info: (m) => progress.info(m) }),
  );
  if (!r) return undefined;
  if (r.runningOn === 'in-doubt') {
    throw new AfterFreezeError(`an earlier migration of ${opts.container} is in doubt: ${r.why}`, EXIT.UNSAFE, `Run migrate recover ${opts.container} ${opts.destination} once the destination can be reached.`, [], 'unknown', true);
  }
  return r.runningOn;
}

/** `migrate recover <container> <host>`: settles an unfinished migration (recover.ts). */
export async function recoverCommand(opts: Options, progress: Progress): Promise<Report> {
  const t0 = performance.now();
  const log = (host: string, line: string) => progress.command(host, line);
  const src = new LocalHost(log);
  const report: Report = {
    outcome: 'nothing-to-recover',
    exitCode: EXIT.OK,
    container: opts.container,
    source: (await import('node:os')).hostname(),
    destination: opts.destination,
    diskless: opts.diskless,
    totalMs: 0,
    phases: progress.phases,
    runningOn: 'unknown',
    warnings: progress.warnings,
  };
  const file = intentPath(DEFAULTS.intentDir, opts.runcRoot, opts.container);
  let ssh: SshConnection | undefined;
  try {
    const rec = await readIntent(file);
    if (rec) {
      const endpoint = resolveEndpoint(opts);
      ssh = await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () => SshConnection.connect(endpoint)).catch((err: Error) => {
        progress.warn(`the destination cannot be reached (${err.message}): deciding from the source alone where that is safe`);
        return undefined;
      });
      const srcRunc = { runc: opts.runc, root: opts.runcRoot, criu: opts.criu === 'criu' ? undefined : opts.criu };
      const dstRunc = { runc: opts.remoteRunc, root: opts.remoteRuncRoot, criu: opts.remoteCriu === 'criu' ? undefined : opts.remoteCriu };
      const r = await progress.phase('recover', `settle the migration of ${opts.container} (${rec.phase})`, () =>
        recover(file, { src, dst: ssh ? new RemoteHost(ssh, opts.sudo, log) : undefined, srcRunc, dstRunc, warn: (m) => progress.warn(m), info: (m) => progress.info(m) }),
      );
      if (r?.runningOn === 'in-doubt') {
        report.outcome = 'in-doubt';
        report.exitCode = EXIT.UNSAFE;
        report.error = { message: `still in doubt: ${r.why}`, hint: 'The source stays frozen; nothing was changed. Run migrate recover again once the destination can be reached.' };
      } else if (r) {
        report.outcome = 'recovered';
        report.runningOn = r.runningOn;
        report.recoveredWhy = r.why;
      }
    }
  } catch (err) {
    const e = err as Error;
    report.outcome = 'unsafe';
    report.exitCode = e instanceof MigrateError ? e.exitCode : EXIT.INTERNAL;
    report.error = { message: e.message, hint: e instanceof MigrateError ? e.hint : undefined };
  } finally {
    ssh?.close();
  }
  report.totalMs = performance.now() - t0;
  return report;
}

export async function migrate(opts: Options, progress: Progress): Promise<Report> {
  const t0 = performance.now();
  const log = (host: string, line: string) => progress.command(host, line);
  const src = new LocalHost(log);
  const report: Report = {
    outcome: 'refused',
    exitCode: EXIT.PREFLIGHT,
    container: opts.container,
    source: (await import('node:os')).hostname(),
    destination: opts.destination,
    diskless: opts.diskless,
    totalMs: 0,
    phases: progress.phases,
    runningOn: 'unknown',
    warnings: progress.warnings,
  };
  const ctx: Context = {
    opts,
    progress,
    src,
    dst: undefined as any,
    ssh: undefined as any,
    srcRunc: { runc: opts.runc, root: opts.runcRoot, criu: opts.criu === 'criu' ? undefined : opts.criu },
    dstRunc: { runc: opts.remoteRunc, root: opts.remoteRuncRoot, criu: opts.remoteCriu === 'criu' ? undefined : opts.remoteCriu },
    cleanups: [],
    intentFile: intentPath(DEFAULTS.intentDir, opts.runcRoot, opts.container),
  };
  try {
    const endpoint = resolveEndpoint(opts);
    // An earlier migration of this container that its tool did not finish comes first.
    const earlier = await settleEarlier(ctx, endpoint, log);
    if (earlier === 'destination') {
      report.outcome = 'recovered';
      report.exitCode = EXIT.OK;
      report.runningOn = 'destination';
      report.recoveredWhy = 'an earlier migration had committed; it was finished';
      return report;
    }
    await runChecks(ctx, SOURCE_CHECKS);
    report.transport = ctx.transport;
    report.memoryBytes = ctx.memoryBytes;
    ctx.ssh ??= await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () => SshConnection.connect(endpoint));
    ctx.dst = new RemoteHost(ctx.ssh, opts.sudo, log);
    await runChecks(ctx, DESTINATION_CHECKS);
    checkInterrupt();
    if (opts.dryRun) {
      for (const s of describePlan(ctx)) progress.info(`  ${s}`);
      report.outcome = 'dry-run';
      report.exitCode = EXIT.OK;
    } else {
      report.mode = ctx.mode;
      let images: FinalImages = { local: ctx.local!.images, remote: ctx.remote!.images };
      if (ctx.mode === 'iterative') {
        const pc = await precopy(ctx, checkInterrupt).catch(async (err: Error) => {
          if (err instanceof MigrateError) throw err;
          // Pre-dumps resume the container themselves: it should run on the source.
          throw await afterFreeze(ctx, `pre-copy failed: ${err.message}`);
        });
        report.iterations = pc.iterations.map((it) => ({ ...it }));
        report.stopReason = pc.decision.reason;
        report.stopWhy = pc.decision.why;
        report.predictedDowntimeMs = pc.decision.predictedDowntimeMs;
        const final = String(Number(pc.last) + 1);
        images = { local: path.join(ctx.local!.images, final), remote: path.join(ctx.remote!.images, final), parent: `../${pc.last}` };
      }
      const r = await runSwitchover(ctx, images);
      report.outcome = 'migrated';
      report.exitCode = EXIT.OK;
      report.runningOn = 'destination';
      report.downtimeMs = r.downtimeMs;
      report.bytesMoved = r.bytesMoved;
      report.finalDump = r.finalDump;
      if (r.sourceLeft) {
        // Migrated, but the source may still hold its frozen copy: exit 5 says so.
        report.exitCode = EXIT.UNSAFE;
        report.error = { message: r.sourceLeft, hint: `Run: migrate recover ${opts.container} ${opts.destination}` };
      }
    }
  } catch (err) {
    const e = err as Error;
    if (e instanceof AfterFreezeError) {
      report.outcome = e.inDoubt ? 'in-doubt' : e.exitCode === EXIT.ROLLED_BACK ? 'rolled-back' : 'unsafe';
      report.exitCode = e.exitCode;
      report.runningOn = e.runningOn;
      report.error = { message: e.message, hint: e.hint, criuErrors: e.criuErrors.length ? e.criuErrors : undefined };
    } else if (e instanceof MigrateError) {
      report.runningOn = beforeFreeze(ctx);
      report.outcome = e.exitCode === EXIT.INTERRUPTED ? 'interrupted' : 'refused';
      report.exitCode = e.exitCode;
      report.error = { message: e.message, hint: e.hint };
    } else if (e instanceof CommandError) {
      // A command failed before the freeze: nothing was changed on the source.
      report.runningOn = beforeFreeze(ctx);
      report.outcome = 'refused';
      report.exitCode = EXIT.PREFLIGHT;
      report.error = { message: e.message };
    } else {
      report.runningOn = 'unknown';
      report.outcome = 'refused';
      report.exitCode = EXIT.INTERNAL;
      report.error = { message: `internal error: ${e.stack ?? e.message}` };
    }
  } finally {
    if (ctx.ssh && !ctx.ssh.alive && ctx.remote) await reconnect(ctx);
    for (const c of ctx.cleanups.reverse()) {
      try {
        await c.run();
      } catch (err) {
        progress.warn(`cleanup: could not ${c.what}: ${(err as Error).message}`);
      }
    }
    ctx.ssh?.close();
  }
  report.totalMs = performance.now() - t0;
  return report;
}

export { PreflightError };
