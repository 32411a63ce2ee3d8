// Every path the tool uses on a host derives from that host's private work directory.
import path from 'node:path';

export interface WorkPaths {
  base: string;
  /** Checkpoint images (the page server writes here too on the destination). */
  images: string;
  /** CRIU's work directory: logs, runc's criu.work. */
  criuWork: string;
  pageServerPid: string;
  pageServerLog: string;
  /** The post-dump hold: script, CRIU config and the verdict files (source only). */
  holdDir: string;
  holdScript: string;
  criuConfig: string;
  dumpedMarker: string;
}

export function workPaths(base: string): WorkPaths {
  const holdDir = path.join(base, 'hold');
  return {
    base,
    images: path.join(base, 'images'),
    criuWork: path.join(base, 'work'),
    pageServerPid: path.join(base, 'page-server.pid'),
    pageServerLog: path.join(base, 'work', 'page-server.log'),
    holdDir,
    holdScript: path.join(holdDir, 'hold.sh'),
    criuConfig: path.join(holdDir, 'criu.conf'),
    dumpedMarker: path.join(holdDir, 'dumped'),
  };
}

/** The name runc gives the dump log inside --work-path. */
export const DUMP_LOG = 'dump.log';
export const RESTORE_LOG = 'restore.log';

/** This migration's private work directories, one on each host. */
export interface WorkDirs {
  readonly local: WorkPaths;
  readonly remote: WorkPaths;
}
