// The source's fence for replication (issue 25; lease.ts says why it is safe): a detached
// shell that pauses the container once the lease's count runs out, whether the tool is
// alive or not. The count is a deadline on /proc/uptime's clock (monotonic, the same for
// the tool and the shell), in centiseconds, in a file the tool replaces (write, rename)
// at each confirmed renewal. The fence only ever pauses; the tool alone resumes, once a
// renewal is confirmed again (no failover happened). A stop file ends it.
import fs from 'node:fs/promises';

/** How often the fence looks: the lease's margin (lease.ts leaseMargin) covers this and the pause. */
export const FENCE_POLL_S = 0.1;

/**
 * The fence (POSIX sh): $1 the deadline file, $2 the stop file, $3 the file it appends a
 * line to at each pause, then the pause command (runc pause CONTAINER).
 */
export const FENCE_SCRIPT = `set -u
deadline_file=$1
stop_file=$2
paused_file=$3
shift 3
fenced=0
while [ ! -e "$stop_file" ]; do
  deadline=$(cat "$deadline_file" 2>/dev/null || echo 0)
  case $deadline in ''|*[!0-9]*) deadline=0 ;; esac
  read -r up _ < /proc/uptime
  now=$(printf '%s' "$up" | tr -d .)
  if [ "$now" -ge "$deadline" ]; then
    if [ "$fenced" = 0 ]; then
      "$@" && fenced=1 && echo "paused $now" >> "$paused_file"
    fi
  else
    fenced=0
  fi
  sleep ${FENCE_POLL_S}
done
`;

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
