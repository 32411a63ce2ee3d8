// `migrate replicate CONTAINER HOST`: keeps restorable checkpoints of a running container
// on a standby host (checkpoint.ts, store.ts), and a lease there (lease.ts,
// leasefile.ts) that lets `migrate failover` restore the latest one only once the source
// has stopped. Two loops share one SSH connection: the lease's renewal, every interval,
// and the checkpoints, one after the other (never two at once). A third party, the fence
// (fence.ts), runs beside the tool and outlives it: once the count of the last confirmed
// renewal runs out, it pauses the container, tool or no tool; the tool resumes it only
// once a renewal is confirmed again (so no failover happened meanwhile). A renewal
// answered "failed over" means the container now runs on the standby: it stays paused
// here, and the tool says where it went.
import { packageVersion } from '../../version.js';
import fs from 'node:fs/promises';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { EXIT, MigrateError, PreflightError, type ExitCode } from '../../errors.js';
import { RemoteHost } from '../../host.js';
import { DEFAULTS, type Options, type ReplicaOptions } from '../../options.js';
import type { Progress } from '../../progress.js';
import { runc } from '../../runc.js';
import { SshConnection } from '../../ssh/connection.js';
import { resolveEndpoint } from '../../ssh/endpoint.js';
import { interruption } from '../../interrupt.js';
import { writeBridge } from '../files/rsync-bridge.js';
import { checkDestination } from '../preflight/destination.js';
import { checksOn } from '../preflight/run.js';
import { checkSource } from '../preflight/source.js';
import { lockContainer, pidAlive, RunningAlready } from '../recover/intent.js';
import { localSession, type Session } from '../session.js';
import { CheckpointFailed, takeCheckpoint, type Checkpoint, type CheckpointSetup } from './checkpoint.js';
import {
  FENCE_SCRIPT,
  orphanedReplicaDirs,
  OWNER_FILE,
  pauseUnlessPaused,
  type ReplicaOwner,
  uptimeCs,
  writeDeadline,
} from './fence.js';
import { leaseMargin, renew, type LeaseRecord, type RenewAnswer } from './lease.js';
import { withLease } from './leasefile.js';
import { stateOn } from './failover.js';
import { criuSafePath } from '../switchover/hold.js';
import { TriggerSocket, triggerWord } from './trigger.js';
import { migrate } from '../migrate.js';
import type { Report } from '../../report.js';
import { LIST_SCRIPT, parseListing, preDumpRef, PRUNE_CHAINS_SCRIPT, restorable } from './store.js';
import { dropLocalChain, type PreDump, takePreDump } from './chain.js';
import { holderOf } from './basis.js';

/** One line of replicate's output (--json: one JSON object per line). */
export type ReplicaEvent =
  | ({ event: 'checkpoint' } & Omit<Checkpoint, 'pruned'> & { pruned: number })
  | { event: 'checkpoint-failed'; seq: number; error: string }
  | { event: 'fenced'; at: string; why: string }
  | { event: 'unfenced'; at: string; pausedMs: number }
  | { event: 'lease-lost'; at: string; error: string }
  | { event: 'failed-over'; at: string; by: string }
  | { event: 'trigger'; text: string; action: 'checkpoint' | 'migrate' | 'ignored' }
  | { event: 'migrated'; report: Report }
  | ({ event: 'pre-dump' } & PreDump)
  | { event: 'pre-dump-failed'; chain: string; n: number; error: string }
  | { event: 'pre-dump-skipped'; chain: string; n: number; why: string };

export interface ReplicaReport {
  command: 'replicate';
  /** The tool's version. */
  version: string;
  container: string;
  standby: string;
  exitCode: ExitCode;
  checkpoints: number;
  failedCheckpoints: number;
  latest?: { seq: number; frozenAt: string; bytes: number; freezeMs: number };
  /** Where the container runs now, as confirmed at the end. */
  container_state?: string;
  stoppedBy?: string;
  error?: { message: string; hint?: string };
}

