// The source's side of the two-phase switchover. The final checkpoint runs with a CRIU
// action script (through CRIU_CONFIG_FILE) that, at post-dump, holds: every image is
// written, the tasks are still frozen and their TCP connections locked, and `runc
// checkpoint` waits. The hold then ends on a verdict file in its directory:
//
//   verdict = rollback...  the script exits 1: the dump "fails", the source resumes.
//   verdict = lazy         post-copy: the script starts the window's watchdog (below) and
//                          exits 0; CRIU starts its lazy page server; the tasks stay frozen
//                          until the destination has fetched every page (then CRIU
//                          destroys them) or the transfer breaks (then CRIU resumes them).
//                          See postcopy.ts.
//   verdict = prepared     the tool is committing the destination. From here the hold is
//                          in doubt and never decides alone: it waits for the file
//                          `final` (commit: exit 0, CRIU finishes and runc destroys the
//                          source; anything else: exit 1, the source resumes), written by
//                          the tool or by `migrate recover`.
//
// Before `prepared` the script decides by itself when the tool dies (rollback-orphaned)
// or the hold outlives its limit (rollback-timeout): the destination's guard removes its
// uncommitted copy on its own, so resuming the source is safe. Every verdict file appears
// whole and once: each possible verdict is written when the hold is set up (while there
// is room), and deciding is a hard link of one of them into place. link fails if the
// name exists, so whoever decides first decides for both; a verdict is never seen
// half-written; and deciding needs no free space (a full tmpfs cannot block it). An
// empty or unreadable verdict reads as rollback.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { commandLine, quote as shellQuote } from '../../shell.js';
import type { WorkPaths } from '../prepare/paths.js';
import { VERDICT, VERDICTS, type VerdictWord } from './protocol.js';
import { FAULT_ENV } from '../faults.js';

export { VERDICTS };

export type Verdict = 'commit' | 'rollback';

/**
 * giveBack: --move-ip, the command that puts the service address back on the source; run
 * on every rollback once the tool has marked the address released (the file
 * address-released), before CRIU resumes the tasks.
 */
export function holdScript(
  p: WorkPaths,
  cliPid: number,
  timeoutS: number,
  giveBack?: string[],
  lazy?: boolean,
  failDump = false,
): string {
  const q = shellQuote;
  const ticks = Math.ceil(timeoutS * 50); // 20 ms each (at least: a late tick only makes the deadline later)
  const V = VERDICT;
  return `#!/bin/sh
# runc-migrate: holds the frozen source at CRIU's post-dump until the verdict.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
${failDump ? '# Fault injected by a test (faults.ts): the dump fails after every image is written.\nexit 1\n' : ''}dir=${q(p.holdDir)}
: > ${q(p.dumpedMarker)}
rollback() {
	${giveBack ? `[ -e "$dir/address-released" ] && ${commandLine(giveBack)}` : ':'}
	exit 1
}
# Deciding alone (before any verdict) is a rollback: when even the link cannot be made
# (the directory is gone), the hold rolls back all the same rather than spin.
decide() { ln "$dir/.v-$1" "$dir/verdict" 2>/dev/null || [ -e "$dir/verdict" ] || rollback; }
i=0
while [ ! -e "$dir/verdict" ]; do
	if ! kill -0 ${cliPid} 2>/dev/null; then decide ${V.orphaned}; continue; fi
	i=$((i + 1))
	if [ "$i" -gt ${ticks} ]; then decide ${V.timeout}; continue; fi
	sleep 0.02
done
v=$(cat "$dir/verdict" 2>/dev/null)
${
  lazy
    ? `# Post-copy: the watchdog bounds the lazy page server (it outlives this script and CRIU's
# wait for it); it is given the seconds left of the hold's limit.
if [ "$v" = ${V.lazy} ]; then
	setsid sh "$dir/${WATCHDOG_FILE}" $(((${ticks} - i) / 50)) </dev/null >/dev/null 2>&1 &
	exit 0
fi`
    : `[ "$v" = ${V.lazy} ] && exit 0`
}
[ "$v" = ${V.prepared} ] || rollback
# In doubt: the destination may have committed. Only a final verdict ends this.
while [ ! -e "$dir/final" ]; do sleep 0.05; done
[ "$(cat "$dir/final" 2>/dev/null)" = ${V.commit} ] || rollback
`;
}

