// What changed in the synced trees between the start of the pre-sync and the freeze, from
// the change log (changelog.ts), and the final delta's list made from it. Pure: events
// and file facts in, sets and lists out.
//
// Why no change can be missed (the argument the final delta rests on):
//   - The log's watches are in place on every directory of a tree before the pre-sync's
//     rsync first looks at it. A change made before rsync looked is seen by rsync (it
//     transfers what it finds). A change made after is an event: the kernel queues it
//     when the system call that made it returns, whoever made it (the container, a deploy
//     on the host, root), whatever time stamps it leaves.
//   - Every kind of change is an event in the directory that holds the name: contents
//     (write, truncate, fallocate and hole punching, copy_file_range: IN_MODIFY),
//     metadata (mode, owner, times, xattrs and ACLs, link count: IN_ATTRIB), names
//     (create, link, symlink, mknod, mkdir: IN_CREATE; unlink, rmdir: IN_DELETE; rename:
//     IN_MOVED_FROM and IN_MOVED_TO). The directory's own time stamps change with its
//     names: it is listed too.
//   - A directory that appears (made, or moved in or within the tree) is sent whole: what
//     happened inside it before a watch could have been added is in it. Events named by a
//     moved directory's old path are sent as well; a path that no longer exists is
//     deleted on the destination, which is right, since the source no longer has it.
//   - After the freeze, a mark made in the log's own directory is read back: the kernel's
//     queue is in order, so every event queued before the freeze has been read.
//   - A lost event is known: a queue overflow is an event itself, a watcher that died or
//     could not watch every directory says so. Then the final delta walks the trees
//     (rootfs.ts), as it did before the log.
//   - Hard links: a change made through one name (contents, owner, mode) shows under the
//     others, with no event in their directories; and rsync or tar rewrite a changed file
//     as a new inode, which would cut its other names on the destination. So every name of
//     the inode a listed path has now, or had when the watches were placed, is listed with
//     it. The names come from the watcher's walk (every regular file's inode) and from the
//     events (a name made later is itself listed, and its inode read at the freeze): a
//     name that exists at the freeze existed at the walk or was made after it. A file with
//     names outside the synced trees can change through them with no event here: such
//     files are always listed.
//   - Listed files are compared by content (rsync --ignore-times): a rewrite of the same
//     size with its time stamp set back is not skipped.
// What the log cannot see, and nothing here tries to: a writer outside the container
// that writes through a shared mapping (pages change with no system call; the container's
// own mappings are listed at the freeze, tasks.ts), a change made below the tree's file
// system (an overlay's layers, a block device written directly), and a change after the
// freeze by a writer outside the container (no freeze can stop it).
import path from 'node:path';

/** inotify(7) event bits the log asks for, and those it reads. */
export const IN = {
  MODIFY: 0x2,
  ATTRIB: 0x4,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  Q_OVERFLOW: 0x4000,
  IGNORED: 0x8000,
  ONLYDIR: 0x01000000,
  DONT_FOLLOW: 0x02000000,
  ISDIR: 0x40000000,
} as const;

/** The changes the log saw, as absolute paths on the source. */
export interface ChangeSet {
  /** Paths changed or named by an event (they may no longer exist). */
  touched: Set<string>;
  /** Directories that appeared: sent whole. */
  whole: Set<string>;
}

export const emptyChanges = (): ChangeSet => ({ touched: new Set(), whole: new Set() });

/** Adds one event, in the directory DIR (the watch's path), about NAME ('' for the directory itself). */
export function recordEvent(set: ChangeSet, dir: string, mask: number, name: string): void {
  if (mask & (IN.IGNORED | IN.Q_OVERFLOW)) return;
  const p = name ? path.join(dir, name) : dir;
  set.touched.add(p);
  if (name && mask & (IN.CREATE | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO)) set.touched.add(dir);
  if (mask & IN.ISDIR && mask & (IN.CREATE | IN.MOVED_TO)) set.whole.add(p);
}

