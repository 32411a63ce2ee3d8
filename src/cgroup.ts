// The container's CPU controller, for auto-converge's throttle: where it is (cgroup v2's
// cpu.max, or v1's cpu.cfs_quota_us and cpu.cfs_period_us) and what to write there.
// Pure: parsing and values only (migration/throttle.ts does the I/O).

export type CpuControl =
  /** cgroup v2: DIR/cpu.max holds "QUOTA PERIOD" ("max PERIOD": no limit), DIR/cpu.stat usage_usec. */
  | { version: 2; dir: string }
  /** cgroup v1: DIR/cpu.cfs_quota_us (-1: no limit) and cpu.cfs_period_us; usage in CPUACCT/cpuacct.usage (ns). */
  | { version: 1; dir: string; cpuacct?: string };

/**
 * Where the controller of the process whose /proc/PID/cgroup is TEXT lives, given the
 * v1 hierarchies' mount points (controller list -> mount point, from /proc/self/mounts).
 */
export function cpuControl(
  procCgroup: string,
  v1Mounts: Record<string, string>,
  v2Root = '/sys/fs/cgroup',
): CpuControl | undefined {
  const lines = procCgroup
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const v1 = lines.map((l) => l.split(':')).filter(([, ctrl]) => ctrl && ctrl.split(',').includes('cpu'));
  if (v1.length) {
    const [, ctrl, p] = v1[0];
    const mount = v1Mounts[ctrl];
    if (!mount) return undefined;
    const acct = lines.map((l) => l.split(':')).find(([, c]) => c && c.split(',').includes('cpuacct'));
    const acctMount = acct ? v1Mounts[acct[1]] : undefined;
    return { version: 1, dir: join(mount, p), cpuacct: acct && acctMount ? join(acctMount, acct[2]) : undefined };
  }
  const unified = lines.find((l) => l.startsWith('0::'));
  return unified ? { version: 2, dir: join(v2Root, unified.slice(3)) } : undefined;
}

/**
 * The container's freezer, as CRIU uses it to stop the tasks (runc hands it the cgroup):
 * the file to read and its cgroup version (freezeAsked reads it). Undefined where no
 * freezer is found.
 */
export function freezerControl(
  procCgroup: string,
  v1Mounts: Record<string, string>,
  v2Root = '/sys/fs/cgroup',
): FreezerControl | undefined {
  const lines = procCgroup
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const v1 = lines.map((l) => l.split(':')).find(([, ctrl]) => ctrl && ctrl.split(',').includes('freezer'));
  if (v1) {
    const mount = v1Mounts[v1[1]];
    return mount ? { file: join(join(mount, v1[2]), 'freezer.state'), version: 1 } : undefined;
  }
  const unified = lines.find((l) => l.startsWith('0::'));
  return unified ? { file: join(join(v2Root, unified.slice(3)), 'cgroup.freeze'), version: 2 } : undefined;
}

export interface FreezerControl {
  file: string;
  version: 1 | 2;
}

/**
 * Whether the freezer file's TEXT says a freeze was asked for. v2: cgroup.freeze reads 1
 * from the moment the freeze is asked; v1: freezer.state reads FREEZING, then FROZEN.
 */
export function freezeAsked(version: 1 | 2, text: string): boolean {
  return version === 1 ? /^(FREEZING|FROZEN)/.test(text.trim()) : text.trim() === '1';
}

function join(a: string, b: string): string {
  return `${a.replace(/\/+$/, '')}/${b.replace(/^\/+/, '')}`.replace(/\/+$/, '') || '/';
}

/** v1 mount points by controller list, from /proc/self/mounts ("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,...,cpu,cpuacct 0 0"). */
export function v1Mounts(mounts: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of mounts.split('\n')) {
    const [, dir, type, options] = l.split(' ');
    if (type !== 'cgroup' || !options) continue;
    const ctrls = options
      .split(',')
      .filter((o) => !['rw', 'ro', 'nosuid', 'nodev', 'noexec', 'relatime'].includes(o) && !o.includes('='));
    out[ctrls.join(',')] = dir;
  }
  return out;
}

/** The kernel's least quota, and longest period (microseconds). */
export const MIN_QUOTA_US = 1000;
export const MAX_PERIOD_US = 1_000_000;

/**
 * The quota for a throttle of PCT percent: the CPU time the container used (CPUS, in
 * CPUs, measured before any throttle) less PCT, over PERIOD microseconds. A share too
 * small for the kernel's 1000 us floor lengthens the period (up to 1 s) where the
 * period may change (cgroup v2: one write sets both), else stops at the floor.
 */
export function throttledQuota(
  cpus: number,
  pct: number,
  periodUs: number,
  periodMayGrow = false,
): { quotaUs: number; periodUs: number } {
  const share = cpus * (1 - pct / 100);
  let period = periodUs;
  if (periodMayGrow && share * period < MIN_QUOTA_US)
    period = Math.min(MAX_PERIOD_US, Math.ceil(MIN_QUOTA_US / Math.max(share, 1e-6)));
  return { quotaUs: Math.max(MIN_QUOTA_US, Math.round(share * period)), periodUs: period };
}
