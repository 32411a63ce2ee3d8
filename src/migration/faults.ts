// Fault injection for the tests: RUNC_MIGRATE_FAIL_AT=<point> makes the run fail at that
// point, as a real failure there would. Points: after-dump, copy, restore, verify.
export const FAULT_POINTS = ['after-dump', 'copy', 'restore', 'verify'] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export function failPoint(point: FaultPoint): void {
  if (process.env.RUNC_MIGRATE_FAIL_AT === point) {
    throw new Error(`injected fault at ${point} (RUNC_MIGRATE_FAIL_AT)`);
  }
}