/** The watchdog's script in the hold directory (post-copy). */
export const WATCHDOG_FILE = 'watchdog.sh';
/** The watchdog's log (its cuts and their reasons, the recover it ran), and its pid. */
export const WATCHDOG_LOG = 'watchdog.log';
export const WATCHDOG_PID = 'watchdog.pid';

export interface WatchdogSpec {
  /** The lazy page server's port on the source. */
  port: number;
  /** The tool's pid. */
  cliPid: number;
  /** No byte moved on the lazy connection for this long: the page server is cut. */
  stallS: number;
  /** The window's limit, from the destination's connection: the page server is cut. */
  windowS: number;
  /** The checkpoint's exit status file (lazyExitFile). */
  rcFile: string;
  /** The migration's record: while it is there once the tool is gone, the migration is unfinished. */
  record: string;
  /** migrate recover, as the tool was run (its options), for when the tool is gone. */
  recover: string[];
  /** The tool's working directory (its options may name relative paths). */
  cwd: string;
}

/**
 * Post-copy's watchdog on the source, started by the hold on the verdict lazy. CRIU's
 * lazy page server waits for its client without a limit and serves it without one; this
 * bounds both, and outlives the tool:
 *   - no destination connected by the hold's deadline (its first argument: seconds
 *     left), or the tool gone before one connected: the listening socket is destroyed;
 *   - no byte moved on the connection for stallS, or the window open for windowS:
 *     the connection is destroyed.
 * CRIU then fails the lazy dump and resumes the tasks. Both limits are later than the
 * destination guard's own (its daemon is killed first, so a copy it removes can never
 * be whole): see postcopy.ts. Once the checkpoint ended and the tool is gone, a record
 * left behind means nobody settled the window: it runs migrate recover, once.
 */
/**
 * Destroys the lazy page server's sockets on PORT (the kernel's SOCK_DESTROY): a listening
 * one fails CRIU's accept, a connected one its transfer; either way CRIU resumes the tasks.
 */
export function cutLazyServer(port: number): string[] {
  return ['ss', '-K', '-atn', 'sport', '=', `:${port}`];
}

/**
 * migrate recover as this migration was run (NODE and ARGV: process.execPath and
 * process.argv): recover takes the migration's options. For the source's watchdog, which
 * runs it when the tool is gone and its record is left; without the tests' fault variables.
 */
export function recoverArgv(node: string, argv: string[]): string[] {
  return [
    'env',
    ...FAULT_ENV.flatMap((v) => ['-u', v]),
    node,
    argv[1],
    'recover',
    ...argv.slice(2).filter((a) => a !== 'recover'),
  ];
}

