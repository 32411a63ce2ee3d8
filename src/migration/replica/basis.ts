// A planned migration to the host that holds this container's replica (replicate's
// standby): the replica's latest complete checkpoint holds the container's tree as it
// was at that checkpoint's freeze, already on the destination, and the migration's first
// pre-sync of the root filesystem starts from it (files/rootfs.ts: unchanged files are
// copied there instead of sent; what changed since that freeze is compared by content).
// A replicate to that host holds the container's lock: it is stopped first (SIGTERM: it
// releases its lease and ends), since a checkpoint and a migration never overlap. A
// replicate to another host is left alone, and the migration refused.
// Once the migration has committed, the replica is the old copy of a container that now
// runs on that host: it is removed.
import path from 'node:path';
import { EXIT, MigrateError } from '../../errors.js';
import type { Host } from '../../host.js';
import { DEFAULTS, type Options } from '../../options.js';
import type { Progress } from '../../progress.js';
import { liveMigration, lockContainer, lockHolder, RunningAlready } from '../recover/intent.js';
import { LIST_SCRIPT, parseListing, restorable } from './store.js';
import { orphanedReplicaDirs } from './fence.js';
import os from 'node:os';

/** Who replicates a container (the lease's holder, and each checkpoint's source): this host, its runc root, the container. */
export function holderOf(opts: Pick<Options, 'runcRoot' | 'container'>): string {
  return `${os.hostname()}:${opts.runcRoot}:${opts.container}`;
}

/** The replica a planned migration starts from, as its report says. */
export interface ReplicaBasis {
  /** The replica's directory on the destination. */
  dir: string;
  /** Its latest complete checkpoint. */
  seq: number;
  /** That checkpoint's freeze (the source's clock, ms since the epoch). */
  frozenAt: number;
  /** That checkpoint's root filesystem on the destination. */
  rootfs: string;
  /** The replicate this migration stopped (its pid), if one ran. */
  stoppedReplicate?: number;
  /** Removed once the migration committed. */
  removed?: boolean;
}

/** How long a replicate asked to stop (SIGTERM) may take: its checkpoint under way, the lease's release. */
const STOP_REPLICATE_MS = 60_000;

/**
 * The container's lock for a migration. A replicate that holds it and replicates to
 * this migration's destination is stopped (a dry run only says it would be, and takes no
 * lock); any other holder refuses. Refused too while a fence of an earlier replicate is
 * left here (it would pause the container in the middle of the migration). Returns the
 * release, the pid of the replicate stopped, and where its replica is.
 */
export async function lockForMigration(
  opts: Options,
  progress: Progress,
): Promise<{ unlock?: () => Promise<void>; stopped?: number; replicaDir?: string }> {
  let stopped: number | undefined;
  let replicaDir: string | undefined;
  const refuse = (why: string, hint: string): never => {
    const changed =
      stopped === undefined
        ? 'Nothing was changed.'
        : `migrate replicate (pid ${stopped}) was stopped: start it again to keep its standby current.`;
    throw new MigrateError(why, EXIT.PREFLIGHT, `${hint} ${changed}`);
  };
  let unlock: (() => Promise<void>) | undefined;
  try {
    if (opts.dryRun) {
      // A dry run takes no lock: it only says what a run would meet.
      const holder = await lockHolder(DEFAULTS.intentDir, opts.container);
      if (holder) throw holder;
    } else unlock = await lockContainer(DEFAULTS.intentDir, opts.container);
  } catch (err) {
    if (!(err instanceof RunningAlready)) throw err;
    const rep = err.note?.replicate;
    if (!rep)
      return refuse(
        `a migration of ${opts.container} is already running on this machine (pid ${err.pid})`,
        'Wait for it to end.',
      );
    if (rep.destination !== opts.destination)
      return refuse(
        `migrate replicate ${opts.container} ${rep.destination} is running (pid ${err.pid}): a migration to another host would leave its standby stale`,
        `Migrate to ${rep.destination} as replicate names it (the replica there is used and replicate stopped), or stop replicate first (kill -INT ${err.pid}).`,
      );
    replicaDir = rep.dir;
    if (opts.dryRun) {
      progress.warn(`a run would stop migrate replicate (pid ${err.pid}) first, and start from its replica`);
      return { replicaDir };
    }
    progress.info(`stopping migrate replicate (pid ${err.pid}): the migration starts from its replica`);
    try {
      process.kill(err.pid, 'SIGTERM');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
    stopped = err.pid;
    const until = performance.now() + STOP_REPLICATE_MS;
    while (liveMigration(err.pid)) {
      if (performance.now() > until)
        return refuse(
          `migrate replicate (pid ${err.pid}) did not stop within ${STOP_REPLICATE_MS / 1000} s of SIGTERM`,
          `Stop it yourself (kill -INT ${err.pid}) and run the migration again.`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
    // Once: a replicate that took the lock again meanwhile (a unit restarted it) is not chased.
    unlock = await lockContainer(DEFAULTS.intentDir, opts.container).catch((e: Error) =>
      e instanceof RunningAlready
        ? refuse(
            `the lock on ${opts.container} was taken again (pid ${e.pid}) once replicate (pid ${err.pid}) stopped`,
            'Stop what restarts replicate (its unit), then run the migration again.',
          )
        : Promise.reject(e),
    );
  }
  const fences = await orphanedReplicaDirs(opts.workDir, opts);
  if (fences.length) {
    await unlock?.();
    return refuse(
      `a replicate of ${opts.container} (pid ${fences[0].owner.pid}, gone) left its fence in ${fences[0].dir}: it could not release its lease on the standby, and the fence pauses ${opts.container} here once that lease expires`,
      `Run migrate replicate ${opts.container} STANDBY again (it takes the lease back and stops that fence) and stop it with SIGINT (which releases the lease), or remove ${fences[0].dir} once you know no failover will come.`,
    );
  }
  return { unlock, stopped, replicaDir };
}

/** The latest complete checkpoint of the replica in DIR on the destination, when it was taken from this source. */
export async function findBasis(dst: Host, dir: string, holder: string): Promise<ReplicaBasis | undefined> {
  // None where failover ran: that tree was a restored container's own.
  const guard = `[ -d "$1" ] || exit 0\ngrep -q '"failedOver"' "$1/lease" 2>/dev/null && exit 0\n`;
  const r = await dst.run(['sh', '-c', `${guard}${LIST_SCRIPT}`, 'sh', dir], { allowFail: true });
  if (r.code !== 0) return undefined;
  const rec = restorable(parseListing(r.stdout));
  if (!rec || rec.source !== holder) return undefined;
  const rootfs = path.posix.join(dir, 'checkpoints', String(rec.seq), 'bundle', 'rootfs');
  return { dir, seq: rec.seq, frozenAt: rec.frozenAt, rootfs };
}

/** After a committed migration: the replica's store goes (the container runs on that host now). */
export async function removeReplica(dst: Host, b: ReplicaBasis, progress: Progress): Promise<void> {
  const r = await dst.run(['rm', '-rf', '--', b.dir], { allowFail: true });
  if (r.code === 0) b.removed = true;
  else progress.warn(`the replica ${b.dir} on the destination could not be removed: ${r.stderr.trim()}`);
}
