// The lease file on the standby, read, decided on and written in one section under the
// standby's lock, over one exec channel: the script takes the lock, prints the standby's
// clocks (wall, monotonic, boot) and the lease, and waits; the tool decides here (lease.ts, pure) and sends what to
// write, or nothing; the script writes it (a new file, flushed, renamed into place) and
// releases the lock. A tool that dies or loses the channel mid-section leaves the lease as
// it was: the script reads end-of-file and writes nothing. Renewals and failover take the
// same lock, so their decisions never interleave.
import type { Host } from '../../host.js';
import { type LeaseRecord, rebase } from './lease.js';

export const LEASE_FILE = 'lease';
/** The longest one locked section lasts on the standby (then its script ends itself). */
export const SECTION_LIMIT_S = 10;
const END = '.';

/** The script (POSIX sh) run on the standby; $1 is the replica's directory, $2 the section's limit in seconds. */
export const LEASE_SCRIPT = `set -eu
cd "$1"
exec 9>>lease.lock
flock -w 30 9 || { echo "runc-migrate: the lease lock stayed taken for 30 s" >&2; exit 4; }
# A tool that went silent (a partition) never sends its verdict, and the read below would
# hold the lock for ever: the section ends itself after $2 seconds (default ${SECTION_LIMIT_S}); the
# lock goes with it, and the lease is written whole (renamed into place) or not at all.
( sleep "\${2:-${SECTION_LIMIT_S}}"; kill -9 $$ ) 9>&- </dev/null >/dev/null 2>&1 &
watchdog=$!
trap 'kill $watchdog 2>/dev/null' EXIT
read -r up _ < /proc/uptime
printf 'now %s %s %s\\n' "$(date +%s%N)" "$up" "$(cat /proc/sys/kernel/random/boot_id)"
if [ -s ${LEASE_FILE} ]; then cat ${LEASE_FILE}; echo; fi
echo ${END}
IFS= read -r verdict || exit 0
[ "$verdict" = write ] || exit 0
IFS= read -r line || exit 0
printf '%s\\n' "$line" > ${LEASE_FILE}.new
sync ${LEASE_FILE}.new
mv -f ${LEASE_FILE}.new ${LEASE_FILE}
sync .
echo written
`;

/** What the section's head says: the standby's clocks and the lease it holds. */
export interface LeaseHead {
  /** The standby's wall clock (ms since the epoch): for people, and the RPO. */
  wallMs: number;
  /** Its monotonic clock (/proc/uptime, ms): the lease's. */
  nowMs: number;
  boot: string;
  /** The lease, rebased onto this boot's clock (lease.ts rebase). */
  lease?: LeaseRecord;
}

/** The standby's clocks and the lease it holds, from the script's first lines. */
export function parseLeaseHead(text: string): LeaseHead | undefined {
  const lines = text.split('\n');
  const end = lines.indexOf(END);
  if (end < 0) return undefined;
  const now = lines[0]?.match(/^now (\d+) (\d+)(?:\.(\d+))? ([0-9a-f-]+)$/);
  if (!now) return undefined;
  const wallMs = Math.floor(Number(now[1]) / 1e6);
  const nowMs = Number(now[2]) * 1000 + Number((now[3] ?? '0').padEnd(3, '0').slice(0, 3));
  const boot = now[4];
  const body = lines.slice(1, end).join('\n').trim();
  if (!body) return { wallMs, nowMs, boot };
  try {
    return { wallMs, nowMs, boot, lease: rebase(JSON.parse(body) as LeaseRecord, boot) };
  } catch {
    throw new Error(`the lease file is not a lease: ${body.slice(0, 120)}`);
  }
}

/**
 * Runs one locked section in DIR on HOST: DECIDE sees the standby's clock and its lease,
 * and returns the record to write (or undefined to leave it). Resolves with what DECIDE
 * returned once it is written and flushed there (or, with nothing to write, once the
 * lock is released).
 */
export async function withLease<T>(
  host: Host,
  dir: string,
  decide: (nowMs: number, lease: LeaseRecord | undefined, head: LeaseHead) => { write?: LeaseRecord; result: T },
  timeoutMs = 30_000,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const spawned = host.spawn(['sh', '-c', LEASE_SCRIPT, 'sh', dir], { streamStdout: true });
  // The limit counts from the call: opening the channel over a silent link can hang too.
  const opened = await Promise.race([
    spawned,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new LeaseTimeout(`the lease on the ${host.name} did not answer within ${Math.round(timeoutMs / 1000)} s`),
          ),
        timeoutMs,
      );
    }),
  ]);
  clearTimeout(timer);
  const proc = opened;
  let out = '';
  // Over a link that went silent the channel never ends: the section is given up at the
  // limit whatever the channel does (the lease stays as it was, or as written: unknown).
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new LeaseTimeout(`the lease on the ${host.name} did not answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
  });
  const section = async (): Promise<T> => {
    const head = await new Promise<LeaseHead>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        try {
          const h = parseLeaseHead(out);
          if (h) resolve(h);
        } catch (err) {
          reject(err);
        }
      });
      void proc.done.then((r) =>
        reject(
          new Error(
            `the lease on the ${host.name} could not be read (exit ${r.code}: ${r.stderr.trim().slice(0, 200)})`,
          ),
        ),
      );
    });
    const d = decide(head.nowMs, head.lease, head);
    if (d.write) {
      const written = new Promise<void>((resolve, reject) => {
        proc.stdout.on('data', () => (/\nwritten\n$/.test(out) ? resolve() : undefined));
        void proc.done.then((r) =>
          /\nwritten\n$/.test(out)
            ? resolve()
            : reject(
                new Error(
                  `the lease on the ${host.name} was not written (exit ${r.code}: ${r.stderr.trim().slice(0, 200)})`,
                ),
              ),
        );
      });
      proc.stdin.write(`write\n${JSON.stringify({ ...d.write, boot: head.boot })}\n`);
      await written;
    } else {
      proc.stdin.write('keep\n');
    }
    proc.stdin.end();
    await proc.done;
    return d.result;
  };
  try {
    return await Promise.race([section(), limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** The standby did not answer in time: whether it wrote is unknown. */
export class LeaseTimeout extends Error {}