export function watchdogScript(p: WorkPaths, w: WatchdogSpec): string {
  const q = shellQuote;
  const sport = `sport = :${w.port}`;
  return `#!/bin/sh
# runc-migrate: bounds post-copy's lazy page server on the source (see hold.ts).
dir=${q(p.holdDir)}
left=\${1:-0}
echo $$ > "$dir/${WATCHDOG_PID}"
log() { echo "$(date +%s) $*" >> "$dir/${WATCHDOG_LOG}"; }
cutat=0
cut() {
	now=$(date +%s)
	[ $((now - cutat)) -ge 5 ] || return 0
	[ "$cutat" -gt 0 ] || log "cut: $1"
	cutat=$now
	${commandLine(cutLazyServer(w.port))} >/dev/null 2>&1
}
start=$(date +%s)
since=
gone=
last=
idle=0
while [ ! -s ${q(w.rcFile)} ]; do
	# The tool settled the window and removed its work directory.
	[ -d "$dir" ] || exit 0
	now=$(date +%s)
	c=$(ss -Htni state established ${sport} 2>/dev/null)
	if [ -n "$c" ]; then
		[ -n "$since" ] || { since=$now; log connected; }
		gone=
		b=$(printf '%s\n' "$c" | grep -o 'bytes_[a-z]*:[0-9]*' | tr '\n' ' ')
		if [ "$b" = "$last" ]; then idle=$((idle + 1)); else idle=0; last=$b; fi
		[ "$idle" -ge ${w.stallS * 2} ] && cut "no byte moved for ${w.stallS} s"
		[ $((now - since)) -ge ${w.windowS} ] && cut "the window outlasted its ${w.windowS} s"
	elif [ -z "$since" ]; then
		kill -0 ${w.cliPid} 2>/dev/null || cut "the tool is gone and no destination connected"
		[ $((now - start)) -ge "$left" ] && cut "no destination connected by the hold's deadline"
	else
		# The connection ended: CRIU is finishing. It has no reason to linger.
		[ -n "$gone" ] || gone=$now
		[ $((now - gone)) -ge ${w.stallS} ] && cut "CRIU lingered ${w.stallS} s after its connection ended"
	fi
	# The status file comes from the tool's wrapper: without it, a last bound.
	[ $((now - start)) -ge $((left + ${w.windowS + 2 * w.stallS})) ] && { log "no exit status by the last bound"; break; }
	sleep 0.5
done
log "checkpoint ended: $(cat ${q(w.rcFile)} 2>/dev/null)"
# The tool settles the window. If it is gone and its record is still there, nobody did.
while kill -0 ${w.cliPid} 2>/dev/null; do [ -d "$dir" ] || exit 0; sleep 0.2; done
[ -e ${q(w.record)} ] || exit 0
log "the tool is gone and its record remains: migrate recover"
(cd ${q(w.cwd)} && exec timeout 900 ${commandLine(w.recover)}) >> "$dir/${WATCHDOG_LOG}" 2>&1
log "migrate recover exited $?"
`;
}

/** CRIU's config file: one option per line; SCRIPT must be a path CRIU's parser takes whole (see criuSafePath). */
export function criuConfig(script: string): string {
  return `action-script ${script}\n`;
}

/**
 * Whether CRIU's config file parser takes PATH as one plain word. Its quoting is not
 * reliable: `action-script "/tmp/wd'ir$(touch pwned)/x"` is refused as "Unsupported
 * configuration file format" (criu 4.2.1), while shorter quoted values with spaces pass.
 */
export function criuSafePath(p: string): boolean {
  return /^[A-Za-z0-9_.\/+=:@%,-]+$/.test(p);
}

/**
 * Sets the hold up in its directory. Returns CRIU's environment, and a link to remove
 * after the checkpoint when the script's own path is not one CRIU's config can name
 * (the link, in LINKDIR, is).
 */
export async function writeHold(
  p: WorkPaths,
  cliPid: number,
  timeoutS: number,
  giveBack: string[] | undefined,
  linkDir: string,
  extraConfig = '',
  watchdog?: WatchdogSpec,
  failDump = false,
): Promise<{ env: Record<string, string>; link?: string }> {
  await fs.mkdir(p.holdDir, { recursive: true, mode: 0o700 });
  for (const v of VERDICTS) await fs.writeFile(path.join(p.holdDir, `.v-${v}`), v + '\n', { mode: 0o600 });
  if (watchdog) await fs.writeFile(path.join(p.holdDir, WATCHDOG_FILE), watchdogScript(p, watchdog), { mode: 0o700 });
  await fs.writeFile(p.holdScript, holdScript(p, cliPid, timeoutS, giveBack, !!watchdog, failDump), { mode: 0o700 });
  let script = p.holdScript;
  let link: string | undefined;
  if (!criuSafePath(script)) {
    await fs.mkdir(linkDir, { recursive: true, mode: 0o700 });
    link = path.join(linkDir, `hold-${process.pid}-${crypto.randomBytes(4).toString('hex')}.sh`);
    await fs.symlink(p.holdScript, link);
    script = link;
  }
  await fs.writeFile(p.criuConfig, criuConfig(script) + extraConfig, { mode: 0o600 });
  return { env: { CRIU_CONFIG_FILE: p.criuConfig }, link };
}

