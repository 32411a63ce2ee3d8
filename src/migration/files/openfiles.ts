// The files a container holds open or mapped must exist on the destination with the
// same size, or CRIU's restore fails after the freeze. Pure helpers: which paths to
// compare, where each lives in the destination's bundle, and what differs.
import path from 'node:path';

/** Paths a process can hold that live outside the bundle or are not files. */
const SKIP = /^\/(dev|proc|sys)(\/|$)|^\/run\/secrets\b| \(deleted\)$/;

export function interestingPath(p: string): boolean {
  return p.startsWith('/') && !SKIP.test(p);
}

/** File paths from /proc/PID/maps (binaries and libraries). */
export function mappedPaths(maps: string): string[] {
  const out = new Set<string>();
  for (const line of maps.split('\n')) {
    const m = line.match(/^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\/.*)$/);
    if (m && interestingPath(m[1])) out.add(m[1]);
  }
  return [...out];
}

export interface BundleMount {
  destination: string;
  source: string;
}

/** Where a path inside the container lives in the destination bundle (bind mounts first). */
export function hostPath(containerPath: string, rootfs: string, mounts: BundleMount[]): string {
  const sorted = [...mounts].sort((a, b) => b.destination.length - a.destination.length);
  for (const m of sorted) {
    const d = m.destination.replace(/\/+$/, '') || '/';
    if (containerPath === d || containerPath.startsWith(d + '/')) {
      return path.join(m.source, containerPath.slice(d.length));
    }
  }
  return path.join(rootfs, containerPath);
}

/** The rootfs and bind mounts of a bundle's config.json, rootfs made absolute. */
export function bundleLayout(configJson: string, bundle: string): { rootfs: string; mounts: BundleMount[] } {
  const c = JSON.parse(configJson) as {
    root?: { path?: string };
    mounts?: Array<{ type?: string; options?: string[]; destination: string; source: string }>;
  } | null;
  const root: string = c?.root?.path ?? 'rootfs';
  const mounts: BundleMount[] = (c?.mounts ?? [])
    .filter((m) => m.type === 'bind' || (m.options ?? []).includes('bind') || (m.options ?? []).includes('rbind'))
    .map((m) => ({ destination: m.destination, source: m.source }));
  return { rootfs: path.isAbsolute(root) ? root : path.join(bundle, root), mounts };
}

export interface FileFact {
  path: string;
  /** Size for regular files; -1 for other types; undefined when missing. */
  size?: number;
  type?: string;
}

/** `stat -c '%s|%F|%n'` output (one file per line) -> facts by host path. */
export function parseStat(stdout: string): Map<string, FileFact> {
  const facts = new Map<string, FileFact>();
  for (const line of stdout.split('\n')) {
    const m = line.match(/^(\d+)\|([^|]+)\|(.*)$/);
    if (!m) continue;
    const type = m[2] === 'regular empty file' ? 'regular file' : m[2];
    facts.set(m[3], { path: m[3], size: type === 'regular file' ? Number(m[1]) : -1, type });
  }
  return facts;
}

export interface Mismatch {
  containerPath: string;
  hostPath: string;
  source: FileFact;
  destination?: FileFact;
}

export function compareFiles(
  src: Map<string, FileFact>,
  dst: Map<string, FileFact>,
  toHost: (p: string) => string,
): Mismatch[] {
  const out: Mismatch[] = [];
  for (const [p, s] of src) {
    const hp = toHost(p);
    const d = dst.get(hp);
    if (!d || d.type !== s.type || d.size !== s.size) {
      out.push({ containerPath: p, hostPath: hp, source: s, destination: d });
    }
  }
  return out;
}

export function describeMismatch(m: Mismatch): string {
  if (!m.destination) return `${m.containerPath} is missing on the destination (${m.hostPath})`;
  if (m.source.type !== m.destination.type)
    return `${m.containerPath} is a ${m.source.type} on the source but a ${m.destination.type} on the destination`;
  return `${m.containerPath} is ${m.source.size} bytes on the source but ${m.destination.size} on the destination (${m.hostPath})`;
}
