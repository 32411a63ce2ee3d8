// The change log of the synced trees on the source: every change from the start of the
// pre-sync to the freeze, from the kernel's inotify events (why that finds every change:
// changes.ts). The watcher is a short Perl program (perl-base is Essential on Debian and
// its derivatives; Node cannot read inotify itself, and inotifywait drops a queue
// overflow without a word). It watches every directory of the trees, reports the regular
// files it meets on the way (their inodes: the names of a hard-linked file), and then one
// record per event:
//   W <wd> <dir>            a watch
//   L <ino> <nlink> <path>  a regular file
//   R <watches>             every directory is watched
//   E <wd> <mask> <name>    an event
//   O                       the kernel's queue overflowed: events were lost
//   X <message>             it cannot go on (exits)
// fields separated by tabs (the last one may hold any byte but NUL), records ended by NUL.
// It exits once the tool (its pid) is gone.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { emptyChanges, recordEvent, IN, type ChangeSet, type Linked } from './changes.js';

/** inotify_init1 and inotify_add_watch, by the source's architecture (the tool runs there). */
const SYSCALLS: Record<string, [number, number]> = {
  x64: [294, 254],
  arm64: [26, 27],
  riscv64: [26, 27],
  loong64: [26, 27],
  ia32: [332, 292],
  arm: [360, 317],
  ppc64: [318, 276],
  s390x: [324, 285],
};

export function inotifySyscalls(arch: string): [number, number] | undefined {
  return SYSCALLS[arch];
}

const MASK =
  IN.MODIFY |
  IN.ATTRIB |
  IN.MOVED_FROM |
  IN.MOVED_TO |
  IN.CREATE |
  IN.DELETE |
  IN.DELETE_SELF |
  IN.MOVE_SELF |
  IN.ONLYDIR |
  IN.DONT_FOLLOW;

/** The watcher: perl -e WATCHER INIT1 ADD_WATCH MASK TOOLPID DIR... (the first DIR is the log's mark directory). */
export const WATCHER = String.raw`
use strict; use warnings;
my ($init1, $addw, $mask, $tool, @roots) = @ARGV;
$| = 1;
sub out { print STDOUT join("\t", @_), "\0" or exit 1; }
my $fd = syscall($init1 + 0, 0x80000);
if ($fd < 0) { out('X', $!{EMFILE} ? "inotify_init1: $! (fs.inotify.max_user_instances)" : "inotify_init1: $!"); exit 1; }
open(my $in, '<&=', $fd) or do { out('X', "fdopen: $!"); exit 1; };
my $n = 0;
for my $root (@roots) {
  my @st = lstat($root) or do { out('X', "$root: $!"); exit 1; };
  my $dev = $st[0];
  my @dirs = ($root);
  while (@dirs) {
    my $d = pop @dirs;
    my $wd = syscall($addw + 0, $fd + 0, "$d", $mask + 0);
    if ($wd < 0) {
      next if $!{ENOENT} || $!{ENOTDIR};
      if ($!{ENOSPC}) { out('X', "more directories than fs.inotify.max_user_watches allows ($n watched): raise it (sysctl -w fs.inotify.max_user_watches=N)"); exit 1; }
      out('X', "inotify_add_watch $d: $!"); exit 1;
    }
    out('W', $wd, $d); $n++;
    opendir(my $dh, $d) or next;
    while (defined(my $e = readdir $dh)) {
      next if $e eq '.' || $e eq '..';
      my $p = "$d/$e";
      my @s = lstat($p) or next;
      if (-d _) { push @dirs, $p if $s[0] == $dev; }
      elsif (-f _) { out('L', $s[1], $s[3], $p); }
    }
    closedir $dh;
  }
}
out('R', $n);
while (1) {
  my $rin = ''; vec($rin, $fd, 1) = 1;
  my $nf = select(my $rout = $rin, undef, undef, 1);
  exit 0 unless kill(0, $tool);
  next if $nf <= 0;
  my $got = sysread($in, my $buf, 262144);
  if (!defined $got) { next if $!{EINTR} || $!{EAGAIN}; out('X', "read: $!"); exit 1; }
  my $off = 0;
  while ($off + 16 <= $got) {
    my ($wd, $m, $cookie, $len) = unpack('l L L L', substr($buf, $off, 16));
    my $name = substr($buf, $off + 16, $len);
    $name =~ s/\0+$//;
    $off += 16 + $len;
    if ($m & 0x4000) { out('O'); next; }
    out('E', $wd, $m, $name);
  }
}
`;

export class ChangeLog {
  private readonly dirs = new Map<number, string>();
  private readonly set: ChangeSet = emptyChanges();
  /** The trees' regular files when the watches were placed: by inode (names, link count), and each name's inode. */
  readonly links = new Map<number, Linked>();
  readonly inodeOf = new Map<string, number>();
  /** Files with names outside the trees (more links than names in them): always compared. */
  readonly linkedOutside: string[] = [];
  /** Directories watched once it started. */
  watched = 0;
  /** Why the log cannot be trusted (events may be lost); undefined while it holds. */
  lost?: string;
  private ready?: (watches: number) => void;
  private markWd?: number;
  private marks = new Map<string, () => void>();
  private markSeq = 0;
  private buf: Buffer = Buffer.alloc(0);