/**
 * Resolves 'dumped' once the script holds, or 'exited' if the checkpoint ended first
 * (the dump failed and CRIU resumed the tasks, or it never ran the hold); 'ready' when
 * READY says so first (post-copy: the lazy page server listens, so the hold never ran).
 */
export async function waitDumped(
  p: WorkPaths,
  checkpointDone: Promise<unknown>,
  ready?: () => boolean,
): Promise<'dumped' | 'exited' | 'ready'> {
  let exited = false;
  checkpointDone.then(
    () => (exited = true),
    () => (exited = true),
  );
  for (;;) {
    if (existsSync(p.dumpedMarker)) return 'dumped';
    if (exited) return existsSync(p.dumpedMarker) ? 'dumped' : 'exited';
    if (ready?.()) return existsSync(p.dumpedMarker) ? 'dumped' : 'ready';
    await new Promise((r) => setTimeout(r, 3));
  }
}

/**
 * Writes FILE (verdict or final) in the hold directory whole and only if it does not
 * exist yet. Returns the content in force: ours, or whoever wrote it first.
 */
export async function decide(holdDir: string, file: 'verdict' | 'final', content: VerdictWord): Promise<string> {
  const target = path.join(holdDir, file);
  try {
    await fs.link(path.join(holdDir, `.v-${content}`), target);
    return content;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await fs.readFile(target, 'utf8').catch(() => '')).trim() || 'rollback-unreadable';
  }
}

/** What the hold files say now: no verdict yet, rolled back, in doubt (prepared), or final. */
export type HoldState = { verdict?: string; final?: string };

export async function readHold(holdDir: string): Promise<HoldState> {
  const read = (f: string) =>
    fs.readFile(path.join(holdDir, f), 'utf8').then(
      (s) => s.trim(),
      () => undefined,
    );
  return { verdict: await read('verdict'), final: await read('final') };
}

/**
 * The hold's limit: long enough for the copy and the restore of this container at a
 * pessimistic rate, never less than the floor. An explicit --hold-timeout wins.
 */
export function holdTimeoutS(
  memoryBytes: number | undefined,
  o: { floorS: number; worstBytesPerS: number; override?: number },
): number {
  if (o.override !== undefined) return o.override;
  const transfer = (memoryBytes ?? 0) / o.worstBytesPerS;
  // Copy and restore each read or write every byte once.
  return Math.max(o.floorS, Math.ceil(2 * transfer + o.floorS / 2));
}

/** Post-copy: the lazy window's limit on the destination (see DEFAULTS.lazyWindowFloorS). */
export function lazyWindowS(memoryBytes: number | undefined, o: { floorS: number; worstBytesPerS: number }): number {
  return Math.max(o.floorS, Math.ceil((memoryBytes ?? 0) / o.worstBytesPerS));
}

/** Post-copy: the checkpoint's exit status, kept in the hold directory (it may end after the tool). */
export function lazyExitFile(holdDir: string): string {
  return path.join(holdDir, 'checkpoint.rc');
}

/** The status from lazyExitFile, or FALLBACK (the wrapper's own) when it is missing or unreadable. */
export async function readLazyExit(holdDir: string, fallback: number | null): Promise<number | null> {
  const t = (await fs.readFile(lazyExitFile(holdDir), 'utf8').catch(() => '')).trim();
  return /^\d+$/.test(t) ? Number(t) : fallback;
}

/** Whether the lazy page server has written its NUL to FILE (it listens). */
export function lazyServerReady(file: string): boolean {
  try {
    return statSync(file).size > 0;
  } catch {
    return false;
  }
}
