// Every runc command line the tool runs is built here, and runc's output parsed here.
// Pure: no I/O.

export interface RuncGlobal {
  /** The runc binary. */
  runc: string;
  root: string;
  /** The criu binary runc should exec (runc --criu); undefined: criu from PATH. */
  criu?: string;
}

const base = (g: RuncGlobal) => [g.runc, '--root', g.root, ...(g.criu ? ['--criu', g.criu] : [])];

export const runc = {
  state: (g: RuncGlobal, name: string) => [...base(g), 'state', name],
  list: (g: RuncGlobal) => [...base(g), 'list', '--format', 'json'],
  version: (g: RuncGlobal) => [g.runc, '--version'],
  /** The container's pids as a JSON array. */
  ps: (g: RuncGlobal, name: string) => [...base(g), 'ps', '--format', 'json', name],
  /** Memory figures for the size estimate (one JSON line, then exit). */
  stats: (g: RuncGlobal, name: string) => [...base(g), 'events', '--stats', name],

  checkpoint(
    g: RuncGlobal,
    name: string,
    o: {
      imagePath: string;
      workPath: string;
      pageServer?: string;
      tcpEstablished: boolean;
      parentPath?: string;
      preDump?: boolean;
      lazyStatusFd?: number;
      /** Replication: the container runs on after the dump (its checkpoint is a copy). */
      leaveRunning?: boolean;
    },
  ): string[] {
    const argv = [...base(g), 'checkpoint', '--image-path', o.imagePath, '--work-path', o.workPath];
    if (o.preDump) argv.push('--pre-dump');
    if (o.leaveRunning) argv.push('--leave-running');
    // Post-copy: memory stays in the frozen tasks; --page-server is where CRIU's lazy page
    // server listens, and the fd gets a NUL once it does.
    if (o.lazyStatusFd !== undefined) argv.push('--lazy-pages', '--status-fd', String(o.lazyStatusFd));
    if (o.parentPath) argv.push('--parent-path', o.parentPath);
    if (o.pageServer) argv.push('--page-server', o.pageServer);
    if (o.tcpEstablished) argv.push('--tcp-established');
    // Locks on the container's own files move with it (flock, fcntl): without this CRIU
    // refuses to dump a task that holds one.
    if (!o.preDump) argv.push('--file-locks');
    argv.push(name);
    return argv;
  },

  restore(
    g: RuncGlobal,
    name: string,
    o: {
      bundle: string;
      imagePath: string;
      workPath: string;
      tcpEstablished: boolean;
      pidFile?: string;
      lazy?: boolean;
      /**
       * The images are spent as they are read: CRIU's --auto-dedup on restore punches out of
       * the pages images each 128 MiB it has read, so the destination needs the container's
       * memory once, not twice, and the restore reuses the pages just freed. Only where the
       * images are worth nothing after a failed restore (a migration: the held source
       * resumes), never a replica's (failover).
       */
      spendImages?: boolean;
    },
  ): string[] {
    const argv = [
      ...base(g),
      'restore',
      '--detach',
      '--bundle',
      o.bundle,
      '--image-path',
      o.imagePath,
      '--work-path',
      o.workPath,
    ];
    if (o.lazy) argv.push('--lazy-pages');
    else if (o.spendImages) argv.push('--auto-dedup');
    if (o.pidFile) argv.push('--pid-file', o.pidFile);
    if (o.tcpEstablished) argv.push('--tcp-established');
    argv.push('--file-locks');
    argv.push(name);
    return argv;
  },

  deleteForce: (g: RuncGlobal, name: string) => [...base(g), 'delete', '--force', name],
  killHard: (g: RuncGlobal, name: string) => [...base(g), 'kill', name, 'KILL'],
  pause: (g: RuncGlobal, name: string) => [...base(g), 'pause', name],
  resume: (g: RuncGlobal, name: string) => [...base(g), 'resume', name],
  /** runc with its global flags, for a command line built elsewhere (the fence's). */
  global: (g: RuncGlobal) => base(g),
};

export interface ContainerState {
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  /** When runc created it (RFC 3339, as runc prints it): tells two containers of one name apart. */
  created: string;
}

export function parseState(stdout: string): ContainerState {
  const j = JSON.parse(stdout);
  return { id: j.id, pid: j.pid, status: j.status, bundle: j.bundle, rootfs: j.rootfs, created: j.created };
}

/** "runc version 1.1.5+ds1" -> "1.1.5" */
export function parseRuncVersion(stdout: string): string | undefined {
  return stdout.match(/runc version (\d+\.\d+\.\d+)/)?.[1];
}

/** Bytes of memory the container uses now, from `runc events --stats`. */
export function parseMemoryUsage(stdout: string): number | undefined {
  const line = stdout.split('\n').find((l) => l.trim().startsWith('{'));
  if (!line) return undefined;
  const j = JSON.parse(line);
  const usage = j?.data?.memory?.usage?.usage;
  return typeof usage === 'number' ? usage : undefined;
}

/** True when runc's stderr says the container does not exist. */
export function isNotExist(stderr: string): boolean {
  return /does not exist|not exist|container .* not found/i.test(stderr);
}

export const MIN_RUNC_VERSION = '1.1.0';
