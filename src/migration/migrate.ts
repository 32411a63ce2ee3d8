// One migration from start to end, as stages with typed hand-offs:
//   options -> (settle an unfinished earlier run) -> preflight: facts of the source, then of
//   the destination (nothing changed; all --dry-run runs) -> plan (the method, decided
//   once) -> prepare (what the run holds, on one undo stack) -> the method's runner
//   (runners.ts: pre-sync, pre-copy, switchover) -> report.
// Contract: when this returns, the container runs on exactly one host and the report says
// which (or the report says the migration is in doubt and what settles it); every page
// server, forwarder and work directory is removed, but for what an in-doubt migration's
// recovery needs.
import { EXIT, MigrateError } from '../errors.js';
import { RemoteHost } from '../host.js';
import { DEFAULTS, type Options } from '../options.js';
import type { Progress } from '../progress.js';
import type { Report } from '../report.js';
import { SshConnection } from '../ssh/connection.js';
import { resolveEndpoint } from '../ssh/endpoint.js';
import { NO_FAULTS, type Faults } from './faults.js';
import { modeOf } from './plan/method.js';
import { describePlan, makePlan } from './plan/plan.js';
import { checkDestination } from './preflight/destination.js';
import { checksOn } from './preflight/run.js';
import { checkSource } from './preflight/source.js';
import { prepare } from './prepare/prepare.js';
import { Undo } from './prepare/undo.js';
import { readIntent, removeIntent, writeIntent } from './recover/intent.js';
import { findBasis, holderOf, lockForMigration, removeReplica } from './replica/basis.js';
import path from 'node:path';
import { isRootfs } from './files/rootfs.js';
import { recover } from './recover/recover.js';
import {
  buildReport,
  failureOf,
  type Failure,
  type Results,
  type SeenBeforeFreeze,
  type Stage,
} from './report/build.js';
import { AfterFreezeError, checkInterrupt } from './report/outcome.js';
import { runPlan } from './runners.js';
import { findStale } from './prepare/stale.js';
import { localSession, type LocalSession, type Session } from './session.js';
import { reconnect } from './switchover/shared.js';

export { interruption } from './report/outcome.js';

export async function migrate(opts: Options, progress: Progress, faults: Faults = NO_FAULTS): Promise<Report> {
  const t0 = performance.now();
  const local = localSession(opts, progress, faults);
  const undo = new Undo();
  const record = { done: false };
  const results: Results = {};
  let failure: Failure | undefined;
  let session: Session | undefined;
  let stage = 'start' as Stage;
  let seen: SeenBeforeFreeze = 'not-looked';
  let stoppedReplicate: number | undefined;
  // The stages, in order; each hands its result to the next.
  const stages = async (): Promise<void> => {
    const endpoint = resolveEndpoint(opts);
    for (const w of [endpoint, ...(endpoint.jumps ?? [])].flatMap((e) => e.warnings ?? [])) progress.warn(w);
    const connect = () =>
      progress.phase('connect', `connect to ${endpoint.user}@${endpoint.host}:${endpoint.port}`, () =>
        SshConnection.connect(endpoint),
      );
    // Before anything else: a second run of the same container is refused, the first
    // untouched; a replicate to this destination is stopped (basis.ts).
    const { unlock, stopped, replicaDir: stoppedDir } = await lockForMigration(opts, progress);
    if (unlock) undo.add('release the lock on the container', unlock);
    stoppedReplicate = stopped;
    stage = 'earlier-run';
    const earlier = await settleEarlier(local, connect);
    if (earlier?.ssh) session = sessionOver(local, earlier.ssh);
    if (earlier?.where === 'destination') {
      results.recoveredWhy = 'an earlier migration had committed; it was finished';
      return;
    }
    stage = 'preflight';
    const checks = checksOn(progress, opts.force);
    // What the report says of the container after a later refusal: as this check saw it.
    const source = await checkSource(local, checks, (running) => {
      seen = running ? 'running' : 'not-running';
    });
    results.memoryBytes = source.memoryBytes;
    session ??= sessionOver(local, await connect());
    const s = session;
    const destination = await checkDestination(s, source, checks);
    const facts = { source, destination };
    // This container's replica on the destination: the root filesystem starts from it.
    const replicaDir = stoppedDir ?? path.posix.join(opts.replicaDir, opts.container);
    if (destination.files?.plan.trees.some(isRootfs)) {
      results.replica = await findBasis(s.dst, replicaDir, holderOf(opts));
      if (results.replica) results.replica.stoppedReplicate = stoppedReplicate;
      const b = results.replica;
      if (b)
        progress.info(
          `the destination holds a replica of ${opts.container} (checkpoint ${b.seq}, ${new Date(b.frozenAt).toISOString()}): the root filesystem's files unchanged since are not sent`,
        );
    }
    results.transport = { name: destination.transport, why: destination.transportWhy };
    checkInterrupt();
    stage = 'plan';
    const plan = makePlan(s, facts);
    if (opts.dryRun) {
      results.plan = [...describePlan(plan, facts), ...(await staleLines(s))];
      for (const line of results.plan) progress.info(`  ${line}`);
      results.dryRun = true;
      return;
    }
    const kind = plan.method.kind;
    results.mode = kind === 'pre-copy' ? modeOf(plan.method) : kind;
    stage = 'prepare';
    const b = results.replica;
    const res = await prepare(s, facts, plan, undo, b && { rootfs: b.rootfs, frozenAtS: b.frozenAt / 1000 });
    results.files = res.files?.report;
    stage = 'run';
    results.migrated = await runPlan({ s, facts, plan, res, undo, results, record });
    if (results.migrated.lazy) results.lazy = results.migrated.lazy;
  };
  try {
    await stages();
  } catch (err) {
    failure = failureOf(err, stage, seen);
  } finally {
    // Every exit path: the undo stack, over a new connection if the old one dropped.
    // (Only once prepare may have made something there: before it, nothing waits on the destination.)
    if (session && !session.ssh.alive && (stage === 'prepare' || stage === 'run')) await reconnect(session);
    await undo.release((m) => progress.warn(m));
    if (results.replica && results.migrated && !failure && session) {
      if (await reconnect(session)) await removeReplica(session.dst, results.replica, progress);
      else
        progress.warn(
          `the replica ${results.replica.dir} on the destination could not be removed (no connection): remove it there`,
        );
    }
    session?.ssh.close();
    if (record.done) results.remoteLeft = await settleRecord(local, !failure, undo.left[0]);
    if (stoppedReplicate !== undefined && !(results.migrated && !failure))
      progress.warn(
        `migrate replicate (pid ${stoppedReplicate}) was stopped for this migration, which did not move ${opts.container}: start it again to keep its standby current`,
      );
  }
  return buildReport(opts, progress, results, failure, performance.now() - t0);
}