/** What the run holds that must outlive it when it cannot be given back. */
interface Holding {
  fence?: Fence;
  /** A lease this run took may be in force, not released: the fence must stay. */
  leaseMayBeHeld: boolean;
  /** The run is stopping. */
  stopping: boolean;
  /** The hold directory of the checkpoint under way, if any, and its dump's end. */
  holdDir?: string;
  dumpDone?: Promise<unknown>;
  /** Releases the lease once it is taken (the error path's). */
  release?: () => Promise<'released' | 'failed-over' | 'unreachable'>;
}

export async function replicate(
  opts: Options,
  r: ReplicaOptions,
  progress: Progress,
  emit: (e: ReplicaEvent) => void,
): Promise<ReplicaReport> {
  const report: ReplicaReport = {
    command: 'replicate',
    version: packageVersion(),
    container: opts.container,
    standby: opts.destination,
    exitCode: EXIT.OK,
    checkpoints: 0,
    failedCheckpoints: 0,
  };
  const cleanups: Array<() => Promise<void>> = [];
  const holding: Holding = { leaseMayBeHeld: false, stopping: false };
  let run: ReplicaRun | undefined;
  try {
    run = await start(opts, r, progress, emit, cleanups, holding);
    await run.loop();
    Object.assign(report, run.summary());
    if (run.migrateAsked) {
      // MIGRATE from the container: replication has stopped and released its lease; the
      // planned migration to the standby is a migration like any other (its report, its exit).
      for (const c of cleanups.splice(0).reverse()) await c().catch((err: Error) => progress.warn(err.message));
      const m = await migrate(opts, progress);
      emit({ event: 'migrated', report: m });
      report.exitCode = m.exitCode;
      if (m.error) report.error = { message: m.error.message, hint: m.error.hint };
    }
  } catch (err) {
    if (run) Object.assign(report, run.summary());
    // A failure with the lease taken: released if the standby can be told, so that the
    // fence can go (otherwise it stays, and pauses the container at the lease's expiry).
    if (
      holding.leaseMayBeHeld &&
      holding.release &&
      (await holding.release().catch(() => 'unreachable')) === 'released'
    ) {
      holding.leaseMayBeHeld = false;
      await settleInFlight(holding);
    }
    const e = err instanceof MigrateError ? err : new MigrateError((err as Error).message, EXIT.INTERNAL);
    report.exitCode = e.exitCode;
    report.error = { message: e.message, hint: e.hint };
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err: Error) => progress.warn(err.message));
  }
  return report;
}

