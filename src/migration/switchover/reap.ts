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

/** A path as /proc/self/mountinfo writes it: space, tab, newline and backslash in octal. */
export function mountinfoPath(p: string): string {
  return p.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * A shell function: `unmount_under ESCAPED REAL` detaches (umount -l) every mount at REAL
 * or below it, deepest first (ESCAPED: REAL as mountinfo writes it, mountinfoPath).
 */
export const UNMOUNT_UNDER = `unmount_under() {
	_l=
	while read -r _ _ _ _ _m _; do
		case $_m in "$1"|"$1"/*) _l="$2\${_m#"$1"}
$_l" ;; esac
	done < /proc/self/mountinfo
	printf '%s\\n' "$_l" | while IFS= read -r _m; do [ -z "$_m" ] || umount -l "$_m" 2>/dev/null; done
}`;

/** The arguments of unmount_under for PATH. */
export function unmountUnder(p: string): string {
  return `unmount_under ${quote(mountinfoPath(p))} ${quote(p)}`;
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
	sed -n 's/.*PID: real \\([0-9][0-9]*\\) virt .*/\\1/p' ${log} 2>/dev/null | while read -r p; do
		if started "$p" && [ "$st0" -ge "\${rs:-0}" ]; then kill -KILL "$p" 2>/dev/null; fi
	done
	${unmountUnder(`${r.stateDir}/criu-root`)}
	${unmountUnder(r.criuWork)}
	[ -e ${sd}/state.json ] || rmdir ${quote(`${r.stateDir}/criu-root`)} ${sd} 2>/dev/null
	true
}`;
}