/** --dry-run: the work directories of dead runs that a run would remove first, on each host. */
async function staleLines(s: Session): Promise<string[]> {
  const lines: string[] = [];
  for (const [where, host, parent] of [
    ['source', s.src, s.opts.workDir],
    ['destination', s.dst, s.opts.remoteWorkDir],
  ] as const)
    for (const dir of await findStale(host, parent, DEFAULTS.intentDir, []))
      lines.push(`a run would first remove ${dir} on the ${where} (the work directory of a run that is gone)`);
  return lines;
}

function sessionOver(local: LocalSession, ssh: SshConnection): Session {
  return { ...local, ssh, dst: new RemoteHost(ssh, local.opts.sudo, local.log) };
}

/**
 * After a migration that ended on one host with the other confirmed clean (committed, or
 * rolled back): the record goes, unless the destination's work directory (the images:
 * the container's memory) could not be removed (REMOTELEFT). Then the record stays,
 * marked committed or rolled-back, so that migrate recover removes it once the
 * destination can be reached; returned for the report (exit 5 after a commit; a
 * rollback stays exit 4).
 */
async function settleRecord(
  s: LocalSession,
  committed: boolean,
  remoteLeft: string | undefined,
): Promise<string | undefined> {
  try {
    if (!remoteLeft) {
      await removeIntent(s.intentFile);
      return undefined;
    }
    const rec = await readIntent(s.intentFile);
    if (rec) await writeIntent(s.intentFile, { ...rec, phase: committed ? 'committed' : 'rolled-back' });
    s.progress.warn(
      `the destination's work directory ${remoteLeft} (the images: the container's memory) could not be removed`,
    );
  } catch (err) {
    s.progress.warn(`the record ${s.intentFile}: ${(err as Error).message}`);
  }
  return remoteLeft;
}

/**
 * A record of an unfinished migration of this container is settled first (as migrate
 * recover would), when it went to the same destination. Returns where the container
 * ended and the connection it opened, or undefined when there was nothing to settle.
 * --dry-run settles nothing: it says what a run would do.
 */
async function settleEarlier(
  s: LocalSession,
  connect: () => Promise<SshConnection>,
): Promise<{ where?: 'source' | 'destination'; ssh?: SshConnection } | undefined> {
  const { opts, progress } = s;
  const rec = await readIntent(s.intentFile).catch((err: Error) => {
    throw new MigrateError(
      err.message,
      EXIT.PREFLIGHT,
      `Nothing was frozen. Look at the record: it describes a migration of ${opts.container} that did not finish; remove it only once that container runs on exactly one host.`,
    );
  });
  if (!rec) return undefined;
  if (rec.destination !== opts.destination || rec.srcRunc.root !== s.srcRunc.root) {
    throw new MigrateError(
      `an unfinished migration of ${opts.container} (runc root ${rec.srcRunc.root}) to ${rec.destination} (started ${rec.startedAt}) must be settled first`,
      EXIT.PREFLIGHT,
      `Run: migrate recover ${opts.container} ${rec.destination}`,
    );
  }
  if (opts.dryRun) {
    progress.warn(
      `an earlier migration of ${opts.container} did not finish (${rec.phase}): a run would settle it first, as migrate recover would (--dry-run leaves it)`,
    );
    return undefined;
  }
  progress.warn(
    `an earlier migration of ${opts.container} did not finish (${rec.phase}): settling it first, as migrate recover would`,
  );
  const ssh = await connect();
  const env = {
    src: s.src,
    dst: new RemoteHost(ssh, opts.sudo, s.log),
    warn: (m: string) => progress.warn(m),
    info: (m: string) => progress.info(m),
  };
  const r = await progress
    .phase('recover', 'settle the earlier migration', () => recover(s.intentFile, env))
    .catch((err: unknown) => {
      ssh.close();
      throw err;
    });
  if (r?.runningOn === 'in-doubt' || r?.runningOn === 'kept' || r?.runningOn === 'nowhere') {
    ssh.close();
    const doubt = r.runningOn === 'in-doubt';
    throw new AfterFreezeError(
      doubt
        ? `an earlier migration of ${opts.container} is in doubt: ${r.why}`
        : `an earlier migration of ${opts.container}: ${r.why}`,
      EXIT.UNSAFE,
      doubt
        ? `Run migrate recover ${opts.container} ${opts.destination} once the destination can be reached.`
        : `Run migrate recover ${opts.container} ${opts.destination} and read what it says.`,
      [],
      'unknown',
      doubt,
    );
  }
  return { where: r?.runningOn, ssh };
}
