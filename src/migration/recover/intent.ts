// The intent record: from the freeze until the end, a file on the source that says where
// the migration of a container is and which host holds what. It is written before each
// step it names (write, then rename: never half-written), and removed once the container
// runs on exactly one host and both hosts are clean. A record left behind means the tool
// died: `migrate recover` (or the next `migrate` of that container) reads it, asks the
// destination, and finishes or undoes the migration.
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { MoveIp } from '../../options.js';
import type { RuncGlobal } from '../../runc.js';

/**
 * The steps, in order. 'precopy': pre-dumps while the container runs (a death leaves only
 * their images on both hosts, for recover to remove). Up to 'restoring' a death rolls back by itself (the source's hold
 * resumes the source, the destination's guard removes its copy). From 'prepared' the
 * source waits, frozen, for a final verdict: the migration is in doubt until recovered.
 */
export type IntentPhase =
  | 'precopy'
  | 'frozen'
  | 'restoring'
  | 'lazy-window'
  | 'prepared'
  | 'committing'
  | 'destination-committed'
  | 'committed'
  | 'rolled-back';

/** The record's format; a record of another version is refused, not guessed at. */
export const INTENT_VERSION = 2;

export interface Intent {
  version: typeof INTENT_VERSION;
  container: string;
  /** runc on each side as this migration ran it (binary, root, criu): recover uses these, not its own flags. */
  srcRunc: RuncGlobal;
  dstRunc: RuncGlobal;
  /** The destination as given on the command line. */
  destination: string;
  /** The tool's pid: a record whose pid still runs is a migration in progress. */
  pid: number;
  startedAt: string;
  phase: IntentPhase;
  updatedAt: string;
  /** The work directories (the source's holds the hold's files; the destination's the guard's). */
  localBase: string;
  holdDir: string;
  remoteBase: string;
  guardDir: string;
  moveIp?: MoveIp & { srcDev: string; dstDev: string };
  /** CRIU lock rules on the source before this dump (netlock.ts): not this migration's to remove. */
  lockRulesBefore?: string[];
  /** The container's TCP connections before this dump: only their lock rules are this migration's to remove. */
  connections?: Array<{ local: string; peer: string }>;
}

/**
 * The record's file: one per container name on this machine, whatever the runc root, so
 * that recover finds it by the name alone (the command the tool prints works as printed).
 */
export function intentPath(dir: string, container: string): string {
  return path.join(dir, `${container}.json`);
}

export async function writeIntent(file: string, intent: Intent): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify({ ...intent, updatedAt: new Date().toISOString() }, null, 2) + '\n', {
    mode: 0o600,
  });
  await fs.rename(tmp, file);
}

const PHASES: IntentPhase[] = [
  'precopy',
  'frozen',
  'restoring',
  'lazy-window',
  'prepared',
  'committing',
  'destination-committed',
  'committed',
  'rolled-back',
];

/** Why TEXT is not a record this version can act on; undefined when it is one. */
export function invalidIntent(x: unknown): string | undefined {
  if (typeof x !== 'object' || x === null) return 'not a JSON object';
  const r = x as Record<string, unknown>;
  if (r.version !== INTENT_VERSION)
    return `format version ${JSON.stringify(r.version)}, this tool reads ${INTENT_VERSION}`;
  const str = (k: string) => typeof r[k] === 'string' && (r[k] as string).length > 0;
  for (const k of ['container', 'destination', 'startedAt', 'localBase', 'holdDir', 'remoteBase', 'guardDir'])
    if (!str(k)) return `${k} is missing`;
  if (!PHASES.includes(r.phase as IntentPhase)) return `unknown phase ${JSON.stringify(r.phase)}`;
  if (!Number.isInteger(r.pid)) return 'pid is missing';
  for (const k of ['srcRunc', 'dstRunc']) {
    const g = r[k] as Record<string, unknown> | undefined;
    if (!g || typeof g.runc !== 'string' || typeof g.root !== 'string') return `${k} is missing`;
  }
  return undefined;
}

/** A record that cannot be read or is not valid: recover says so and touches nothing. */
export class BadIntent extends Error {}

export async function readIntent(file: string): Promise<Intent | undefined> {
  const text = await fs.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new BadIntent(`the record ${file} cannot be read: ${err.message}`);
  });
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new BadIntent(`the record ${file} is not JSON (${(err as Error).message})`);
  }
  const bad = invalidIntent(parsed);
  if (bad) throw new BadIntent(`the record ${file} cannot be used: ${bad}`);
  return parsed as Intent;
}

export async function removeIntent(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}

/** True while process PID exists (a record of a live migration must not be touched). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether PID is a live runc-migrate process (a pid may have been reused by another program). */
export function liveMigration(pid: number): boolean {
  if (!pidAlive(pid)) return false;
  try {
    return /migrate|node/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

/** What a lock says of its holder besides its pid: a replicate names its standby and its replica's directory. */
export interface LockNote {
  readonly replicate?: { readonly destination: string; readonly dir: string };
}

/** A lock file's text: the pid on the first line, the note (JSON) on the second. */
export function parseLock(text: string): { pid: number; note?: LockNote } {
  const [first, second] = text.split('\n');
  let note: LockNote | undefined;
  try {
    note = second ? (JSON.parse(second) as LockNote) : undefined;
  } catch {
    note = undefined;
  }
  return { pid: Number(first.trim()), note };
}

/**
 * One migration of a container at a time on this machine: a lock file beside the record,
 * made with O_EXCL and holding the tool's pid (and NOTE). Returns its release; throws
 * RunningAlready when a live migration holds it (a dead one's is taken over).
 */
export async function lockContainer(dir: string, container: string, note?: LockNote): Promise<() => Promise<void>> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${container}.lock`);
  for (let i = 0; i < 3; i++) {
    try {
      const text = `${process.pid}\n${note ? `${JSON.stringify(note)}\n` : ''}`;
      await fs.writeFile(file, text, { flag: 'wx', mode: 0o600 });
      return async () => {
        const owner = parseLock(await fs.readFile(file, 'utf8').catch(() => ''));
        if (owner.pid === process.pid) await fs.rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const { pid, note: theirs } = parseLock(await fs.readFile(file, 'utf8').catch(() => ''));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && liveMigration(pid))
        throw new RunningAlready(pid, theirs);
      await fs.rm(file, { force: true });
    }
  }
  throw new Error(`could not take the lock ${file}`);
}

/**
 * Who holds the container's lock, read only (--dry-run takes no lock): a live holder as
 * RunningAlready, or undefined when no live run holds it.
 */
export async function lockHolder(dir: string, container: string): Promise<RunningAlready | undefined> {
  const text = await fs.readFile(path.join(dir, `${container}.lock`), 'utf8').catch(() => '');
  const { pid, note } = parseLock(text);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && liveMigration(pid)
    ? new RunningAlready(pid, note)
    : undefined;
}

export class RunningAlready extends Error {
  constructor(
    readonly pid: number,
    readonly note?: LockNote,
  ) {
    super(`a migration of this container is already running (pid ${pid})`);
  }
}

/** The record as a migration writes it, but for its phase and time (added at each write). */
export type IntentRecord = Omit<Intent, 'phase' | 'updatedAt'>;
