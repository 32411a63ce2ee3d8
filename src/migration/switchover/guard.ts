// The destination's guard: one shell snippet, run in one exec channel of the tool's SSH
// connection, that owns everything the migration changes on the destination. Its stdin
// is the channel; it reads the tool's words one line at a time (protocol.ts has them):
//
//   start      [--move-ip] claim the address: arp_ignore 8, its output dropped, address
//              added (the images are copied meanwhile); prints "claimed"
//   "restore"  restore the container STOPPED (CRIU's leave-stopped; bounded: its process
//              group is killed at the deadline), then verify it is whole and stopped (at
//              least one task, every task of its cgroup in state T); prints "restored",
//              "verified". Nothing of the copy runs: no client, peer or shared volume
//              can see it.
//   "commit"   the marker "committed" (the commit point), then every task is continued;
//              [--move-ip] unmuted, arp_ignore back, gratuitous ARP; prints "committed"
//   "hb"       the tool's heartbeat, while the guard waits for its next word
//   anything else, EOF (the tool died, the link broke), no word for heartbeatLossS (a
//              silent partition) or the deadline passing: the copy (if any) is killed and
//              deleted, the claim undone; prints "removed WHY"
//
// Post-copy (lazy): the copy must run during the lazy window, so it is not restored
// stopped. Before the restore the guard starts CRIU's lazy-pages daemon, which
// fetches the memory from the source's lazy page server. Once verified, the copy serves
// at once ([--move-ip] announced; prints "serving") and the lazy window begins. It ends
// with the daemon (prints "lazy-done STATUS"), and the guard decides alone, once: the
// daemon exited 0 by itself (it holds every page its tasks can ask for) and the copy
// runs: committed; anything else (it failed, or the guard killed it): removed. The guard
// kills the daemon on the tool's "rollback", when it read no byte for stallS (a silent
// link), and windowS after it started. Those limits are shorter than the source's
// watchdog's (hold.ts): a daemon the guard kills takes the source's CRIU down with it
// (its TLS session breaks, and CRIU resumes the source). See postcopy.ts.
//
// No agent: the snippet is the whole of it, and it lives exactly as long as the
// migration. It leaves its words in its directory too (log, and the files committed or
// removed), for a later `migrate recover`. It removes only what it restored: a container
// of that name already present is reported ("name-taken") and left alone.
// Pure: this module only builds the text and reads the words.
import { commandLine, quote } from '../../shell.js';
import { GUARD_FILE, GUARD_WORD, REMOVED_BECAUSE, TOOL_WORD } from './protocol.js';
import { reapFunctions, type ReapSpec } from './reap.js';

export interface GuardSpec {
  /** The guard's directory on the destination (its pid, log and markers). */
  dir: string;
  state: string[];
  /** The copy's tasks (runc ps --format json): verified stopped, continued on the commit. */
  ps: string[];
  /**
   * runc's pid file for the restored init: the cgroup the tasks are read from must hold
   * it (with stateDir: the copy's tasks without a runc fork on the frozen path).
   */
  pidFile?: string;
  /**
   * runc's directory for this container name (ROOT/NAME): runc state runs while the
   * images are copied; right before the restore, this directory's absence is checked
   * again (no fork on the frozen path). After it, its state.json names the copy's cgroup.
   */
  stateDir?: string;
  restore: string[];
  /** What a restore killed midway leaves, and where (reap.ts): taken away before the copy is deleted. */
  reap: ReapSpec;
  kill: string[];
  delete: string[];
  /**
   * Seconds from the guard's start until it gives up (removes everything), whatever it is
   * waiting for: the tool's next word, or the restore (whose process group is killed).
   * It ends before the source's hold would resume the source by itself.
   */
  deadlineS: number;
  /** No word from the tool (its heartbeat included) for this long: the copy goes. */
  heartbeatLossS: number;
  /** Post-copy: the restored (running) copy must still run this long before it serves. */
  verifyWindowMs?: number;
  /**
   * Post-copy: CRIU's lazy-pages daemon (foreground), the socket it listens on once ready;
   * stallS: it is killed once it read no byte for this long in the window; windowS: once
   * it has run this long. session: the ss filter that names the daemon's connection to the
   * source ("dst ADDR dport = :PORT").
   */
  lazy?: { daemon: string[]; socket: string; stallS: number; windowS: number; session: string[] };
  /** --move-ip, on the destination. */
  moveIp?: {
    /** Prints the old arp_ignore, then claims (address.ts claim). */
    claim: string[];
    /** Undoes the claim; the old arp_ignore is appended as its last argument (address.ts unclaim). */
    unclaim: string[];
    /** Unmutes after the commit; the old arp_ignore is appended (address.ts unmute). */
    unmute: string[];
    /** The gratuitous ARP, once the copy runs (best effort). */
    garp: string[];
  };
}

