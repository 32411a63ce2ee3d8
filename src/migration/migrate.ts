// One migration from start to end: connect, preflight, switchover, cleanup, report.
// Contract: when this returns, the container runs on exactly one host and the report
// says which; every remote page server, forwarder and work directory is removed.
import fs from 'node:fs/promises';
import path from 'node:path';
import { CommandError, EXIT, MigrateError, PreflightError, type ExitCode } from '../errors.js';
import { LocalHost, RemoteHost } from '../host.js';
import type { Options } from '../options.js';
import { formatBytes, Progress } from '../progress.js';
import type { Report } from '../report.js';
import { isNotExist, parseState, runc } from '../runc.js';
import { SshConnection } from '../ssh/connection.js';
import { resolveEndpoint } from '../ssh/endpoint.js';
import { addr, parseClaimedArpIgnore } from './address.js';
import type { Context } from './context.js';
import { diagnose } from './diagnose.js';
import { failPoint, faultAt } from './faults.js';
import { verdict, waitDumped, writeHold } from './hold.js';
import { removeCriuLockRules } from './netlock.js';
import { DUMP_LOG, RESTORE_LOG } from './paths.js';
import { DESTINATION_CHECKS, SOURCE_CHECKS, type Check } from './preflight.js';
import { startPageServer, streamDir, type PageServer } from './transfer.js';
import { precopy } from './precopy.js';
import { decodeStatsImage, type DumpStats } from '../criustats.js';
import { DEFAULTS } from '../options.js';
import { commandLine } from '../shell.js';

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

interface SwitchoverResult {
  downtimeMs: number;
  bytesMoved?: number;
  /** CRIU's figures for the final dump (its stats-dump image), when it wrote them. */
  finalDump?: DumpStats;
}

/** A failure after the freeze, after the rollback ran: says where the container is. */
class AfterFreezeError extends MigrateError {
  constructor(message: string, exitCode: ExitCode, hint: string | undefined, readonly criuErrors: string[], readonly runningOn: Report['runningOn']) {
    super(message, exitCode, hint);
  }
}

async function fetchLog(host: Context['src'], file: string): Promise<string> {
  const r = await host.run(['cat', file], { allowFail: true });
  return r.code === 0 ? r.stdout : '';
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
    message + (dstClean ? '' : ', but the destination could not be reached to remove its copy'),
    running && dstClean ? EXIT.ROLLED_BACK : EXIT.UNSAFE,
    dstClean ? o.hint : `Check the destination by hand: runc --root ${ctx.opts.remoteRuncRoot} list; delete its copy of ${ctx.opts.container} if one runs there.`,
    o.criuErrors ?? [],
    running ? 'source' : 'unknown',
  );
}

interface FinalImages {
  /** Where the final dump's files go on each side. */
  local: string;
  remote: string;
  /** The last pre-dump, relative to these directories ("../3"), when pre-copy ran. */
  parent?: string;
}

/**
 * The switchover: freeze and dump (parented on the last pre-dump if there was one, held
 * at post-dump), copy, restore, verify, then commit (the source is destroyed) or roll
 * back (the source resumes, the destination is cleaned). Contract: returns only after a
 * commit; on any failure it throws AfterFreezeError after the rollback, naming where
 * the container runs.
 */
