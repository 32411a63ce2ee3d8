// The destination's guard: one shell snippet, run in one exec channel of the tool's SSH
// connection, that owns everything the migration changes on the destination. Its stdin
// is the channel; it reads the tool's words one line at a time:
//
//   start      [--move-ip] claim the address: arp_ignore 8, its output dropped, address
//              added (the images are copied meanwhile); prints "claimed"
//   "restore"  restore the container (bounded: its process group is killed at the limit),
//              then verify it stays running for a window; prints "restored", "verified"
//   "commit"   the copy stays; [--move-ip] unmuted, arp_ignore back, gratuitous ARP;
//              prints "committed"
//   anything else, EOF (the tool died, the link broke) or a deadline passing: the copy
//              (if any) is killed and deleted, the claim undone; prints "removed"
//
// Post-copy (lazy): before the restore the guard starts CRIU's lazy-pages daemon, which
// fetches the memory from the source's lazy page server. Once verified, the copy serves
// at once ([--move-ip] announced; prints "serving") and the lazy window begins. It ends
// with the daemon (prints "lazy-done STATUS"): on its own once every page arrived (or
// the transfer broke), or killed on the tool's "rollback" (a TLS session that breaks
// makes the source's CRIU resume the source; the daemon's "done", which it also says
// when its tasks are gone, makes it destroy the source). Then the tool, which knows how
// the source's checkpoint ended, says "commit" or "remove". Without the tool (EOF), the
// guard goes by the daemon: exit 0, or a last word the source may have heard, commits;
// anything else removes. See postcopy.ts.
//
// No agent: the snippet is the whole of it, and it lives exactly as long as the
// migration. It leaves its words in its directory too (log, and the files committed or
// removed), for a later `migrate recover`. It removes only what it restored: a container
// of that name already present is reported ("name-taken") and left alone.
// Pure: this module only builds the text and reads the words.
import { commandLine, quote } from '../shell.js';

export interface GuardSpec {
  /** The guard's directory on the destination (its pid, log and markers). */
  dir: string;
  state: string[];
  restore: string[];
  kill: string[];
  delete: string[];
  /**
   * Seconds from the guard's start until it gives up (removes everything), whatever it is
   * waiting for: the tool's next word, or the restore (whose process group is killed).
   * It ends before the source's hold would resume the source by itself.
   */
  deadlineS: number;
  /** The restored copy must stay running this long before it counts as verified. */
  verifyWindowMs: number;
  /** Post-copy: CRIU's lazy-pages daemon (foreground), the socket it listens on once ready, and its log. */
  lazy?: { daemon: string[]; socket: string; log: string };
  /** --move-ip, on the destination. */
  moveIp?: {
    /** Prints the old arp_ignore, then claims (address.ts claim). */
    claim: string[];
    /** Undoes the claim; the old arp_ignore is appended as its last argument (address.ts unclaim). */
    unclaim: string[];
    /** Unmutes and announces after the commit; the old arp_ignore is appended (address.ts announce). */
    announce: string[];
  };
}

