// The intent record: from the freeze until the end, a file on the source that says where
// the migration of a container is and which host holds what. It is written before each
// step it names (write, then rename: never half-written), and removed once the container
// runs on exactly one host and both hosts are clean. A record left behind means the tool
// died: `migrate recover` (or the next `migrate` of that container) reads it, asks the
// destination, and finishes or undoes the migration.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { MoveIp } from '../options.js';

/**
 * The steps, in order. Up to 'restoring' a death rolls back by itself (the source's hold
 * resumes the source, the destination's guard removes its copy). From 'prepared' the
 * source waits, frozen, for a final verdict: the migration is in doubt until recovered.
 */
export type IntentPhase = 'frozen' | 'restoring' | 'lazy-window' | 'prepared' | 'destination-committed' | 'committed';

export interface Intent {
  container: string;
  runcRoot: string;
  /** The destination as given on the command line, and the remote runc root. */
  destination: string;
  remoteRuncRoot: string;
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
}

/** The record's file: one per runc root and container. */
export function intentPath(dir: string, runcRoot: string, container: string): string {
  const root = crypto.createHash('sha256').update(runcRoot).digest('hex').slice(0, 12);
  return path.join(dir, `${root}-${container}.json`);
}

export async function writeIntent(file: string, intent: Intent): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify({ ...intent, updatedAt: new Date().toISOString() }, null, 2) + '\n', { mode: 0o600 });
  await fs.rename(tmp, file);
}

export async function readIntent(file: string): Promise<Intent | undefined> {
  const text = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  return JSON.parse(text) as Intent;
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