/**
 * Shell functions over the copy's tasks (PS prints them as runc ps --format json does):
 * `stopped` succeeds when there is at least one and every one is stopped (else sets bad),
 * `resume` continues them all and succeeds once none is left stopped (else sets
 * left_stopped). The guard has both; migrate recover runs resume (a guard that marked its
 * commit and died before it continued every task).
 */
function taskFunctions(ps: string[], o: { stopped: boolean; pidFile?: string; stateDir?: string }): string {
  // No fork per task: the copy's pids are read once (runc ps), each state with read.
  const tasks = `tasks() { pids=$(${commandLine(ps)} 2>/dev/null | tr -c '0-9' ' '); }
task_state() {
	st=
	while read -r k v _; do
		if [ "$k" = State: ]; then st=$v; return; fi
	done < "/proc/$1/status"
} 2>/dev/null`;
  // The copy's tasks as runc ps finds them, without its fork: its cgroup is read from
  // runc's state.json (cgroup v2: the unified one; v1: the devices controller's, as runc
  // reads it), and its tasks from that cgroup's cgroup.procs. It fails (runc ps then)
  // unless the path is sound, the cgroup has no cgroup below it (runc ps walks those) and
  // holds the restored init.
  const fromCgroup =
    o.pidFile && o.stateDir
      ? `cg_tasks() {
	m=$(sed -n 's/.*"cgroup_paths":{\\([^}]*\\)}.*/\\1/p' ${quote(`${o.stateDir}/state.json`)} 2>/dev/null)
	if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
		case $m in \\"\\":\\"*) top=\${m#\\"\\":\\"} ;; *) return 1 ;; esac
	else
		case $m in *\\"devices\\":\\"*) top=\${m#*\\"devices\\":\\"} ;; *) return 1 ;; esac
	fi
	top=\${top%%\\"*}
	case $top in /sys/fs/cgroup/?*) ;; *) return 1 ;; esac
	[ -f "$top/cgroup.procs" ] || return 1
	for d in "$top"/*/ "$top"/.[!.]*/ "$top"/..?*/; do [ -f "$d/cgroup.procs" ] && return 1; done
	ip=; read -r ip 2>/dev/null < ${quote(o.pidFile)}
	[ -n "$ip" ] || return 1
	pids=
	while read -r p; do pids="$pids $p"; done < "$top/cgroup.procs"
	case " $pids " in *" $ip "*) return 0 ;; esac
	return 1
}`
      : '';
  const stopped = `stopped() {
	${fromCgroup ? 'cg_tasks || tasks' : 'tasks'}
	n=0
	for p in $pids; do
		task_state "$p"
		case "$st" in T|t) n=$((n + 1)) ;; *) bad="task-$p-\${st:-gone}"; return 1 ;; esac
	done
	[ "$n" -gt 0 ] || { bad=no-tasks; return 1; }
}`;
  const resume = `resume() {
	[ -n "\${pids:-}" ] || tasks
	for _ in 1 2 3; do
		left_stopped=
		for p in $pids; do kill -CONT "$p" 2>/dev/null; done
		for p in $pids; do task_state "$p"; case "$st" in T|t) left_stopped="$left_stopped $p" ;; esac; done
		[ -z "$left_stopped" ] && return 0
		sleep 0.01
	done
	return 1
}`;
  return [tasks, fromCgroup, o.stopped ? stopped : '', resume].filter(Boolean).join('\n');
}

/** A command that continues every stopped task of a committed copy (for migrate recover). */
export function resumeCommand(ps: string[]): string[] {
  return [
    'sh',
    '-c',
    `${taskFunctions(ps, { stopped: false })}\nresume || { echo "still stopped:$left_stopped" >&2; exit 1; }`,
  ];
}

