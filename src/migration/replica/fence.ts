// The source's fence for replication (issue 25; lease.ts says why it is safe): a detached
// shell that pauses the container once the lease's count runs out, whether the tool is
// alive or not. The count is a deadline on /proc/uptime's clock (monotonic, the same for
// the tool and the shell), in centiseconds, in a file the tool replaces (write, rename)
// at each confirmed renewal. The fence only ever pauses; the tool alone resumes, once a
// renewal is confirmed again (no failover happened). A stop file ends it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { pidAlive } from '../recover/intent.js';
import { commandLine, quote } from '../../shell.js';

/** How often the fence looks: the lease's margin (lease.ts leaseMargin) covers this and the pause. */
export const FENCE_POLL_S = 0.1;

/** The pause command's exit when the container it fences is gone (deleted, or another of the same name): the fence ends. */
export const FENCE_GONE = 3;
/** The pause command's exit when it did nothing (already paused, by a dump's freeze or by the user): not a fencing. */
export const FENCE_ALREADY = 10;

/**
 * The fence (POSIX sh): $1 the deadline file, $2 the stop file, $3 the file it appends a
 * line to each time it fences (once per expiry), then the pause command. While the
 * deadline is past, the command runs at every poll: it must do nothing when the container
 * is already paused (replicate's checks runc's state first). It ends on the stop file,
 * or when the stop file's directory is gone, or when the command exits FENCE_GONE (the
 * container it fences is gone: one made later under the same name is not its to pause). Every poll, not once: a
 * checkpoint's dump that was freezing the container when the deadline passed thaws it
 * as it ends, and the fence pauses it again at its next look.
 */
export const FENCE_SCRIPT = `set -u
# Signals meant for the tool (a Ctrl-C to its group, systemd's stop of its unit) are not
# the fence's: only its stop file, or its container gone, ends it.
trap '' INT TERM HUP
deadline_file=$1
stop_file=$2
paused_file=$3
shift 3
fenced=0
# Its directory gone (the tool removed its work directory after stopping it, a reboot's
# tmpfs): nothing is left to watch.
while [ ! -e "$stop_file" ] && [ -d "$(dirname "$stop_file")" ]; do
  deadline=$(cat "$deadline_file" 2>/dev/null || echo 0)
  case $deadline in ''|*[!0-9]*) deadline=0 ;; esac
  read -r up _ < /proc/uptime
  now=$(printf '%s' "$up" | tr -d .)
  if [ "$now" -ge "$deadline" ]; then
    "$@"
    rc=$?
    [ "$rc" = ${FENCE_GONE} ] && { echo "gone $now" >> "$paused_file"; exit 0; }
    if [ "$rc" = 0 ] && [ "$fenced" = 0 ]; then
      fenced=1
      echo "paused $now" >> "$paused_file"
    fi
  else
    fenced=0
  fi
  sleep ${FENCE_POLL_S}
done
`;

/**
 * The pause command the fence runs (sh -c): runc pause, unless runc already shows the
 * container paused (by the fence, or frozen by a dump in progress) or gone.
 */
export function pauseUnlessPaused(runc: readonly string[], name: string, created: string): string[] {
  const r = commandLine(runc);
  const n = quote(name);
  const c = `*${quote(`"created": "${created}"`)}*`;
  return [
    'sh',
    '-c',
    `st=$(${r} state ${n} 2>/dev/null) || exit ${FENCE_GONE}; case $st in ${c}) ;; *) exit ${FENCE_GONE} ;; esac; case $st in *'"status": "running"'*) exec ${r} pause ${n} ;; esac; exit ${FENCE_ALREADY}`,
  ];
}

/** /proc/uptime's clock now, in centiseconds (the fence's). */
export async function uptimeCs(): Promise<number> {
  const text = await fs.readFile('/proc/uptime', 'utf8');
  const [s, cs] = (text.split(' ')[0] ?? '').split('.');
  return Number(s) * 100 + Number((cs ?? '0').padEnd(2, '0').slice(0, 2));
}

/** Replaces the deadline file (a new file, renamed into place: the fence never reads half a number). */
export async function writeDeadline(file: string, deadlineCs: number): Promise<void> {
  await fs.writeFile(`${file}.new`, `${Math.floor(deadlineCs)}\n`);
  await fs.rename(`${file}.new`, file);
}

/** Whose a replicate work directory is (its `owner` file): a later run of the same container finds it. */
export const OWNER_FILE = 'owner';
export interface ReplicaOwner {
  container: string;
  runcRoot: string;
  pid: number;
}

/**
 * The work directories under PARENT of replicate runs of this container whose tool is
 * gone: each may hold a fence that pauses the container once that run's lease expires
 * (a run that could not release its lease leaves it on purpose).
 */
export async function orphanedReplicaDirs(
  parent: string,
  c: { container: string; runcRoot: string },
): Promise<Array<{ dir: string; owner: ReplicaOwner }>> {
  const names = await fs.readdir(parent).catch(() => [] as string[]);
  const found: Array<{ dir: string; owner: ReplicaOwner }> = [];
  for (const name of names.filter((n) => n.startsWith('runc-migrate-replica.'))) {
    const dir = path.join(parent, name);
    const owner = await fs
      .readFile(path.join(dir, OWNER_FILE), 'utf8')
      .then((t) => JSON.parse(t) as ReplicaOwner)
      .catch(() => undefined);
    if (owner && owner.container === c.container && owner.runcRoot === c.runcRoot && !pidAlive(owner.pid))
      found.push({ dir, owner });
  }
  return found;
}
