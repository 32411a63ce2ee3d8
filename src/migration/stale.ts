// Work directories carry their owner ("HOST PID" in a file named owner): a directory whose
// owner ran on this host and is gone, and that no intent record still needs (an
// unfinished migration's files are what migrate recover reads), is stale and removed by
// the next run, on both hosts.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Host } from '../host.js';
import { quote } from '../shell.js';
import { pidAlive } from './intent.js';

export const OWNER_FILE = 'owner';
export const WORK_PREFIX = 'runc-migrate.';

export function ownerLine(): string {
  return `${os.hostname()} ${process.pid}\n`;
}

/** Work directories that unfinished migrations still need (from every intent record). */
export async function neededDirs(intentDir: string): Promise<Set<string>> {
  const needed = new Set<string>();
  for (const f of await fs.readdir(intentDir).catch(() => [] as string[])) {
    const rec = await fs.readFile(path.join(intentDir, f), 'utf8').then((t) => JSON.parse(t), () => undefined);
    if (rec?.localBase) needed.add(rec.localBase);
    if (rec?.remoteBase) needed.add(rec.remoteBase);
  }
  return needed;
}

/**
 * Pure: which listed work directories are stale, seen from this host. LISTING: for each,
 * its path and its owner line ("HOST PID"), each ended by a NUL (a path may hold spaces
 * or newlines).
 */
export function staleDirs(listing: string, o: { host: string; alive: (pid: number) => boolean; needed: Set<string>; self: string[] }): string[] {
  const out: string[] = [];
  const f = listing.split('\0');
  for (let i = 0; i + 1 < f.length; i += 2) {
    const dir = f[i];
    const [host, pid] = f[i + 1].trim().split(/\s+/);
    if (!dir || !host || !/^\d+$/.test(pid ?? '')) continue;
    if (host !== o.host || o.alive(Number(pid)) || o.needed.has(dir) || o.self.includes(dir)) continue;
    out.push(dir);
  }
  return out;
}

/** Removes the stale work directories under PARENT on HOST; returns those removed. */
export async function removeStale(host: Host, parent: string, intentDir: string, self: string[]): Promise<string[]> {
  const list = await host.run(['sh', '-c', `for d in ${quote(parent)}/${WORK_PREFIX}*; do [ -f "$d/${OWNER_FILE}" ] && printf '%s\\0%s\\0' "$d" "$(cat "$d/${OWNER_FILE}")"; done; true`], { allowFail: true });
  const stale = staleDirs(list.stdout, { host: os.hostname(), alive: pidAlive, needed: await neededDirs(intentDir), self });
  if (stale.length) await host.run(['rm', '-rf', '--one-file-system', ...stale], { allowFail: true });
  return stale;
}