export function guardScript(g: GuardSpec): string {
  const mv = g.moveIp;
  const W = GUARD_WORD;
  const F = GUARD_FILE;
  const T = TOOL_WORD;
  const R = REMOVED_BECAUSE;
  // The old arp_ignore is only known at run time: it goes in as the last argument.
  const withOld = (argv: string[]) => `${commandLine(argv)} "$old"`;
  const hb = Math.max(1, Math.floor(g.heartbeatLossS));
  const unmute = mv ? `${withOld(mv.unmute)} >> "$dir/${F.log}" 2>&1 || say ${W.announceFailed} $?` : ':';
  const garp = mv ? `${commandLine(mv.garp)} >/dev/null 2>&1` : ':';
  return `trap '' PIPE HUP
dir=${quote(g.dir)}
mkdir -p "$dir" && echo $$ > "$dir/${F.pid}" && : > "$dir/.mark"
say() { echo "$*" >> "$dir/${F.log}"; echo "$*" 2>/dev/null; }
# Markers are links of a file made at the start: they need no room when the disk is full.
mark() { ln "$dir/.mark" "$dir/$1" 2>/dev/null || : > "$dir/$1"; }
end=$(($(date +%s) + ${Math.max(1, Math.floor(g.deadlineS))}))
# Seconds left before the deadline, 0 once it has passed.
left() { l=$((end - $(date +%s))); if [ "$l" -gt 0 ]; then echo "$l"; else echo 0; fi; }
# The tool's next word into w, its heartbeats skipped. w is empty, and why says so, when
# the channel closes, no word (heartbeat included) comes for ${hb} s, or the deadline passes.
word() {
	while :; do
		t=$(left)
		if [ "$t" -le 0 ]; then w=; why=${R.deadline}; return; fi
		lim=${hb}; why_t=${R.heartbeatLost}
		if [ "$t" -le ${hb} ]; then lim=$t; why_t=${R.deadline}; fi
		w=$(timeout "$lim" sh -c 'IFS= read -r w && printf "%s" "$w"'); rc=$?
		if [ $rc = 124 ]; then w=; why=$why_t; return; fi
		if [ $rc != 0 ]; then w=; why=${R.eof}; return; fi
		why="unexpected-word-$w"
		[ "$w" = ${T.heartbeat} ] || return 0
	done
}
${
  g.lazy
    ? `# runc's view of the copy: sets s (its status).
look() { s=$(${commandLine(g.state)} 2>/dev/null | sed -n 's/^ *"status": *"\\([a-z]*\\)".*/\\1/p'); }`
    : taskFunctions(g.ps, { stopped: true, pidFile: g.pidFile, stateDir: g.stateDir })
}
${reapFunctions(g.reap)}
restored=0
rdone=0
rs=
${mv ? 'old=\n' : ''}lp=
mon=
# Post-copy: the daemon goes first, and how it ended decides (see above).
lazy_wait() {
	wait "$lp"; lrc=$?
	lp=
	[ -z "$mon" ] || kill "$mon" 2>/dev/null
	echo "lazy-pages daemon ended $lrc" >> "$dir/${F.log}"
}
${
  g.lazy
    ? `# The daemon's session ends with a reset before the daemon goes: killed with its socket
# open, it would close it cleanly, and CRIU reads a clean close after its answer to the
# daemon's last word as a complete transfer (it destroys the source). A daemon whose
# socket is already gone is past its close: it is given 5 s to end by itself.
kill_lazy() {
	k=0
	while [ -z "$(ss -K -Htn ${commandLine(g.lazy.session)} 2>/dev/null)" ] && kill -0 "$lp" 2>/dev/null && [ $k -lt 250 ]; do
		k=$((k + 1)); sleep 0.02
	done
	kill -KILL "$lp" 2>/dev/null
}`
    : ''
}
stop_lazy() {
	[ -n "$lp" ] || return 1
	kill_lazy
	lazy_wait
	[ "$lrc" = 0 ]
}
announced=0
${
  g.lazy
    ? `# The lazy window's end: complete only when the daemon exited 0 by itself and the copy runs.
lazy_end() {
	look
	if [ "$lrc" = 0 ] && [ "$s" = running ]; then commit every-page-arrived; fi
	[ "$lrc" = 0 ] && say ${W.died} "\${s:-gone}"
	lp=
	remove lazy-transfer-failed "$lrc"
}`
    : ''
}
# The commit point is the marker: from it on, the copy is never removed.
# Unmuted before the tasks continue: what they send first (a reply held since the freeze) is
# not dropped; the gratuitous ARP once they run.
commit() {
	mark ${F.committed}
	[ $announced = 1 ] || ${unmute}
	${g.lazy ? ':' : `resume || say ${W.resumeFailed}"$left_stopped"`}
	[ $announced = 1 ] || ${garp}
	say ${W.committed}${g.lazy ? ' "$@"' : ''}
	exit 0
}
remove() {
	${g.lazy ? '# A daemon that had ended by itself with every page (before the kill) decides.\n\tif stop_lazy; then lazy_end; fi' : ':'}
	if [ $restored = 1 ]; then
		# A restore that did not end by itself (killed, or failed) may have left its tasks and mounts.
		[ $rdone = 1 ] || reap
		${commandLine(g.kill)} >/dev/null 2>&1
		${commandLine(g.delete)} >/dev/null 2>&1
	fi
	${mv ? `[ -n "$old" ] && ${withOld(mv.unclaim)} >> "$dir/${F.log}" 2>&1` : ':'}
	mark ${F.removed}
	say ${W.removed} "$@"
	exit 0
}
${
  mv
    ? `out=$(${commandLine(mv.claim)} 2>&1); rc=$?
old=$(echo "$out" | sed -n '1{/^[0-9][0-9]*$/p}')
if [ $rc -ne 0 ]; then say ${W.claimFailed} "$(echo "$out" | tail -n 1)"; remove; fi
say ${W.claimed} "$old"`
    : `say ${W.claimed}`
}
# The name is looked up while the images are copied (the tool reads the answer after its
# word "restore"), and its directory checked again right before the restore, fork-free.
if ${commandLine(g.state)} >/dev/null 2>&1${g.stateDir ? ` || [ -e ${quote(g.stateDir)} ]` : ''}; then say ${W.nameTaken}; remove; fi
word; [ "$w" = ${T.restore} ] || remove before-restore "$why"
${
  g.stateDir
    ? `if [ -e ${quote(g.stateDir)} ]; then say ${W.nameTaken}; remove; fi
`
    : ''
}restored=1
${
  g.lazy
    ? `rm -f ${quote(g.lazy.socket)}
${commandLine(g.lazy.daemon)} </dev/null > "$dir/lazy.out" 2>&1 &
lp=$!
# The window's limits: windowS from the daemon's start; once serving, stallS without a byte read.
(
	n=0; idle=0; last=
	while kill -0 $lp 2>/dev/null; do
		sleep 0.5
		n=$((n + 1))
		if [ -e "$dir/serving" ]; then
			r=$(sed -n 's/^rchar: //p' /proc/$lp/io 2>/dev/null)
			if [ "$r" = "$last" ]; then idle=$((idle + 1)); else idle=0; last=$r; fi
		fi
		if [ $idle -ge ${g.lazy.stallS * 2} ]; then echo "lazy window cut: no byte for ${g.lazy.stallS} s" >> "$dir/${F.log}"; kill_lazy; break; fi
		if [ $n -ge ${g.lazy.windowS * 2} ]; then echo "lazy window cut: open for ${g.lazy.windowS} s" >> "$dir/${F.log}"; kill_lazy; break; fi
	done
) &
mon=$!
i=0
while [ ! -S ${quote(g.lazy.socket)} ]; do
	if ! kill -0 $lp 2>/dev/null || [ $i -ge 500 ]; then say ${W.restoreFailed} lazy-pages-daemon "$(tail -n 1 "$dir/lazy.out")"; remove; fi
	i=$((i + 1)); sleep 0.02
done`
    : `# The copy is restored stopped (CRIU's leave-stopped): nothing of it runs before the commit.
printf 'leave-stopped\\n' > "$dir/restore.conf"
export CRIU_CONFIG_FILE="$dir/restore.conf"`
}
# The tool says nothing until "verified" unless it gives up (it sends no heartbeat
# meanwhile): a watcher blocked on the channel sees it close (or any word) at once, kills
# the restore's process group (timeout leads its own) and leaves the file eof. (A
# background job's stdin would be /dev/null: fd 3 carries the channel to it.)
t=$(left); [ "$t" -gt 0 ] || remove ${R.deadline}
exec 3<&0
timeout -s KILL "$t" ${commandLine(g.restore)} > "$dir/restore.out" 2>&1 &
rp=$!
# The restore's start: only what started after it is reaped (reap.ts).
started $rp && rs=$st0
(IFS= read -r _ <&3; : > "$dir/eof"; kill -KILL -$rp $rp 2>/dev/null) &
wp=$!
wait $rp
rc=$?
unset CRIU_CONFIG_FILE
# The watcher goes before the tool may speak again (it reads nothing until then).
kill $wp 2>/dev/null
wait $wp 2>/dev/null
exec 3<&-
# runc refused the name (another container took it after the look above): not ours to remove
# (nor to reap), whether or not the tool went away meanwhile.
if [ $rc -ne 0 ] && grep -qF -e 'container with given ID already exists'${g.stateDir ? ` -e ${quote(`${g.stateDir}: file exists`)}` : ''} "$dir/restore.out" 2>/dev/null; then
	restored=0; say ${W.nameTaken}; remove
fi
[ -e "$dir/eof" ] && { say ${W.restoreFailed} ${R.eof}; remove; }
[ $rc -eq 0 ] || { say ${W.restoreFailed} $rc; remove; }
rdone=1
say ${W.restored}
${
  g.lazy
    ? `sleep ${((g.verifyWindowMs ?? 0) / 1000).toFixed(3)}
look
if [ "$s" != running ]; then say ${W.died} "\${s:-gone}"; remove; fi
say ${W.verified}
${unmute}
${garp}
announced=1
say ${W.serving}
: > "$dir/serving"
# The lazy window: the tool's "rollback" cuts it short (the daemon is killed); the
# channel closing does not (the transfer goes on without the tool).
exec 3<&0
(IFS= read -r x <&3; [ "$x" = ${T.rollback} ] && { echo "lazy window cut by the tool" >> "$dir/${F.log}"; kill_lazy; }) &
wp=$!
exec 3<&-
lazy_wait
kill $wp 2>/dev/null
say ${W.lazyDone} $lrc
lazy_end`
    : `# Whole and stopped: every task of the copy is there and none runs.
stopped || { say ${W.died} "$bad"; remove; }
say ${W.verified}
word; [ "$w" = ${T.commit} ] || remove "$why"
commit`
}
`;
}