async function start(
  opts: Options,
  r: ReplicaOptions,
  progress: Progress,
  emit: (e: ReplicaEvent) => void,
  cleanups: Array<() => Promise<void>>,
  holding: Holding,
): Promise<ReplicaRun> {
  const local = localSession(opts, progress);
  const { log } = local;
  // One tool per container on this host: a migration and a replication never overlap.
  // The lock names the standby and the replica: a planned migration there stops this run (basis.ts).
  const note = { replicate: { destination: opts.destination, dir: r.dir } };
  const unlock = await lockContainer(DEFAULTS.intentDir, opts.container, note).catch((err: Error) => {
    if (err instanceof RunningAlready)
      throw new PreflightError(
        `a migration or replication of ${opts.container} is already running on this machine (pid ${err.pid})`,
        'Stop it first (SIGINT), or leave it running.',
      );
    throw err;
  });
  cleanups.push(unlock);
  const checks = checksOn(progress, opts.force);
  const source = await checkSource(local, checks, () => undefined);
  const endpoint = resolveEndpoint(opts);
  const ssh = await progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () =>
    SshConnection.connect(endpoint),
  );
  const s: Session = { ...local, ssh, dst: new RemoteHost(ssh, opts.sudo, log) };
  cleanups.push(async () => s.ssh.close());
  const destination = await checkDestination(s, source, checks);
  if (interruption.requested)
    throw new MigrateError(`stopped by ${interruption.signal} before the first checkpoint`, EXIT.INTERRUPTED);

  // The replica's directory, and what it holds already.
  await s.dst.run(['mkdir', '-p', '-m', '0700', path.posix.join(r.dir, 'checkpoints')]);
  const listing = parseListing((await s.dst.run(['sh', '-c', LIST_SCRIPT, 'sh', r.dir])).stdout);

  if (!criuSafePath(opts.workDir))
    throw new PreflightError(
      `--work-dir ${opts.workDir}: CRIU's configuration file cannot name a path with such characters`,
      'Give a --work-dir made of letters, digits and / . _ - only.',
    );
  // This host's work directory: the fence's files, the checkpoints' images on their way.
  // It stays (and the fence in it) while a lease this run took may be in force unreleased.
  const work = await fs.mkdtemp(path.join(opts.workDir, 'runc-migrate-replica.'));
  await fs.chmod(work, 0o700);
  cleanups.push(async () => {
    if (holding.leaseMayBeHeld) {
      progress.warn(
        `the lease on the standby may still be in force: the fence and its directory ${work} stay, and pause ${opts.container} here once it expires (run replicate again to take it back)`,
      );
      return;
    }
    if (holding.fence) await stopFence(holding.fence);
    await fs.rm(work, { recursive: true, force: true });
  });
  // Whose directory this is: a later run of the same container finds it (staleFences).
  const owner: ReplicaOwner = { container: opts.container, runcRoot: opts.runcRoot, pid: process.pid };
  await fs.writeFile(path.join(work, OWNER_FILE), `${JSON.stringify(owner)}\n`);
  const bridge = path.join(work, 'rsync-bridge.sh');
  await writeBridge(bridge);

  // The lease: taken before anything is written into the store, and the fence armed
  // before it is asked for (the count it is given starts before the request is sent).
  // The trigger socket first: a path that cannot be bound is refused before any lease.
  let deliver: (text: string) => void = () => undefined;
  const trigger = r.triggerSocket
    ? await TriggerSocket.listen(r.triggerSocket, (t) => deliver(t)).catch((err: Error) => {
        throw new PreflightError(err.message, 'Make its directory first (the one bind-mounted into the container).');
      })
    : undefined;
  if (trigger) cleanups.push(() => trigger.close());
  const holder = holderOf(opts);
  const sentAt = await uptimeCs();
  const fence = r.fence === 'freeze' ? await startFence(s, work, sentAt, r, source.state.created) : undefined;
  holding.fence = fence;
  holding.leaseMayBeHeld = true;
  holding.release = () => releaseLease(s, r);
  const first = await withLease(s.dst, r.dir, (now, lease) => decideRenewal(lease, now, holder, r));
  if (first.answer !== 'renewed') holding.leaseMayBeHeld = false;
  // An earlier run's fence (its tool killed) counts down a deadline nobody renews any
  // more: with this run's lease confirmed and its own fence armed, it is stopped.
  if (first.answer === 'renewed') await stopStaleFences(opts, work, progress);
  if (first.answer === 'failed-over')
    throw new PreflightError(
      `${opts.container} failed over to ${opts.destination} at ${new Date(first.at).toISOString()} (by ${first.by}): it runs there`,
      `Replicating it from here would make a second copy. Remove the copy on this host (runc delete), or move the replica aside on the standby (${r.dir}) once you know which copy is the one to keep.`,
    );
  if (first.answer === 'held')
    throw new PreflightError(
      `the standby's lease for ${opts.container} is held by ${first.by} for ${Math.ceil(first.leftMs / 1000)} s more`,
      'Another replicate of this container, from another host, is running: stop it first.',
    );

  // The tree is the source's; the configuration the standby's own bundle's when it has one
  // (its cgroup, its mounts), else the source's: as a migration's restore would use.
  const srcConfig = JSON.parse(await fs.readFile(path.join(source.state.bundle, 'config.json'), 'utf8')) as {
    root?: { path?: string };
  };
  const rootfs = source.state.rootfs || path.resolve(source.state.bundle, srcConfig.root?.path ?? 'rootfs');
  const config = (destination.bundleConfig ? JSON.parse(destination.bundleConfig) : srcConfig) as typeof srcConfig;
  config.root = { ...config.root, path: 'rootfs' };
  const setup: CheckpointSetup = {
    hosts: s,
    srcRunc: s.srcRunc,
    container: opts.container,
    rootfs,
    config: `${JSON.stringify(config, null, 2)}\n`,
    work,
    bridge,
    dir: r.dir,
    keep: r.keep,
    tcpEstablished: opts.tcpEstablished,
    source: holder,
    freezeLimitS: DEFAULTS.replicaFreezeLimitS,
    deadlineFile: fence?.deadlineFile,
    initPid: source.state.pid,
    tracking: source.mode === 'iterative',
    stopping: () => holding.stopping,
    holding: (dir, dumpDone) => {
      holding.holdDir = dir;
      holding.dumpDone = dumpDone;
    },
  };
  if (source.mode !== 'iterative')
    progress.warn(
      "this kernel does not track dirty memory (soft-dirty): no pre-dumps, each checkpoint is a full dump of the container's memory",
    );
  const latest = restorable(listing);
  const run = new ReplicaRun(
    holding,
    s,
    r,
    setup,
    fence,
    emit,
    latest?.seq,
    Math.max(0, ...listing.complete.map((c) => c.seq), ...listing.partial),
    sentAt + (r.leaseMs - leaseMargin(r.leaseMs)) / 10,
  );
  run.trigger = trigger;
  deliver = (t) => run.onTrigger(t);
  return run;
}