/** A file with more than one name: its inode, its link count, the names the trees hold. */
export interface Linked {
  nlink: number;
  names: Set<string>;
}

/** Facts about a listed path on the source at the freeze (lstat), undefined when it no longer exists. */
export interface PathFacts {
  ino: number;
  nlink: number;
  file: boolean;
  dir: boolean;
}

export interface DeltaList {
  /** Entries for rsync --files-from, relative to the tree: a path, or DIR/. for a directory sent with its contents. */
  entries: string[];
  /** The changed paths (relative, sorted; "." for the tree's root), whether they exist or not. */
  paths: string[];
  /** Directories that appeared (relative): sent whole. */
  whole: string[];
}

const inside = (root: string, p: string) => p === root || p.startsWith(root.endsWith('/') ? root : root + '/');

/**
 * The final delta's list for the tree at ROOT (absolute, on the source):
 *   touched: changed paths (from the log, and the files the frozen tasks hold for writing),
 *   appeared: directories that appeared (the log's whole set),
 *   dirsUnder: every directory below one of those, on its file system (found at the freeze),
 *   links: the trees' multiply-linked files by inode,
 *   facts: lstat of a path at the freeze (undefined: it does not exist).
 * A path below something that is no longer a directory (a file, a symlink, nothing) is
 * left out: that ancestor changed kind since the pre-sync, so it is listed itself (or
 * sits in a directory sent whole), and replacing or deleting it on the destination
 * takes what was below it. Listing the path would make rsync follow a symlink, or fail.
 */
export function deltaList(o: {
  root: string;
  touched: Iterable<string>;
  appeared: Iterable<string>;
  dirsUnder: (dir: string) => string[];
  /** The walk's regular files by inode, and each name's inode then. */
  links: Map<number, Linked>;
  inodeOf: (p: string) => number | undefined;
  /** Files with names outside the trees. */
  linkedOutside: Iterable<string>;
  facts: (p: string) => PathFacts | undefined;
}): DeltaList {
  const root = path.normalize(o.root).replace(/(.)\/+$/, '$1');
  const rel = (p: string) => path.relative(root, p) || '.';
  /** Every directory between the root and P (both excluded) is a real directory. */
  const reachable = (p: string) => {
    for (let a = path.dirname(p); a !== root && inside(root, a); a = path.dirname(a)) {
      if (!o.facts(a)?.dir) return false;
    }
    return true;
  };
  const paths = new Set<string>();
  const add = (p: string) => {
    if (inside(root, p) && reachable(p)) paths.add(p);
  };
  for (const p of o.touched) add(p);
  for (const p of o.linkedOutside) add(p);
  // Every name of an inode a listed path has now or had at the walk.
  const byInode = new Map<number, string[]>();
  const inodes = new Set<number>();
  for (const p of paths) {
    const f = o.facts(p);
    if (f?.file) {
      byInode.set(f.ino, [...(byInode.get(f.ino) ?? []), p]);
      if (f.nlink > 1) inodes.add(f.ino);
    }
    const then = o.inodeOf(p);
    if (then !== undefined && (o.links.get(then)?.nlink ?? 1) > 1) inodes.add(then);
  }
  for (const ino of inodes) {
    for (const n of o.links.get(ino)?.names ?? []) add(n);
    for (const n of byInode.get(ino) ?? []) add(n);
  }
  const entries = new Set<string>();
  const whole: string[] = [];
  for (const d of o.appeared) {
    if (!inside(root, d) || !reachable(d) || !o.facts(d)?.dir) continue;
    whole.push(rel(d));
    for (const sub of o.dirsUnder(d)) entries.add(`${rel(sub)}/.`);
  }
  for (const p of paths) if (p !== root) entries.add(rel(p));
  // The root's own metadata: listed as "." (with its first level: rsync has no other way).
  if (paths.has(root)) entries.add('.');
  return { entries: [...entries].sort(), paths: [...paths].map(rel).sort(), whole };
}