/** Parses one line the guard printed: its word and the rest ("restore-failed 1" -> ['restore-failed', '1']). */
export function parseGuardLine(line: string): { word: string; detail: string } {
  const [word, ...rest] = line.trim().split(/\s+/);
  return { word: word ?? '', detail: rest.join(' ') };
}

/** What the guard's files say, once it ended or while it runs: committed, removed, still running, or no trace of it (a reboot wiped them). */
export interface GuardFiles {
  committed: boolean;
  removed: boolean;
  alive: boolean;
  /** Its directory holds its log: false when the guard never started there, or its files were wiped. */
  present: boolean;
}

/** One command that reads the guard's files in DIR (for a later look, over any connection). */
export function guardFilesCommand(dir: string): string[] {
  const d = quote(dir);
  const F = GUARD_FILE;
  return [
    'sh',
    '-c',
    `[ -e ${d}/${F.committed} ] && echo ${F.committed}; [ -e ${d}/${F.removed} ] && echo ${F.removed}; [ -f ${d}/${F.pid} ] && kill -0 "$(cat ${d}/${F.pid})" 2>/dev/null && echo alive; [ -e ${d}/${F.log} ] && echo present; true`,
  ];
}

export function parseGuardFiles(stdout: string): GuardFiles {
  const words = stdout.split('\n').map((l) => l.trim());
  return {
    committed: words.includes(GUARD_FILE.committed),
    removed: words.includes(GUARD_FILE.removed),
    alive: words.includes('alive'),
    present: words.includes('present'),
  };
}
