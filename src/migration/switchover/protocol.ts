// The switchover's protocol, written once: the words the tool and the destination's guard
// say to each other, the source's hold verdicts, and the marker files each leaves for a
// later `migrate recover`. The shell the hosts run (guard.ts, hold.ts) is generated from
// these names; source.ts, destination.ts, lazy.ts, recover.ts, recovery.ts and the tests read them from here.
//
// The rules the words serve (README "Safety", DESIGN "Under partitions"):
//   - The destination's copy is restored stopped and runs only on COMMIT: before that it
//     has no effect anyone can see, so removing it undoes everything.
//   - The guard removes its copy on anything but COMMIT: EOF, a word it does not expect,
//     HEARTBEAT missing for heartbeatLossS, its own deadline. Its deadline is strictly
//     earlier than the hold's (plan.ts checks the margin, the tool re-checks it at CLAIMED).
//   - The tool resumes the source itself only once the destination is confirmed clean;
//     otherwise the hold's later deadline does.
//   - Once the guard has marked COMMITTED, nothing resumes the source again.
//   - Post-copy's lazy window is decided by the guard alone, from its daemon's exit: 0 by
//     itself (every page) commits, anything else removes. The tool and the source's
//     watchdog follow it (postcopy.ts, hold.ts); their limits are longer than the guard's.

/** What the tool says to the guard, one line each. */
export const TOOL_WORD = {
  /** Restore the copy (stopped; running during post-copy's lazy window). */
  restore: 'restore',
  /** The commit: the copy runs, the address is announced. */
  commit: 'commit',
  /** Remove the copy (any word but commit does; this one says so). */
  rollback: 'rollback',
  /** The tool is alive: sent while the guard waits for its next word. */
  heartbeat: 'hb',
} as const;

/** What the guard says (the first word of each line it prints; it also logs them). */
export const GUARD_WORD = {
  claimed: 'claimed',
  claimFailed: 'claim-failed',
  restored: 'restored',
  /** The copy is restored, whole and stopped (every task of it in state T). */
  verified: 'verified',
  restoreFailed: 'restore-failed',
  /** The copy is gone or not stopped right after the restore. */
  died: 'died',
  nameTaken: 'name-taken',
  /** Post-copy: the copy serves (the lazy window is open). */
  serving: 'serving',
  lazyDone: 'lazy-done',
  /** After the commit: the copy's tasks could not all be continued (the detail says which). */
  resumeFailed: 'resume-failed',
  announceFailed: 'announce-failed',
  committed: 'committed',
  removed: 'removed',
} as const;

/** The marker files in the guard's directory (links of one file made at its start). */
export const GUARD_FILE = {
  pid: 'pid',
  log: 'log',
  /** Written before the copy is continued: the commit point. */
  committed: 'committed',
  removed: 'removed',
} as const;

/** Why the guard removed its copy (the detail of its "removed" line). */
export const REMOVED_BECAUSE = {
  eof: 'channel-closed',
  heartbeatLost: 'heartbeat-lost',
  deadline: 'deadline',
} as const;

/**
 * The source's hold verdicts (hold.ts): the file `verdict` (prepared, lazy, or a
 * rollback), then for a prepared hold the file `final` (commit or rollback). Each is
 * written beforehand as .v-WORD and decided by a hard link.
 */
export const VERDICT = {
  prepared: 'prepared',
  lazy: 'lazy',
  commit: 'commit',
  rollback: 'rollback',
  /** The hold saw the tool's process gone before any verdict. */
  orphaned: 'rollback-orphaned',
  /** The hold's own deadline passed before any verdict. */
  timeout: 'rollback-timeout',
} as const;
export const VERDICTS = Object.values(VERDICT);
export type VerdictWord = (typeof VERDICT)[keyof typeof VERDICT];

/** The tool's heartbeat, and how long the guard waits without any word before it removes its copy. */
export const HEARTBEAT = {
  intervalMs: 1000,
  lossS: 10,
} as const;

