// Fault injection for the tests: RUNC_MIGRATE_FAIL_AT=<point> makes the run fail at that
// point, as a real failure there would. Points:
//   page-server  the destination's page server is killed before the dump connects
//   dump         the final dump fails (CRIU is told to give up after writing the images)
//   after-dump   an error right after the dump, before anything is copied
//   copy         the image copy fails
//   sync         the final delta of the files fails (before its rsync runs)
//   restore      the restore fails
//   ssh-drop     the SSH connection is cut after the restore (the rollback reconnects)
//   verify       the check that the restored container runs fails
//   restore-hang the destination's restore hangs (the guard kills it at its deadline)
//   restore-stall, restore-stall-late  the restore stalls inside CRIU, its tasks forked and
//                its mounts made (at CRIU's setup-namespaces, before runc wrote its state; at
//                post-restore, after): the guard kills it at its deadline
//   restore-dies the restored container dies right after the restore (the guard's verify sees it)
//   no-hold      CRIU_CONFIG_FILE is dropped, so the checkpoint ends without the hold
//   window       post-copy: the lazy page server listens, then an error before the restore
//   pages        post-copy: an error as the lazy window begins (the tool cuts it)
//   release-late --move-ip: the source's release of the address starts 1 s late
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { WorkPaths } from './prepare/paths.js';

export const FAULT_POINTS = [
  'page-server',
  'dump',
  'after-dump',
  'copy',
  'sync',
  'restore',
  'ssh-drop',
  'verify',
  'restore-hang',
  'restore-stall',
  'restore-stall-late',
  'restore-dies',
  'no-hold',
  'window',
  'pages',
  'release-late',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

/** The faults a test asked for; production runs with NO_FAULTS (cli.ts reads the environment). */
export interface Faults {
  /** Throws at POINT, as a real failure there would. */
  fail(point: FaultPoint): void;
  /** Whether a fault was asked for at POINT (the caller makes it happen). */
  at(point: FaultPoint): boolean;
  /**
   * The switchover's named points (in order: after-dump, syncing (30 ms into the final
   * delta's rsync, during the copy step), releasing (--move-ip: the source's release of
   * the address just started, during the copy step), copy, restoring, restored, before-prepare, prepared, commit-sent (the
   * word commit written, its answer not read), destination-committed, committed), where a
   * test can make the tool die (RUNC_MIGRATE_KILL_AT=POINT[:SIGNAL], SIGKILL by default),
   * cut its SSH connection (RUNC_MIGRATE_DROP_AT=POINT), run a command and wait for it
   * (RUNC_MIGRATE_RUN_AT=POINT:COMMAND, a silent partition by iptables DROP), leave an
   * empty verdict file in the source's hold (RUNC_MIGRATE_EMPTY_VERDICT_AT=POINT) or fill
   * the source's work directory's file system (RUNC_MIGRATE_FILL_AT=POINT).
   */
  point(point: string, sever: () => void, work: WorkPaths): void;
  /**
   * RUNC_MIGRATE_PAUSE_AT=POINT:FILE makes the tool, at POINT (presynced: after the
   * pre-sync; page-server: once the page server listens, FILE.reached holding the address
   * the dump will use; both before anything is frozen; lazy-window: post-copy, once the
   * copy serves and its memory is still moving), write FILE.reached and wait until FILE
   * exists (at most 60 s), so a test can act at a known moment.
   */
  pause(point: string, info?: string): Promise<void>;
}

export const NO_FAULTS: Faults = {
  fail: () => undefined,
  at: () => false,
  point: () => undefined,
  pause: async () => undefined,
};

/** The faults the test variables ask for (only cli.ts and tests call this). */
export function faultsFrom(env: Record<string, string | undefined>): Faults {
  if (!FAULT_ENV.some((v) => env[v])) return NO_FAULTS;
  const failAt = env.RUNC_MIGRATE_FAIL_AT;
  return {
    fail(point) {
      if (failAt === point) throw new Error(`injected fault at ${point} (RUNC_MIGRATE_FAIL_AT)`);
    },
    at: (point) => failAt === point,
    point(point, sever, work) {
      const [kill, sig] = (env.RUNC_MIGRATE_KILL_AT ?? '').split(':');
      if (kill === point) process.kill(process.pid, (sig as NodeJS.Signals) || 'SIGKILL');
      if (env.RUNC_MIGRATE_DROP_AT === point) sever();
      const run = env.RUNC_MIGRATE_RUN_AT ?? '';
      const colon = run.indexOf(':');
      if (colon > 0 && run.slice(0, colon) === point)
        execFileSync('sh', ['-c', run.slice(colon + 1)], { stdio: 'ignore' });
      if (env.RUNC_MIGRATE_EMPTY_VERDICT_AT === point) closeSync(openSync(path.join(work.holdDir, 'verdict'), 'w'));
      if (env.RUNC_MIGRATE_FILL_AT === point) fill(path.join(work.base, 'fill'));
    },
    async pause(point, info = '') {
      const spec = env.RUNC_MIGRATE_PAUSE_AT ?? '';
      const i = spec.indexOf(':');
      if (i < 0 || spec.slice(0, i) !== point) return;
      const file = spec.slice(i + 1);
      writeFileSync(`${file}.reached`, info);
      const end = Date.now() + 60_000;
      while (!existsSync(file) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    },
  };
}

/** Writes FILE until its file system is full (ENOSPC). */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  try {
    const block = Buffer.alloc(65536, 1);
    for (;;) writeSync(fd, block);
  } catch {
    // ENOSPC: full
  } finally {
    closeSync(fd);
  }
}

/** The test-only variables above: a command the tool leaves to run after it (the watchdog's recover) runs without them. */
export const FAULT_ENV = [
  'RUNC_MIGRATE_FAIL_AT',
  'RUNC_MIGRATE_KILL_AT',
  'RUNC_MIGRATE_DROP_AT',
  'RUNC_MIGRATE_RUN_AT',
  'RUNC_MIGRATE_EMPTY_VERDICT_AT',
  'RUNC_MIGRATE_FILL_AT',
  'RUNC_MIGRATE_PAUSE_AT',
];
