// The SSH connection warmed before the freeze, where the images or pages cross it after.
//
// Measured on the namespace hosts: the first 20 MiB that a fresh connection's sshd
// receives cost it 56,890 page faults and 953 ms of CPU (perf stat on the sshd process),
// and took 445-1288 ms; the next 20 MiB on that connection, 3,275 faults, 118 ms of CPU
// and 136-197 ms. The same with OpenSSH's client, so it is sshd's: its buffers are
// allocated and freed fresh (glibc's malloc maps large ones afresh until its threshold has
// risen) until the connection has carried a few windows' worth of data. Raw TCP between
// the same hosts moves 20 MiB in 9-16 ms from the first byte. A warm-up of 10 MiB brought
// the next 20 MiB to 136-439 ms (median 151); 5 MiB to 166-618 ms (median 538).
// So where the frozen path sends the images through the connection (stream) or the pages
// (tunnel), the same sshd first swallows zeros, while the container still runs.
import type { Proc } from '../../host.js';
import type { Session } from '../session.js';

/** The most a warm-up sends: past this the sshd was seen warm. */
export const WARM_MAX_BYTES = 16 * 1024 * 1024;
const CHUNK = Buffer.alloc(256 * 1024);

/** How much to send: what the frozen path will send through the connection, up to WARM_MAX_BYTES. */
export function warmBytes(expectedBytes: number | undefined): number {
  if (!expectedBytes || expectedBytes <= 0) return WARM_MAX_BYTES;
  return Math.min(WARM_MAX_BYTES, Math.ceil(expectedBytes / CHUNK.length) * CHUNK.length);
}

/** The warm-up's limit: it is an optimisation, and gives up rather than hold the run up. */
const WARM_LIMIT_MS = 30_000;

/** Sends BYTES of zeros into `cat > /dev/null` on the destination; returns the milliseconds it took. */
export async function warmConnection(s: Session, bytes: number): Promise<number> {
  const t0 = performance.now();
  const sink = await s.dst.spawn(['sh', '-c', 'cat > /dev/null']);
  const limit = setTimeout(() => sink.kill('SIGKILL'), WARM_LIMIT_MS);
  try {
    return await send(sink, bytes, t0);
  } finally {
    clearTimeout(limit);
  }
}

async function send(sink: Proc, bytes: number, t0: number): Promise<number> {
  sink.stdin.on('error', () => undefined);
  let ended = false;
  void sink.done.then(() => (ended = true));
  let left = bytes;
  while (left > 0 && !ended) {
    const n = Math.min(left, CHUNK.length);
    left -= n;
    if (!sink.stdin.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n)))
      await new Promise<void>((resolve) => {
        sink.stdin.once('drain', resolve);
        sink.done.then(() => resolve());
      });
  }
  sink.stdin.end();
  const r = await sink.done;
  if (r.code !== 0) throw new Error(`warming the SSH connection failed: cat exited ${r.code} (${r.stderr.trim()})`);
  return Math.round(performance.now() - t0);
}