/**
 * What else the tool leaves on the destination for the length of a migration (the page
 * server, the keepers of TLS keys, port rules and sysctls) ends when its channel closes
 * or goes quiet this long: sshd does not see a silent partition, so a closed channel is
 * not enough. The tool writes a line to each of those channels every intervalMs.
 */
export const KEEPALIVE = {
  intervalMs: 5000,
  lossS: 30,
} as const;

/**
 * A wait on lines that each come within a time limit, in shell. dash (Debian's sh) has no
 * `read -t`, so without bash each line is read by its own `timeout L sh -c read`: two
 * programs started a line, about 100 ms of CPU each time in the test VMs (1 vCPU, TCG),
 * where two armed commands fed a line a second made a CPU-bound job take 2.16 s instead
 * of 1.50 s, beside the final dump. Where bash is installed (Debian and Red Hat hosts
 * have it), its `read -t` times each line and nothing is started per line; the fallback
 * stays for hosts without it.
 */
const HAS_BASH = 'command -v bash >/dev/null 2>&1';

/**
 * Shell: returns once FD closes or stays quiet for L seconds, with q set to the status
 * that ended the wait: 142 exactly when quiet (bash's read -t; timeout's 124 mapped to it).
 */
function quietWait(fd: number, l: number): string {
  return `if ${HAS_BASH}; then bash -c 'while :; do IFS= read -r -t ${l} _ || exit $?; done' <&${fd}; q=$?; else q=0; while :; do timeout ${l} sh -c 'IFS= read -r _' <&${fd} || { q=$?; break; }; done; [ $q = 124 ] && q=142; fi`;
}

/** Shell: returns once its stdin (FD) closes or stays quiet for KEEPALIVE.lossS seconds. */
export function untilQuiet(fd = 0): string {
  return quietWait(fd, KEEPALIVE.lossS);
}

/**
 * Shell: waits on its stdin's lines (the tool's keepalive, every KEEPALIVE.intervalMs)
 * and runs COMMAND only if they stop coming for L seconds (KEEPALIVE.lossS: a silent
 * partition); its stdin closing (the tool ended it, died, or lost the connection, which
 * also ends whatever the command would stop) runs nothing.
 */
export function whenQuiet(command: string, l: number = KEEPALIVE.lossS): string {
  // A wait killed by a signal (137, 143) is not quiet and runs nothing.
  return `${quietWait(0, l)}; if [ $q = 142 ]; then ${command}; fi`;
}

/** The line that starts a command armed by armedCommand(). */
export const ARMED_GO = 'go';

/**
 * A command started ahead of its time (the image copy's tars, the guard's shell: started
 * before the freeze, off its path), as argv: it waits for the line ARMED_GO on its stdin,
 * then runs ARGV in its place, on the same stdin (the line consumed, nothing after it).
 * Empty lines are the tool's keepalive (keeper.ts keepAlive), every HEARTBEAT.intervalMs:
 * it lives only while the final dump runs. Its stdin closing, any other line, or
 * HEARTBEAT.lossS of quiet (a silent partition) end it without running ARGV.
 */
export function armedCommand(argv: readonly string[]): string[] {
  const l = HEARTBEAT.lossS;
  // A line is complete only with its newline: a "go" cut short by EOF runs nothing.
  const bash = `while IFS= read -r -t ${l} w; do [ -z "$w" ] && continue; [ "$w" = ${ARMED_GO} ] && exec "$@"; exit 1; done; exit 1`;
  const sh = `while w=$(timeout ${l} sh -c 'IFS= read -r w && printf "%s" "$w"'); do [ -z "$w" ] || break; done; [ "$w" = ${ARMED_GO} ] && exec "$@"`;
  return ['sh', '-c', `${HAS_BASH} && exec bash -c '${bash}' sh "$@"; ${sh}`, 'sh', ...argv];
}

/**
 * The least time between the guard's deadline and the hold's: the guard must have
 * removed its copy (killed and deleted a stopped container) strictly before the source
 * may resume by itself. plan.ts keeps guardMarginS above it; the tool checks, when the
 * guard says CLAIMED, that the guard's start has not eaten into it.
 */
export const MIN_MARGIN_S = 5;