export function guardScript(g: GuardSpec): string {
  const mv = g.moveIp;
  // The old arp_ignore is only known at run time: it goes in as the last argument.
  const withOld = (argv: string[]) => `${commandLine(argv)} "$old"`;
  return `trap '' PIPE HUP
dir=${quote(g.dir)}
mkdir -p "$dir" && echo $$ > "$dir/pid" && : > "$dir/.mark"
say() { echo "$*" >> "$dir/log"; echo "$*" 2>/dev/null; }
# Markers are links of a file made at the start: they need no room when the disk is full.
mark() { ln "$dir/.mark" "$dir/$1" 2>/dev/null || : > "$dir/$1"; }
end=$(($(date +%s) + ${Math.max(1, Math.floor(g.deadlineS))}))
left() { l=$((end - $(date +%s))); [ $l -gt 0 ] && echo $l || echo 1; }
# One line from the tool into w, or nothing once the deadline passes or the channel closes.
word() { w=$(timeout "$(left)" sh -c 'IFS= read -r w && printf "%s" "$w"'); }
# runc's view of the copy: sets s (its status).
look() { s=$(${commandLine(g.state)} 2>/dev/null | sed -n 's/^ *"status": *"\\([a-z]*\\)".*/\\1/p'); }
restored=0
old=
lp=
# Post-copy: the daemon goes first, and how it ended decides (see above).
lazy_wait() {
	wait $lp; lrc=$?
	lp=
	echo "lazy-pages daemon ended $lrc" >> "$dir/log"
}
stop_lazy() {
	[ -n "$lp" ] || return 1
	kill -KILL $lp 2>/dev/null
	lazy_wait
	[ $lrc = 0 ]
}
announced=0
commit() {
	mark committed
	${mv ? `[ $announced = 1 ] || ${withOld(mv.announce)} >> "$dir/log" 2>&1 || say announce-failed $?` : ':'}
	say committed "$@"
	exit 0
}
remove() {
	if stop_lazy; then commit every-page-arrived; fi
	if [ $restored = 1 ]; then
		${commandLine(g.kill)} >/dev/null 2>&1
		${commandLine(g.delete)} >/dev/null 2>&1
	fi
	${mv ? `[ -n "$old" ] && ${withOld(mv.unclaim)} >> "$dir/log" 2>&1` : ':'}
	mark removed
	say removed "$@"
	exit 0
}
${
  mv
    ? `out=$(${commandLine(mv.claim)} 2>&1); rc=$?
old=$(echo "$out" | sed -n '1{/^[0-9][0-9]*$/p}')
if [ $rc -ne 0 ]; then say claim-failed "$(echo "$out" | tail -n 1)"; remove; fi
say claimed "$old"`
    : 'say claimed'
}
word; [ "$w" = restore ] || remove before-restore
if ${commandLine(g.state)} >/dev/null 2>&1; then say name-taken; remove; fi
restored=1
${
  g.lazy
    ? `rm -f ${quote(g.lazy.socket)}
${commandLine(g.lazy.daemon)} </dev/null > "$dir/lazy.out" 2>&1 &
lp=$!
i=0
while [ ! -S ${quote(g.lazy.socket)} ]; do
	if ! kill -0 $lp 2>/dev/null || [ $i -ge 500 ]; then say restore-failed lazy-pages-daemon "$(tail -n 1 "$dir/lazy.out")"; remove; fi
	i=$((i + 1)); sleep 0.02
done`
    : ''
}
# The tool says nothing until "verified" unless it gives up: meanwhile a watcher blocked
# on the channel sees it close (or any word) at once, kills the restore's process group
# (timeout leads its own) and leaves the file eof. (A background job's stdin would be
# /dev/null: fd 3 carries the channel to it.)
exec 3<&0
timeout -s KILL "$(left)" ${commandLine(g.restore)} > "$dir/restore.out" 2>&1 &
rp=$!
(IFS= read -r x <&3; : > "$dir/eof"; kill -KILL -$rp $rp 2>/dev/null) &
wp=$!
wait $rp
rc=$?
[ -e "$dir/eof" ] && { kill $wp 2>/dev/null; say restore-failed channel-closed; remove; }
if [ $rc -ne 0 ]; then kill $wp 2>/dev/null; say restore-failed $rc; remove; fi
say restored
# The copy must still run once the window has passed: a copy that dies within it (it
# cannot come back) is not committed. runc's word on it, at the end.
sleep ${(g.verifyWindowMs / 1000).toFixed(3)}
# The watcher goes before the tool may speak again (it reads nothing until then).
kill $wp 2>/dev/null
wait $wp 2>/dev/null
exec 3<&-
[ -e "$dir/eof" ] && remove
look
if [ "$s" != running ]; then say died "\${s:-gone}"; remove; fi
say verified
${
  g.lazy
    ? `${mv ? `${withOld(mv.announce)} >> "$dir/log" 2>&1 || say announce-failed $?` : ':'}
announced=1
say serving
# The lazy window: only "rollback" cuts it short (the daemon is killed); the channel
# closing does not.
exec 3<&0
(IFS= read -r x <&3; [ "$x" = rollback ] && kill -KILL $lp 2>/dev/null) &
wp=$!
exec 3<&-
lazy_wait
kill $wp 2>/dev/null
say lazy-done $lrc
# How it ends is the source's to say (the tool reads how its checkpoint ended): "commit"
# (it was destroyed: every page had arrived) or "remove" (it resumed). Without the tool:
# the daemon's own end, and whether the source can have heard its last word.
w=$(timeout 120 sh -c 'IFS= read -r w && printf "%s" "$w"')
[ "$w" = commit ] && commit every-page-arrived
[ "$w" = remove ] && remove lazy-transfer-failed
if [ $lrc = 0 ] || { grep -q 'Disconnect from the page server' ${quote(g.lazy.log)} && ! grep -q "page server doesn't answer" ${quote(g.lazy.log)}; }; then commit every-page-arrived; fi
remove lazy-transfer-failed`
    : `word; [ "$w" = commit ] || remove
commit`
}
`;
}

/** Parses one line the guard printed: its word and the rest ("restore-failed 1" -> ['restore-failed', '1']). */
export function parseGuardLine(line: string): { word: string; detail: string } {
  const [word, ...rest] = line.trim().split(/\s+/);
  return { word: word ?? '', detail: rest.join(' ') };
}

/** What the guard's files say, once it ended or while it runs: committed, removed, still running. */
export interface GuardFiles {
  committed: boolean;
  removed: boolean;
  alive: boolean;
}

/** One command that reads the guard's files in DIR (for a later look, over any connection). */
export function guardFilesCommand(dir: string): string[] {
  const d = quote(dir);
  return ['sh', '-c', `[ -e ${d}/committed ] && echo committed; [ -e ${d}/removed ] && echo removed; [ -f ${d}/pid ] && kill -0 "$(cat ${d}/pid)" 2>/dev/null && echo alive; true`];
}

export function parseGuardFiles(stdout: string): GuardFiles {
  const words = stdout.split('\n').map((l) => l.trim());
  return { committed: words.includes('committed'), removed: words.includes('removed'), alive: words.includes('alive') };
}