  private constructor(
    private readonly child: ChildProcess,
    private readonly markDir: string,
  ) {}

  /**
   * Starts the watcher on ROOTS (the trees on the source) and resolves once every
   * directory is watched: after that, any change is either seen by a walk that starts
   * later, or an event. markDir: an empty directory of the tool's own.
   */
  static async start(o: {
    roots: string[];
    markDir: string;
    timeoutMs: number;
    log: (line: string) => void;
  }): Promise<ChangeLog> {
    const calls = inotifySyscalls(process.arch);
    if (!calls) throw new Error(`no inotify system call numbers for the architecture ${process.arch}`);
    await fsp.mkdir(o.markDir, { recursive: true, mode: 0o700 });
    const argv = [
      '-e',
      WATCHER,
      String(calls[0]),
      String(calls[1]),
      String(MASK),
      String(process.pid),
      o.markDir,
      ...o.roots,
    ];
    o.log(`perl -e WATCHER ${argv.slice(2).join(' ')}`);
    const child = spawn('perl', argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const log = new ChangeLog(child, o.markDir);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const started = new Promise<number>((resolve, reject) => {
      log.ready = resolve;
      child.once('error', (err) => reject(new Error(`perl: ${err.message}`)));
      child.once('exit', (code, sig) => {
        const why =
          log.lost ?? `the watcher exited (${sig ?? code})${stderr.trim() ? `: ${stderr.trim().slice(-300)}` : ''}`;
        log.lost ??= why;
        reject(new Error(why));
        for (const done of log.marks.values()) done();
      });
    });
    child.stdout.on('data', (d: Buffer) => log.take(d));
    const t = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs);
    try {
      log.watched = await started;
      o.log(`change log: ${log.watched} directories watched`);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(t);
    }
    return log;
  }

  private take(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let start = 0;
    for (let end = this.buf.indexOf(0, start); end >= 0; end = this.buf.indexOf(0, start)) {
      this.record(this.buf.subarray(start, end).toString());
      start = end + 1;
    }
    this.buf = this.buf.subarray(start);
  }

  private record(rec: string): void {
    const f = (n: number) => {
      const parts = rec.split('\t');
      return [...parts.slice(0, n - 1), parts.slice(n - 1).join('\t')];
    };
    switch (rec[0]) {
      case 'W': {
        const [, wd, dir] = f(3);
        this.dirs.set(Number(wd), dir);
        if (dir === this.markDir) this.markWd = Number(wd);
        break;
      }
      case 'L': {
        const [, ino, nlink, p] = f(4);
        const l = this.links.get(Number(ino)) ?? { nlink: Number(nlink), names: new Set<string>() };
        l.names.add(p);
        this.links.set(Number(ino), l);
        this.inodeOf.set(p, Number(ino));
        break;
      }
      case 'R':
        for (const l of this.links.values()) if (l.nlink > l.names.size) this.linkedOutside.push(...l.names);
        this.ready?.(Number(rec.slice(2)));
        break;
      case 'E': {
        const [, wd, mask, name] = f(4);
        if (Number(wd) === this.markWd) {
          const seen = this.marks.get(name);
          this.marks.delete(name);
          seen?.();
          break;
        }
        const dir = this.dirs.get(Number(wd));
        // A watch the log does not know cannot be placed: nothing can say what changed.
        if (dir === undefined) this.lost ??= `an event for an unknown watch (${wd})`;
        else recordEvent(this.set, dir, Number(mask), name);
        break;
      }
      case 'O':
        this.lost ??= "the kernel's event queue overflowed (fs.inotify.max_queued_events): events were lost";
        break;
      case 'X':
        this.lost ??= `the watcher stopped: ${rec.slice(2)}`;
        break;
    }
  }

  /**
   * Waits until every event queued before this call has been read: a file made in the
   * mark directory queues one more event, which comes after them (the queue is in order).
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.lost) return;
    const name = `mark-${++this.markSeq}`;
    const seen = new Promise<void>((resolve) => this.marks.set(name, resolve));
    const file = path.join(this.markDir, name);
    let timer: NodeJS.Timeout | undefined;
    try {
      fs.writeFileSync(file, '');
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      await Promise.race([seen, timeout]);
      // Still waited for: the watcher died (lost says why) or is stuck.
      if (this.marks.has(name)) this.lost ??= `the watcher did not report its mark within ${timeoutMs} ms`;
    } finally {
      clearTimeout(timer);
      this.marks.delete(name);
      fs.rmSync(file, { force: true });
    }
  }

  /** What changed so far (the log's own sets: read them, do not keep them). */
  get changes(): ChangeSet {
    return this.set;
  }

  stop(): void {
    this.child.stdout?.destroy();
    this.child.kill('SIGKILL');
  }
}
