// Progress of a long transfer on a terminal: bytes moved, rate and time left, read from
// the images directory that fills (the page server's on the destination, or the local
// one when CRIU dumps for the tar stream). One line, updated in place; nothing of it in
// --json or --quiet mode, and no remote command at all then.
import type { Proc } from '../../host.js';
import { formatBytes } from '../../progress.js';
import type { Session } from '../session.js';

const EVERY_S = 0.5;

/**
 * "312.0 MiB of ~1.0 GiB, 205.3 MiB/s, 4 s left" (pure). The rate, and the time left,
 * only from half a second on: before that they say more about the sampling than
 * about the transfer.
 */
export function transferLine(bytes: number, elapsedMs: number, expectedBytes?: number): string {
  const rate = elapsedMs >= 500 ? (bytes * 1000) / elapsedMs : 0;
  let line = formatBytes(bytes);
  if (expectedBytes && expectedBytes > 0) line += ` of ~${formatBytes(expectedBytes)}`;
  if (rate > 0) line += `, ${formatBytes(rate)}/s`;
  if (expectedBytes && rate > 0 && bytes < expectedBytes)
    line += `, ${Math.ceil((expectedBytes - bytes) / rate)} s left`;
  return line;
}

/**
 * Starts watching DIR on HOST ('dst': through one exec channel that prints its size
 * every half second; 'src': local). Returns a function that stops it.
 */
export async function watchTransfer(
  ctx: Pick<Session, 'src' | 'dst' | 'progress'>,
  where: 'src' | 'dst',
  dir: string,
  expectedBytes?: number,
): Promise<() => Promise<void>> {
  const { progress } = ctx;
  if (!progress.live) return async () => {};
  const t0 = performance.now();
  const show = (bytes: number) => progress.status(transferLine(bytes, performance.now() - t0, expectedBytes));
  // The loop ends when its channel closes (the tool stopped it, ended or died).
  const proc: Proc = await (where === 'dst' ? ctx.dst : ctx.src).spawn(
    [
      'sh',
      '-c',
      `exec 3<&0; (cat <&3 >/dev/null; kill $$ 2>/dev/null) & while :; do du -sb "$1" 2>/dev/null | cut -f1; sleep ${EVERY_S}; done`,
      'meter',
      dir,
    ],
    { streamStdout: true },
  );
  let buf = '';
  // What the directory held before (its own entry, a parent link): not transferred.
  let base: number | undefined;
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    const last = lines.filter((l) => /^\d+$/.test(l.trim())).pop();
    if (last === undefined) return;
    base ??= Number(last);
    show(Math.max(0, Number(last) - base));
  });
  return async () => {
    proc.stdin.end();
    proc.kill('SIGTERM');
    await proc.done.catch(() => undefined);
  };
}
