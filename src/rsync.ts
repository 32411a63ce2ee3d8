// Every rsync command line the tool runs is built here, and rsync's figures parsed here.
// Pure: no I/O.

/**
 * The host name rsync is given for the destination. rsync never resolves it: it only
 * hands it to the remote shell (the bridge, rootfs.ts), which ignores it.
 */
export const RSYNC_REMOTE_HOST = 'destination';

/**
 * Archive mode with hard links, ACLs and extended attributes (file capabilities live in
 * security.capability), numeric owners (the container's ids, not names looked up on
 * either host), one file system only (never into a mount below the tree), removal of
 * what no longer exists on the source, and holes kept (--sparse: runs of zeros are not
 * written, so a sparse file takes no more room on the destination than on the source).
 */
const ARCHIVE = ['-aHAX', '--sparse', '--numeric-ids', '--one-file-system', '--delete', '--stats'];

/**
 * Only the paths in the file LIST (NUL-separated, relative to the tree; changes.ts), not
 * the tree: no recursion (-a does not recurse with --files-from), a directory's contents
 * only when listed as DIR/. (then what the source no longer has there is deleted); a
 * listed path the source no longer has is deleted (--delete-missing-args), a directory
 * replaced by a file too (--force); every listed file compared by content, whatever its
 * size and time stamp (--ignore-times).
 */
const LISTED = (list: string) => [
  '--dirs',
  '--ignore-times',
  '--delete-missing-args',
  '--force',
  `--files-from=${list}`,
  '--from0',
];

/**
 * A comparison, not a transfer: every difference in contents (checksums), metadata or
 * names is itemized, one line each; nothing is written.
 */
const COMPARE = ['--dry-run', '--checksum', '--itemize-changes'];

/** The differences a comparison itemized (its output lines; --stats lines left out). */
export function comparedDifferences(out: string): string[] {
  const lines: string[] = [];
  for (const l of out.split('\n')) {
    if (/^[<>ch.][fdLDS]/.test(l) || l.startsWith('*deleting')) lines.push(l);
  }
  return lines;
}

/**
 * The environment rsync runs with: the tool's, without any RSYNC_* variable of the user's.
 * rsync reads several: RSYNC_OLD_ARGS stops it escaping the remote side's arguments (the
 * bridge runs them through sh -c as root on the destination: a path with a space would
 * split, a $(...) in one would run), RSYNC_RSH, RSYNC_PROTECT_ARGS and others change how
 * it reaches the destination.
 */
export function rsyncEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !k.startsWith('RSYNC_')) out[k] = v;
  return out;
}

export const rsyncCmd = {
  version: () => ['rsync', '--version'],

  /**
   * Brings the destination's DST to the source's SRC (both directories; their contents
   * are synced, not the directories themselves). shell: the remote-shell program line
   * for rsync's -e, which reaches the destination.
   */
  sync(o: {
    src: string;
    dst: string;
    shell: string;
    list?: string;
    compare?: boolean;
    file?: boolean;
    ignoreTimes?: boolean;
    /** Files unchanged from this directory on the destination are hard-linked, not sent (replication's snapshots). */
    linkDest?: string;
  }): string[] {
    // --blocking-io: rsync leaves its remote shell's stdout non-blocking (ssh copes; the
    // bridge's cat does not: EAGAIN mid-transfer). file: SRC and DST are files, not directories.
    const slash = o.file ? '' : '/';
    return [
      'rsync',
      ...ARCHIVE,
      ...(o.list ? LISTED(o.list) : []),
      ...(o.compare ? COMPARE : []),
      ...(o.ignoreTimes && !o.list ? ['--ignore-times'] : []),
      ...(o.linkDest ? [`--link-dest=${o.linkDest}`] : []),
      '--blocking-io',
      '-e',
      o.shell,
      `${o.src.replace(/\/+$/, '')}${slash}`,
      `${RSYNC_REMOTE_HOST}:${o.dst.replace(/\/+$/, '')}${slash}`,
    ];
  },

  /** The same comparison, of two directories on one host (the tests'). */
  compareLocal(o: { a: string; b: string }): string[] {
    return [
      'rsync',
      ...ARCHIVE.filter((a) => a !== '--stats'),
      ...COMPARE,
      `${o.a.replace(/\/+$/, '')}/`,
      `${o.b.replace(/\/+$/, '')}/`,
    ];
  },
};

/** What one rsync run moved, from its --stats output. */
export interface RsyncFigures {
  /** Regular files whose contents were sent (new or changed). */
  filesTransferred: number;
  /** Entries deleted on the destination. */
  filesDeleted: number;
  /** Bytes of the files transferred (their full size, before the delta algorithm). */
  transferredFileBytes: number;
  /** Bytes that crossed the connection, both ways. */
  wireBytes: number;
  /** All regular-file bytes in the tree. */
  totalFileBytes: number;
}

export function parseRsyncStats(out: string): RsyncFigures {
  const num = (label: RegExp): number => {
    const m = out.match(label);
    return m ? Number(m[1].replace(/[,.](?=\d{3}\b)/g, '')) : 0;
  };
  return {
    filesTransferred: num(/Number of regular files transferred:\s*([\d,.]+)/),
    filesDeleted: num(/Number of deleted files:\s*([\d,.]+)/),
    transferredFileBytes: num(/Total transferred file size:\s*([\d,.]+)/),
    totalFileBytes: num(/Total file size:\s*([\d,.]+)/),
    wireBytes: num(/Total bytes sent:\s*([\d,.]+)/) + num(/Total bytes received:\s*([\d,.]+)/),
  };
}

/**
 * Nanosecond time stamps in the protocol (3.1.3), and arguments of remote paths escaped
 * for the remote shell by default (3.2.4).
 */
export const MIN_RSYNC_VERSION = '3.2.4';

/** "rsync  version 3.2.7  protocol version 31" -> "3.2.7". */
export function parseRsyncVersion(out: string): string | undefined {
  return out.match(/rsync\s+version\s+v?(\d+\.\d+(?:\.\d+)?)/)?.[1];
}

/**
 * What rsync's error output says the destination cannot keep, with what to do: extended
 * attributes or ACLs on a file system without them (rsync only says "Operation not
 * supported" for each file). undefined for any other failure.
 */
export function unsupportedMetadata(stderr: string): { what: string; hint: string } | undefined {
  const acl = /(set_acl|sys_acl_set_file|default_perms_for_dir).*(Operation not supported|\(95\))/.test(stderr);
  const xattr = /(rsync_xal_set|lsetxattr|set_xattr).*(Operation not supported|\(95\))/.test(stderr);
  if (!acl && !xattr) return undefined;
  const what = acl && xattr ? 'ACLs and extended attributes' : acl ? 'ACLs' : 'extended attributes';
  return {
    what,
    hint: `The container's files carry ${what} and the destination's file system does not keep them. Put the destination's bundle on a file system that does (ext4, xfs, btrfs, tmpfs), or remove them on the source (setfacl -b, setfattr -x) if the container does not need them.`,
  };
}
