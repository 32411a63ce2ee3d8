// What a restore killed midway leaves on its host, and the shell that takes it away.
//
// runc and CRIU undo their own work when a restore fails, but not when they are killed,
// which the guard does to a restore that outlives its deadline or whose tool went away
// (guard.ts). Measured on the namespace hosts, a `runc restore` whose process group was
// SIGKILLed in CRIU's restore leaves:
//   - the tasks CRIU had forked so far, waiting in its restorer (a futex) for good: the
//     root task leads its own session, so the process group kill misses it;
//   - runc's bind mount of the rootfs at ROOT/NAME/criu-root: `runc delete` then fails
//     with EBUSY, and ROOT/NAME stays (without state.json when runc had not written it
//     yet, which the next run's preflight refuses as a name left behind);
//   - CRIU's cgroup yard, a tmpfs with a cgroup mount per controller, at
//     WORK/.criu.cgyard.XXXXXX: `rm -rf --one-file-system` skips it, and the work
//     directory stays.
// Pure: this module only builds the text.
import { commandLine, quote } from '../../shell.js';

/**
 * A shell function: `unmount_under PATH` detaches (umount -l) every mount at PATH or below
 * it, deepest first, under PATH as given and as resolved (runc and the kernel show mount
 * points with symlinks resolved). Mount points are matched as /proc/self/mountinfo writes
 * them, backslash, space and tab in octal (a newline in a path is not handled).
 */
export const UNMOUNT_UNDER = `unmount_under() {
	_n=0
	for _p in "$1" "$(readlink -f -- "$1" 2>/dev/null)"; do
		_n=$((_n + 1))
		[ -n "$_p" ] || continue
		[ "$_n" = 1 ] || [ "$_p" != "$1" ] || continue
		_e=$(printf '%s\\n' "$_p" | sed -e 's/\\\\/\\\\134/g' -e 's/ /\\\\040/g' -e 's/\t/\\\\011/g')
		_l=
		while read -r _ _ _ _ _m _; do
			case $_m in "$_e"|"$_e"/*) _l="$_p\${_m#"$_e"}
$_l" ;; esac
		done < /proc/self/mountinfo
		printf '%s\\n' "$_l" | while IFS= read -r _m; do [ -z "$_m" ] || umount -l "$_m" 2>/dev/null; done
	done
}`;

/** unmount_under for PATH. */
export function unmountUnder(p: string): string {
  return `unmount_under ${quote(p)}`;
}

/**
 * Removes directories CRIU worked in (rm -rf --one-file-system), after detaching whatever
 * a killed CRIU left mounted below them. One command for every host and caller.
 */
export function removeWorkDirs(dirs: string[]): string[] {
  return [
    'sh',
    '-c',
    `${UNMOUNT_UNDER}\n${dirs.map(unmountUnder).join('\n')}\n${commandLine(['rm', '-rf', '--one-file-system', '--', ...dirs])}`,
  ];
}

export interface ReapSpec {
  /** The restore's --work-path: CRIU's log (restore.log) and its cgroup yard. */
  criuWork: string;
  /** runc's directory for the container name (ROOT/NAME), which the restore created. */
  stateDir: string;
  /** The restore log's file name in criuWork. */
  restoreLog: string;
}

/**
 * Shell functions for the guard: `started PID` sets st0 to the process's start (clock ticks
 * after boot); `reap` takes away what a killed restore left (above). It kills only
 * processes the log names as forked by this restore and that started after it ($rs, the
 * start of the restore's own process): a pid reused since could only be that young by
 * chance within the restore's few seconds. ROOT/NAME goes only when it holds nothing
 * else than the emptied criu-root (rmdir), and only without state.json (with it, runc
 * delete removes it).
 */
export function reapFunctions(r: ReapSpec): string {
  const log = quote(`${r.criuWork}/${r.restoreLog}`);
  const sd = quote(r.stateDir);
  return `started() {
	st0=; _s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ st0 _ <<EOF
\${_s##*) }
EOF
	[ -n "$st0" ]
}
${UNMOUNT_UNDER}
reap() {
	# Only once a restore ran (rs is its start), and only a task that is still the one the
	# log names: started after the restore, and its pid in its own namespace the log's.
	[ -z "\${rs:-}" ] || sed -n 's/.*PID: real \\([0-9][0-9]*\\) virt \\([0-9][0-9]*\\).*/\\1 \\2/p' ${log} 2>/dev/null |
		while read -r p v; do
			if ! started "$p" || [ "$st0" -lt "$rs" ]; then continue; fi
			ns=
			while read -r k a; do [ "$k" = NSpid: ] && ns=$a; done < "/proc/$p/status" 2>/dev/null
			[ "\${ns##*[!0-9]}" = "$v" ] && kill -KILL "$p" 2>/dev/null
		done
	${unmountUnder(`${r.stateDir}/criu-root`)}
	${unmountUnder(r.criuWork)}
	[ -e ${sd}/state.json ] || rmdir ${quote(`${r.stateDir}/criu-root`)} ${sd} 2>/dev/null
	true
}`;
}