function decideRenewal(
  lease: LeaseRecord | undefined,
  now: number,
  holder: string,
  r: ReplicaOptions,
): { write?: LeaseRecord; result: RenewAnswer } {
  const a = renew(lease, now, holder, r.leaseMs, r.fence);
  return { write: a.answer === 'renewed' ? a.record : undefined, result: a };
}

/** The fence's files and its process (detached: it outlives the tool). */
interface Fence {
  readonly deadlineFile: string;
  readonly stopFile: string;
  readonly pausedFile: string;
  readonly pid: number;
}

async function startFence(
  s: Session,
  work: string,
  sentAt: number,
  r: ReplicaOptions,
  created: string,
): Promise<Fence> {
  const deadlineFile = path.join(work, 'fence-deadline');
  const stopFile = path.join(work, 'fence-stop');
  const pausedFile = path.join(work, 'fence-paused');
  await writeDeadline(deadlineFile, sentAt + (r.leaseMs - leaseMargin(r.leaseMs)) / 10);
  const pause = pauseUnlessPaused(runc.global(s.srcRunc), s.opts.container, created);
  const child = spawn('sh', ['-c', FENCE_SCRIPT, 'runc-migrate-fence', deadlineFile, stopFile, pausedFile, ...pause], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  if (!child.pid) throw new Error('the fence could not be started');
  s.log('source', `fence (pid ${child.pid}): pauses ${s.opts.container} once ${deadlineFile} passes`);
  return { deadlineFile, stopFile, pausedFile, pid: child.pid };
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a stopping run waits for a pre-dump under way. */
const PRE_DUMP_WAIT_MS = 120_000;

/** Stops the fences (and removes the work directories) of earlier runs of this container whose tool is gone. */
async function stopStaleFences(opts: Options, mine: string, progress: Progress): Promise<void> {
  for (const { dir, owner: o } of await orphanedReplicaDirs(path.dirname(mine), opts)) {
    if (dir === mine) continue;
    await fs.writeFile(path.join(dir, 'fence-stop'), '').catch(() => undefined);
    await delay(500);
    await fs.rm(dir, { recursive: true, force: true });
    progress.warn(`stopped the fence of an earlier replicate of ${opts.container} (pid ${o.pid}, gone): ${dir}`);
  }
}

/** Stops the fence and waits for it to end (before its directory goes: it would pause on a missing deadline). */
async function stopFence(f: Fence): Promise<void> {
  await fs.writeFile(f.stopFile, '');
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(f.pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error(`the fence (pid ${f.pid}) did not stop within 3 s`);
}

class ReplicaRun {
  private stopping?: string;
  private wake?: () => void;
  private fencedSince?: number;
  private failedOver?: { at: number; by: string };
  private checkpoints = 0;
  private failed = 0;
  private last?: Checkpoint;
  private leaseErrorShown = false;
  private readonly t0 = performance.now();

  constructor(
    private readonly holding: Holding,
    private readonly s: Session,
    private readonly r: ReplicaOptions,
    private readonly setup: CheckpointSetup,
    private readonly fence: Fence | undefined,
    private readonly emit: (e: ReplicaEvent) => void,
    private prev: number | undefined,
    private seq: number,
    /** Until when (uptime centiseconds) the last confirmed renewal lets the container run. */
    private confirmedUntilCs: number,
  ) {}

  summary(): Partial<ReplicaReport> {
    return {
      checkpoints: this.checkpoints,
      failedCheckpoints: this.failed,
      latest: this.last && {
        seq: this.last.seq,
        frozenAt: new Date(this.last.frozenAt).toISOString(),
        bytes: this.last.bytes,
        freezeMs: this.last.freezeMs,
      },
      stoppedBy: this.stopping,
    };
  }

  private inFlight?: Promise<void>;
  private stopNow?: () => void;
  private readonly stopped = new Promise<void>((resolve) => (this.stopNow = resolve));

  private stop(why: string): void {
    this.stopping ??= why;
    this.stopNow?.();
    this.holding.stopping = true;
    this.wake?.();
  }

  private async sleep(ms: number): Promise<void> {
    if (this.stopping || this.wantNow) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** The pre-dump chain being built (dirty-memory tracking only). */
  private chain?: { id: string; dumps: PreDump[] };
  /** A pre-dump under way (finish waits for it). */
  private preDumping?: Promise<PreDump | { skipped: string }>;
  /** The last chain's first (whole) pre-dump's runc call, ms. */
  private firstPreDumpMs = 0;
  /** Intervals since the last complete checkpoint (a checkpoint comes every chain-length-th, whatever the pre-dumps did). */
  private sinceCheckpoint = 0;

  /** MIGRATE came through the trigger socket. */
  migrateAsked = false;
  /** CHECKPOINT came: the next one starts without waiting for the interval. */
  private wantNow = false;

  onTrigger(text: string): void {
    const word = triggerWord(text);
    this.emit({
      event: 'trigger',
      text,
      action: word === 'CHECKPOINT' ? 'checkpoint' : word === 'MIGRATE' ? 'migrate' : 'ignored',
    });
    if (word === 'CHECKPOINT') {
      this.wantNow = true;
      this.wake?.();
    } else if (word === 'MIGRATE') {
      this.migrateAsked = true;
      this.stop('MIGRATE');
    }
  }

  /** The trigger socket's listener, made before the lease (a bad path then costs nothing). */
  trigger?: TriggerSocket;

  async loop(): Promise<void> {
    const trigger = this.trigger;
    const onSignal = () => this.stop(interruption.signal);
    interruption.stoppers.add(onSignal);
    if (interruption.requested) onSignal();
    const forTimer = this.r.forMs === undefined ? undefined : setTimeout(() => this.stop('--for'), this.r.forMs);
    const renewals = this.renewals();
    // The fence's own word that it paused the container: its file, looked at every 200 ms.
    const watch = setInterval(() => void this.noteFenced(), 200);
    try {
      while (!this.stopping) {
        const began = performance.now();
        if (this.fencedSince === undefined && !this.failedOver) {
          // A checkpoint cut off by a partition may wait long on its copies: once the run
          // stops it is given 5 s more, then left (finish settles its hold).
          this.inFlight = this.step();
          await Promise.race([this.inFlight, this.stopped.then(() => delay(5000))]);
        }
        await this.sleep(Math.max(0, this.r.intervalMs - (performance.now() - began)));
      }
    } finally {
      clearTimeout(forTimer);
      clearInterval(watch);
      await trigger?.close();
      this.trigger = undefined;
      interruption.stoppers.delete(onSignal);
      this.wake?.();
      await renewals;
    }
    await this.finish();
  }

  /**
   * One interval's work: with dirty-memory tracking, a pre-dump on the current chain,
   * and every chain-length-th time (or when the container asked) the checkpoint that ends
   * it; without, a checkpoint each time.
   */
  private async step(): Promise<void> {
    const chainLength = this.setup.tracking ? this.r.chainLength : 1;
    if (this.wantNow || this.sinceCheckpoint + 1 >= chainLength) return this.checkpoint();
    this.sinceCheckpoint++;
    const chain = (this.chain ??= { id: `c${this.seq + 1}-${Date.now().toString(36)}`, dumps: [] });
    const n = chain.dumps.length + 1;
    try {
      if (!this.s.ssh.alive) throw new CheckpointFailed('the SSH connection to the standby is down');
      const last = chain.dumps.at(-1);
      // Twice the last pre-dump's runc call (its freeze, and CRIU's writing after), at least 1 s.
      // A chain's first pre-dump is whole: as long as the last whole dump, at least.
      const longest = last?.dumpMs ?? Math.max(this.firstPreDumpMs, this.last?.parts.dump ?? 0);
      this.preDumping = takePreDump(this.setup, chain.id, n, 2 * Math.max(500, longest)).finally(() => {
        this.preDumping = undefined;
      });
      const d = await this.preDumping;
      if ('skipped' in d) {
        // Not begun: the chain stands, and this interval has none.
        this.emit({ event: 'pre-dump-skipped', chain: chain.id, n, why: d.skipped });
        return;
      }
      chain.dumps.push(d);
      if (n === 1) this.firstPreDumpMs = d.dumpMs;
      this.emit({ event: 'pre-dump', ...d });
    } catch (err) {
      // A pre-dump that failed may have reset the kernel's dirty bits without keeping
      // the pages: nothing may be parented on this chain any more. The next dump is whole.
      this.emit({ event: 'pre-dump-failed', chain: chain.id, n, error: (err as Error).message });
      await dropLocalChain(this.setup, chain.id);
      this.chain = undefined;
    }
  }

  private async checkpoint(): Promise<void> {
    this.wantNow = false;
    const chain = this.chain;
    this.chain = undefined;
    const seq = ++this.seq;
    this.holding.holdDir = undefined;
    this.holding.dumpDone = undefined;
    try {
      if (!this.s.ssh.alive) throw new CheckpointFailed('the SSH connection to the standby is down');
      // Twice the last dump's way to its hold, at least 1 s.
      const parent = chain?.dumps.at(-1);
      const c = await takeCheckpoint(
        this.setup,
        seq,
        this.prev,
        2 * Math.max(500, this.last?.parts.dump ?? 0),
        parent && preDumpRef(parent.chain, parent.n),
      );
      this.prev = seq;
      this.last = c;
      this.checkpoints++;
      this.sinceCheckpoint = 0;
      this.emit({ event: 'checkpoint', ...c, pruned: c.pruned.length });
      await this.pruneChains();
    } catch (err) {
      this.failed++;
      this.emit({ event: 'checkpoint-failed', seq, error: (err as Error).message });
    } finally {
      if (chain) await dropLocalChain(this.setup, chain.id);
    }
  }

  /** The standby's chains no kept checkpoint is parented on (and not the one being built) go. */
  private async pruneChains(): Promise<void> {
    const r = await this.s.dst.run(['sh', '-c', PRUNE_CHAINS_SCRIPT, 'sh', this.r.dir, this.chain?.id ?? ''], {
      allowFail: true,
    });
    // The checkpoint is published: a prune that failed leaves chains for the next one.
    if (r.code !== 0) this.s.progress.warn(`the standby's unused chains were not removed: ${r.stderr.trim()}`);
  }

  /** The lease's loop: a renewal every interval until the run stops. */
  private async renewals(): Promise<void> {
    while (!this.stopping) {
      const began = performance.now();
      await this.renewOnce();
      if (this.failedOver) return;
      // Until the next renewal, or the stop (which then waits on this loop: a long
      // interval would otherwise hold SIGINT, and a migration that stopped the run, that long).
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, this.r.intervalMs - (performance.now() - began)));
        void this.stopped.then(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private async renewOnce(): Promise<void> {
    const sentAt = await uptimeCs();
    try {
      if (!this.s.ssh.alive) await this.reconnect();
      const a = await withLease(
        this.s.dst,
        this.r.dir,
        (now, lease) => decideRenewal(lease, now, holderOf(this.s.opts), this.r),
        Math.min(this.r.intervalMs, 5000),
      );
      if (a.answer === 'failed-over') {
        this.failedOver = { at: a.at, by: a.by };
        this.emit({ event: 'failed-over', at: new Date(a.at).toISOString(), by: a.by });
        this.stop('failed-over');
        return;
      }
      if (a.answer === 'held') {
        this.emit({ event: 'lease-lost', at: new Date().toISOString(), error: `held by ${a.by}` });
        this.stop('lease-held');
        return;
      }
      this.leaseErrorShown = false;
      this.confirmedUntilCs = sentAt + (this.r.leaseMs - leaseMargin(this.r.leaseMs)) / 10;
      if (this.fence) await writeDeadline(this.fence.deadlineFile, this.confirmedUntilCs);
      await this.unfence();
    } catch (err) {
      if (!this.leaseErrorShown)
        this.emit({ event: 'lease-lost', at: new Date().toISOString(), error: (err as Error).message });
      this.leaseErrorShown = true;
      // A connection that went silent is given up (its socket destroyed: end() alone waits
      // on a socket that cannot write), so that the next renewal connects anew.
      this.s.ssh.sever();
    }
  }

  private async reconnect(): Promise<void> {
    await reconnectSession(this.s);
  }

  /** Whether the fence has paused the container: it says so in its file. */
  private async noteFenced(): Promise<void> {
    if (!this.fence || this.fencedSince !== undefined) return;
    const lines = (await fs.readFile(this.fence.pausedFile, 'utf8').catch(() => '')).trim();
    if (!lines.includes('paused') || this.fencedSince !== undefined) return;
    this.fencedSince = performance.now();
    this.emit({
      event: 'fenced',
      at: new Date().toISOString(),
      why: 'the lease could not be renewed in time: the container is paused until the standby confirms a renewal (no failover)',
    });
  }

  /**
   * A renewal was confirmed (or the lease released): no failover happened, and none can
   * before the new count ends. A pause the fence made (its file says so) is undone; a
   * pause of anyone else's is left.
   */
  private async unfence(): Promise<void> {
    if (!this.fence) return;
    const fenced = (await fs.readFile(this.fence.pausedFile, 'utf8').catch(() => '')).includes('paused');
    await fs.rm(this.fence.pausedFile, { force: true });
    const since = this.fencedSince;
    this.fencedSince = undefined;
    if (!fenced || (await this.state()) !== 'paused') return;
    await this.s.src.run(runc.resume(this.s.srcRunc, this.s.opts.container), { allowFail: true });
    this.emit({
      event: 'unfenced',
      at: new Date().toISOString(),
      pausedMs: Math.round(performance.now() - (since ?? performance.now())),
    });
  }

  private state(): Promise<string> {
    return stateOn(this.s.src, this.s.srcRunc, this.s.opts.container);
  }

  /** The end: the lease released (failover refuses a released lease), the fence stopped. */
  private async finish(): Promise<void> {
    // A pre-dump under way is waited for: no hold can end it (it thaws the container by
    // itself), and killing CRIU could leave the container frozen; the lock, and with it a
    // migration, must not come while it still writes.
    if (this.preDumping) {
      const ended = await Promise.race([
        this.preDumping.then(
          () => true,
          () => true,
        ),
        delay(PRE_DUMP_WAIT_MS).then(() => false),
      ]);
      if (!ended)
        this.s.progress.warn(
          `a pre-dump still runs after ${PRE_DUMP_WAIT_MS / 1000} s: it ends by itself (its own limit is 10 minutes)`,
        );
    }
    const released = this.failedOver ? 'failed-over' : await releaseLease(this.s, this.r);
    if (released === 'failed-over') {
      this.failedOver ??= { at: Date.now(), by: 'failover (heard while stopping)' };
      // The container runs on the standby: this copy stays paused (the fence paused it
      // before the failover could happen; paused again here in case --fence none).
      await this.s.src.run(runc.pause(this.s.srcRunc, this.s.opts.container), { allowFail: true });
      if (this.fence) await stopFence(this.fence);
      this.holding.leaseMayBeHeld = false;
      throw new MigrateError(
        `${this.s.opts.container} failed over to ${this.s.opts.destination} at ${new Date(this.failedOver.at).toISOString()} (by ${this.failedOver.by}); the copy here stays paused`,
        EXIT.UNSAFE,
        `The container runs on ${this.s.opts.destination} now. Remove the paused copy here (runc delete --force ${this.s.opts.container}) once you have checked it.`,
      );
    }
    if (released === 'unreachable') {
      // The fence stays: without a released lease a failover may come once it expires.
      throw new MigrateError(
        `stopped (${this.stopping}), but the standby could not be told: the lease stays and the fence (pid ${this.fence?.pid ?? '-'}) keeps watching it`,
        EXIT.UNSAFE,
        this.fence
          ? 'The container is paused here once the lease expires, and a failover may then restore it on the standby: before resuming it by hand, make sure none did (runc state on the standby).'
          : 'With --fence none a failover needs --source or --force: nothing else happens by itself.',
      );
    }
    this.holding.leaseMayBeHeld = false;
    await settleInFlight(this.holding);
    if (this.fence) {
      await stopFence(this.fence);
      // Whatever the fence paused meanwhile (a release that took long): the lease is released.
      await this.unfence();
    }
    const ms = Math.round(performance.now() - this.t0);
    this.s.progress.info(
      `replication of ${this.s.opts.container} stopped (${this.stopping}) after ${Math.round(ms / 1000)} s: ${this.checkpoints} checkpoints on ${this.s.opts.destination}, the lease released; the container runs here`,
    );
  }
}

/**
 * Once the lease is released: a checkpoint's dump still under way is told so (its hold
 * lets CRIU thaw the container whatever the deadline says) and waited for, before its
 * directory goes.
 */
async function settleInFlight(holding: Holding): Promise<void> {
  if (!holding.holdDir || !holding.dumpDone) return;
  for (const f of ['released', 'fail']) await fs.writeFile(path.join(holding.holdDir, f), '').catch(() => undefined);
  await Promise.race([holding.dumpDone, delay(10_000)]);
}

async function reconnectSession(s: Session): Promise<void> {
  const ssh = await SshConnection.connect(s.ssh.endpoint);
  s.ssh = ssh;
  s.dst.useConnection(ssh);
}

/** Marks the lease released (three tries): then failover refuses it, the container running here. */
async function releaseLease(s: Session, r: ReplicaOptions): Promise<'released' | 'failed-over' | 'unreachable'> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      if (!s.ssh.alive) await reconnectSession(s);
      const a = await withLease(
        s.dst,
        r.dir,
        (now, lease) => {
          if (lease?.failedOver) return { result: 'failed-over' as const };
          const renewed = renew(lease, now, holderOf(s.opts), r.leaseMs, r.fence);
          if (renewed.answer !== 'renewed') return { result: 'unreachable' as const };
          return { write: { ...renewed.record, released: true }, result: 'released' as const };
        },
        10_000,
      );
      if (a !== 'unreachable') return a;
    } catch {
      s.ssh.sever();
    }
    await delay(1000);
  }
  return 'unreachable';
}
