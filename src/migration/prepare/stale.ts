// Work directories carry their owner ("HOST PID MACHINE BOOT" in a file named owner): a
// directory whose owner ran on this machine (its machine id, not its host name: two
// sources may share a name and a destination) and is gone (its pid dead, or it ran
// before this boot), and that no intent record still needs (an unfinished migration's
// files are what migrate recover reads), is stale and removed by the next run, on both
// hosts. A directory of another machine, or of an older format, is never touched.
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Host } from '../../host.js';
import { quote } from '../../shell.js';
import { pidAlive } from '../recover/intent.js';
import { removeWorkDirs } from '../switchover/reap.js';

export const OWNER_FILE = 'owner';
export const WORK_PREFIX = 'runc-migrate.';

/** This machine and this boot: /etc/machine-id and the kernel's boot id ('-' where unreadable). */
function machineAndBoot(): { machine: string; boot: string } {
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8').trim() || '-';
    } catch {
      return '-';
    }
  };
  return { machine: read('/etc/machine-id'), boot: read('/proc/sys/kernel/random/boot_id') };
}

export function ownerLine(): string {
  const { machine, boot } = machineAndBoot();
  return `${os.hostname()} ${process.pid} ${machine} ${boot}\n`;
}

/** Work directories that unfinished migrations still need (from every intent record). */
export async function neededDirs(intentDir: string): Promise<Set<string>> {
  const needed = new Set<string>();
  for (const f of await fs.readdir(intentDir).catch(() => [] as string[])) {
    const rec = await fs.readFile(path.join(intentDir, f), 'utf8').then(
      (t) => JSON.parse(t),
      () => undefined,
    );
    if (rec?.localBase) needed.add(rec.localBase);
    if (rec?.remoteBase) needed.add(rec.remoteBase);
  }
  return needed;
}

/**
 * Pure: which listed work directories are stale, seen from this machine. LISTING: for
 * each, its path and its owner line ("HOST PID MACHINE BOOT"), each ended by a NUL (a path
 * may hold spaces or newlines).
 */
export function staleDirs(
  listing: string,
  o: { machine: string; boot: string; alive: (pid: number) => boolean; needed: Set<string>; self: string[] },
): string[] {
  const out: string[] = [];
  const f = listing.split('\0');
  for (let i = 0; i + 1 < f.length; i += 2) {
    const dir = f[i];
    const [, pid, machine, boot] = f[i + 1].trim().split(/\s+/);
    if (!dir || !/^\d+$/.test(pid ?? '') || !machine || machine === '-' || machine !== o.machine) continue;
    if (o.needed.has(dir) || o.self.includes(dir)) continue;
    // A run of an earlier boot is gone whatever its pid; one of this boot while its pid lives.
    if (boot === o.boot && o.alive(Number(pid))) continue;
    out.push(dir);
  }
  return out;
}

/** Removes the stale work directories under PARENT on HOST; returns those removed. */
export async function removeStale(host: Host, parent: string, intentDir: string, self: string[]): Promise<string[]> {
  const stale = await findStale(host, parent, intentDir, self);
  if (stale.length) await host.run(removeWorkDirs(stale), { allowFail: true });
  return stale;
}

/** The stale work directories under PARENT on HOST (what removeStale would remove; --dry-run lists them). */
export async function findStale(host: Host, parent: string, intentDir: string, self: string[]): Promise<string[]> {
  const list = await host.run(
    [
      'sh',
      '-c',
      `for d in ${quote(parent)}/${WORK_PREFIX}*; do [ -f "$d/${OWNER_FILE}" ] && printf '%s\\0%s\\0' "$d" "$(cat "$d/${OWNER_FILE}")"; done; true`,
    ],
    { allowFail: true },
  );
  return staleDirs(list.stdout, {
    ...machineAndBoot(),
    alive: pidAlive,
    needed: await neededDirs(intentDir),
    self,
  });
}
