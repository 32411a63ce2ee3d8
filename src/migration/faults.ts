// Fault injection for the tests: RUNC_MIGRATE_FAIL_AT=<point> makes the run fail at that
// point, as a real failure there would. Points:
//   page-server  the destination's page server is killed before the dump connects
//   dump         the final dump fails (CRIU is told to give up after writing the images)
//   after-dump   an error right after the dump, before anything is copied
//   copy         the image copy fails
//   restore      the restore fails
//   ssh-drop     the SSH connection is cut after the restore (the rollback reconnects)
//   verify       the check that the restored container runs fails
export const FAULT_POINTS = ['page-server', 'dump', 'after-dump', 'copy', 'restore', 'ssh-drop', 'verify'] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export function failPoint(point: FaultPoint): void {
  if (process.env.RUNC_MIGRATE_FAIL_AT === point) {
    throw new Error(`injected fault at ${point} (RUNC_MIGRATE_FAIL_AT)`);
  }
}

export function faultAt(point: FaultPoint): boolean {
  return process.env.RUNC_MIGRATE_FAIL_AT === point;
}