async function switchover(ctx: Context, images: FinalImages): Promise<SwitchoverResult> {
  const { opts, progress, src, dst } = ctx;
  const L = ctx.local!;
  const R = ctx.remote!;
  const mv = opts.moveIp;
  const env = await writeHold(L, process.pid, DEFAULTS.holdTimeoutS);
  await fs.mkdir(images.local, { recursive: true, mode: 0o700 });
  if (images.remote !== R.images) await dst.run(['mkdir', '-p', '-m', '0700', images.remote]);

  let pageServer: PageServer | undefined;
  if (ctx.transport !== 'stream') {
    pageServer = await progress.phase('page-server', `page server on the destination (${ctx.transport === 'page-server' ? 'through SSH' : 'direct TCP'})`, () => startPageServer(ctx, images.remote, images.parent));
    ctx.cleanups.push({ what: 'stop the page server', run: () => pageServer!.stop() });
    if (faultAt('page-server')) await pageServer.kill();
  }

  // The last moment to stop without freezing anything.
  checkInterrupt();
  const t0 = performance.now();
  const checkpoint = await src.spawn(
    runc.checkpoint(ctx.srcRunc, opts.container, { imagePath: images.local, workPath: L.criuWork, pageServer: pageServer?.endpoint, tcpEstablished: opts.tcpEstablished, parentPath: images.parent }),
    { env },
  );
  let checkpointEnded = false;
  void checkpoint.done.then(() => (checkpointEnded = true));
  /** The source must still be frozen and held: if the checkpoint ended, it has resumed. */
  const stillHeld = () => {
    if (checkpointEnded) throw new Error('the source\'s checkpoint ended during the hold (the source resumed)');
  };
  const held = await progress.phase('dump', 'freeze and dump', () => waitDumped(L, checkpoint.done));
  if (held === 'exited') {
    const res = await checkpoint.done;
    const d = diagnose(await fetchLog(src, path.join(L.criuWork, DUMP_LOG)));
    throw await afterFreeze(ctx, `the checkpoint failed on the source (runc exited ${res.code}: ${res.stderr.trim().split('\n').pop() ?? ''})`, {
      hint: d.cause,
      criuErrors: d.errors,
    });
  }

  // From here the source is frozen and held. Every failure below rolls back.
  let restored = false;
  let addrMoved = false;
  let arpIgnoreOld: string | undefined;
  let bytesMoved: number | undefined;
  let downtimeMs = 0;
  /** The address claimed on the destination, concurrently with the copy. */
  let claim: Promise<void> | undefined;
  try {
    failPoint('after-dump');
    if (mv) {
      await progress.phase('move-ip', `release ${mv.address} on the source`, () => src.run(addr.del(mv, ctx.moveIp!.srcDev)));
      addrMoved = true;
      claim = (async () => {
        const r = await dst.run(addr.claim(mv, ctx.moveIp!.dstDev), { allowFail: true });
        arpIgnoreOld = parseClaimedArpIgnore(r.stdout);
        if (r.code !== 0) throw new Error(`adding ${mv.address} on the destination failed: ${r.stderr.trim()}`);
      })();
      claim.catch(() => undefined); // awaited before the restore, or before a rollback
    }
    if (pageServer) {
      const code = await pageServer.done;
      if (code !== 0) throw new Error(`the page server on the destination exited ${code}: not every page arrived (see ${R.pageServerLog} there)`);
    }
    const sent = await progress.phase('copy', 'copy images', async () => {
      failPoint('copy');
      // CRIU's own "parent" link stays behind: the page server made the destination's.
      return streamDir(ctx, images.local, images.remote, ['./parent']);
    }, (b) => `(${formatBytes(b)})`);
    bytesMoved = sent;
    if (claim) await claim;
    stillHeld();
    restored = true;
    await progress.phase('restore', 'restore on the destination', async () => {
      failPoint('restore');
      const r = await dst.run(
        runc.restore(ctx.dstRunc, opts.container, { bundle: ctx.bundle!, imagePath: images.remote, workPath: R.criuWork, tcpEstablished: opts.tcpEstablished }),
        { allowFail: true, timeoutMs: 300_000 },
      );
      if (r.code !== 0) {
        const d = diagnose(await fetchLog(dst, path.join(R.criuWork, RESTORE_LOG)));
        const e = new CommandError({ host: 'destination', command: 'runc restore', exitCode: r.code, stdout: r.stdout, stderr: r.stderr });
        (e as any).criu = d;
        throw e;
      }
      if (faultAt('ssh-drop')) ctx.ssh.sever();
    });
    await progress.phase('verify', 'verify it runs on the destination', async () => {
      failPoint('verify');
      const r = await dst.run(runc.state(ctx.dstRunc, opts.container), { allowFail: true });
      const st = r.code === 0 ? parseState(r.stdout).status : `unknown (${r.stderr.trim()})`;
      if (st !== 'running') throw new Error(`the restored container is ${st} on the destination`);
    });
    stillHeld();
    if (mv) {
      // Only now may the destination's copy talk to its peers, and they learn its new home.
      const a = await dst.run(addr.announce(ctx.moveIp!.arping, mv, ctx.moveIp!.dstDev, arpIgnoreOld ?? '0'), { allowFail: true });
      if (a.code !== 0) throw new Error(`releasing ${mv.address} on the destination failed: ${a.stderr.trim() || `exit ${a.code}`}`);
      stillHeld();
    }
    downtimeMs = performance.now() - t0;
  } catch (err) {
    // A claim still in flight must land before the rollback takes the address back.
    if (claim) await claim.catch(() => undefined);
    const dstClean = await rollback(ctx, { restored, addrMoved, arpIgnoreOld, muted: claim !== undefined });
    // The checkpoint ends once the script has exited 1 and CRIU has resumed the tasks.
    await checkpoint.done;
    if (mv && addrMoved) await src.run(addr.garp(ctx.moveIp!.arping, mv, ctx.moveIp!.srcDev), { allowFail: true });
    const criuInfo = (err as any).criu as ReturnType<typeof diagnose> | undefined;
    throw await afterFreeze(ctx, `${(err as Error).message}; rolled back`, { hint: criuInfo?.cause, criuErrors: criuInfo?.errors, dstClean });
  }

  // Commit: the destination runs; let CRIU finish and runc destroy the source.
  await progress.phase('commit', 'commit (remove the source)', async () => {
    const decided = await verdict(L, 'commit');
    if (decided !== 'commit') {
      // The hold gave up first (timeout) and the source has resumed: it is the live copy.
      const dstClean = await rollback(ctx, { restored: true, addrMoved, arpIgnoreOld: arpIgnoreOld ?? '0', muted: false });
      await checkpoint.done;
      throw await afterFreeze(ctx, `the source's hold ended (${decided}) before the commit; rolled back`, { dstClean });
    }
    const res = await checkpoint.done;
    if (res.code !== 0 && (await sourceRunning(ctx))) {
      // CRIU failed after the verdict and resumed the source; the destination already
      // runs the migrated state, so the resumed copy must go.
      progress.warn(`runc checkpoint failed after the commit (${res.stderr.trim()}); removing the resumed source copy`);
      await src.run([ctx.srcRunc.runc, '--root', ctx.srcRunc.root, 'kill', opts.container, 'KILL'], { allowFail: true });
      await src.run(runc.deleteForce(ctx.srcRunc, opts.container), { allowFail: true });
    }
    // CRIU leaves its TCP lock rules on the source after a committed dump.
    if (opts.tcpEstablished) await removeCriuLockRules((argv) => src.run(argv, { allowFail: true }));
  });
  const du = await dst.run(['du', '-s', '-B1', '--apparent-size', R.images], { allowFail: true });
  const duBytes = Number(du.stdout.split(/\s/)[0]);
  if (Number.isFinite(duBytes) && duBytes > 0) bytesMoved = duBytes;
  const stats = await fs.readFile(path.join(L.criuWork, 'stats-dump')).catch(() => undefined);
  const finalDump = stats ? decodeStatsImage(stats) : undefined;
  return { downtimeMs, bytesMoved, finalDump };
}

/** A new SSH connection when the old one dropped; false if the destination stays unreachable. */
async function ensureConnection(ctx: Context): Promise<boolean> {
  if (ctx.ssh.alive) return true;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const ssh = await SshConnection.connect(ctx.ssh.endpoint);
      ctx.ssh = ssh;
      (ctx.dst as RemoteHost).useConnection(ssh);
      ctx.progress.warn(`the SSH connection dropped; reconnected (attempt ${attempt})`);
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  return false;
}

/**
 * Undo a half-done switchover. Contract: the source resumes; the destination is clean.
 * Returns false when the destination could not be reached to remove what was restored.
 * muted: the claim put the destination's output block in place (or tried to).
 */
async function rollback(ctx: Context, s: { restored: boolean; addrMoved: boolean; arpIgnoreOld?: string; muted: boolean }): Promise<boolean> {
  const { opts, src } = ctx;
  const mv = opts.moveIp;
  let reachable = true;
  await ctx.progress.phase('rollback', 'roll back (resume the source)', async () => {
    // A command on the destination; a dropped connection is re-made once. undefined: unreachable.
    const onDst = async (argv: string[]) => {
      for (let attempt = 0; attempt < 2; attempt++) {
        if (!(await ensureConnection(ctx))) return undefined;
        try {
          return await ctx.dst.run(argv, { allowFail: true });
        } catch {
          ctx.ssh.alive = false;
        }
      }
      return undefined;
    };
    const block = mv && s.restored && !s.muted ? await onDst(addr.blockOutput(mv)) : undefined;
    if (s.restored) {
      await onDst(runc.deleteForce(ctx.dstRunc, opts.container));
      // Confirm: the destination must not run a copy once the source resumes.
      const st = await onDst(runc.state(ctx.dstRunc, opts.container));
      reachable = st !== undefined && st.code !== 0 && isNotExist(st.stderr);
    }
    if (mv && ctx.moveIp) {
      const d = ctx.moveIp.dstDev;
      await onDst(addr.del(mv, d));
      if (block?.code === 0 || s.muted) await onDst(addr.unblockOutput(mv));
      if (s.arpIgnoreOld !== undefined) await onDst(addr.arpIgnore(d, s.arpIgnoreOld));
      if (s.addrMoved) await src.run(addr.add(mv, ctx.moveIp.srcDev), { allowFail: true });
    }
    await verdict(ctx.local!, 'rollback');
  });
  return reachable;
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
  if (o.moveIp) steps.push(`[dst] ${commandLine(addr.announce(ctx.moveIp!.arping, o.moveIp, ctx.moveIp!.dstDev, 'OLD'))}`);
  steps.push('commit: the source is destroyed; CRIU lock rules removed. Any failure before: the source resumes.');
  return steps;
}

/** Where the container is after a refusal before the freeze: as the preflight last saw it. */
function beforeFreeze(ctx: Context): Report['runningOn'] {
  if (ctx.sourceStatus === undefined) return 'unknown';
  return ctx.sourceStatus === 'running' ? 'source' : 'none';
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
  };
  try {
    await runChecks(ctx, SOURCE_CHECKS);
    report.transport = ctx.transport;
    report.memoryBytes = ctx.memoryBytes;
    const endpoint = resolveEndpoint(opts);
    ctx.ssh = await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () => SshConnection.connect(endpoint));
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
      const r = await switchover(ctx, images);
      report.outcome = 'migrated';
      report.exitCode = EXIT.OK;
      report.runningOn = 'destination';
      report.downtimeMs = r.downtimeMs;
      report.bytesMoved = r.bytesMoved;
      report.finalDump = r.finalDump;
    }
  } catch (err) {
    const e = err as Error;
    if (e instanceof AfterFreezeError) {
      report.outcome = e.exitCode === EXIT.ROLLED_BACK ? 'rolled-back' : 'unsafe';
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
    if (ctx.ssh && !ctx.ssh.alive && ctx.remote) await ensureConnection(ctx);
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
