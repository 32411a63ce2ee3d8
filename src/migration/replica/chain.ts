// Pre-dump chains for replicate, where the source kernel tracks dirty memory (soft-dirty):
// between two restorable checkpoints, every interval a pre-dump (`runc checkpoint
// --pre-dump`) copies what the container wrote since the one before, while it runs but
// for CRIU's short freeze; the checkpoint that ends the chain is parented on its last
// pre-dump, so it dumps, and freezes the container for, only the pages written since.
// A chain's pre-dumps are in `chains/<id>/<n>` on the standby (all their images) and
// here (their pagemaps only, which the next dump reads to skip what its parent holds;
// the pages are emptied once sent). Each pre-dump's `parent` link is relative
// (../<n-1>), and the checkpoint's is ../../../chains/<id>/<n> from its images: the
// same on both hosts, whose layouts are alike. A restore follows the links on the
// standby. A chain no kept checkpoint is parented on is removed after a publish.
import fs from 'node:fs/promises';
import path from 'node:path';
import { criuLogErrors } from '../../criu.js';
import { decodeStatsImage } from '../../criustats.js';
import { runc } from '../../runc.js';
import { streamDir } from '../pages/stream.js';
import { CheckpointFailed, type CheckpointSetup, msToDeadline } from './checkpoint.js';
import { type PreDumpRef, preDumpRef } from './store.js';

export interface PreDump extends PreDumpRef {
  /** What it sent to the standby (its images). */
  readonly bytes: number;
  /** CRIU's frozen time. */
  readonly frozenMs: number;
  readonly pagesWritten: number;
  /** The runc call (the freeze, and CRIU's writing of the pages here after it). */
  readonly dumpMs: number;
  /** The whole pre-dump, its copy to the standby included. */
  readonly ms: number;
}

/**
 * Pre-dump N of CHAIN (parented on N-1), sent to the standby; its pages then emptied
 * here. Not begun (skipped, the chain intact) when the fence's deadline is too near or
 * the run stops; throws when it failed (then the chain is broken).
 */
export async function takePreDump(
  c: CheckpointSetup,
  chain: string,
  n: number,
  minLeftMs: number,
): Promise<PreDump | { skipped: string }> {
  const ref = preDumpRef(chain, n);
  const local = path.join(c.work, ref.dir);
  const criuWork = path.join(c.work, 'criu-pre-dump');
  const t0 = performance.now();
  await fs.rm(criuWork, { recursive: true, force: true });
  await fs.mkdir(local, { recursive: true, mode: 0o700 });
  await fs.mkdir(criuWork, { mode: 0o700 });
  try {
    // A pre-dump that fails thaws the container as it ends: none is begun that the
    // fence's deadline could overtake.
    const left = await msToDeadline(c);
    if (left < minLeftMs)
      return { skipped: `the lease's count leaves ${Math.round(left)} ms, the last pre-dump took ${minLeftMs / 2} ms` };
    if (c.stopping()) return { skipped: 'the run is stopping' };
    const tDump = performance.now();
    const r = await c.hosts.src.run(
      runc.checkpoint(c.srcRunc, c.container, {
        imagePath: local,
        workPath: criuWork,
        tcpEstablished: false,
        preDump: true,
        parentPath: n > 1 ? `../${n - 1}` : undefined,
      }),
      { allowFail: true, timeoutMs: 600_000 },
    );
    if (r.code !== 0) {
      const log = await fs.readFile(path.join(criuWork, 'dump.log'), 'utf8').catch(() => '');
      const errs = criuLogErrors(log, 3).join(' | ');
      throw new CheckpointFailed(
        `pre-dump ${chain}/${n} failed (runc exited ${r.code}: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}${errs ? `; CRIU: ${errs.slice(0, 300)}` : ''})`,
      );
    }
    const dumpMs = performance.now() - tDump;
    const st = decodeStatsImage(await fs.readFile(path.join(criuWork, 'stats-dump')));
    const remote = path.posix.join(c.dir, ref.dir);
    await c.hosts.dst.run(['mkdir', '-p', '-m', '0700', remote]);
    const bytes = await streamDir(c.hosts, local, remote);
    // The pages are on the standby now; here only the pagemaps are read again.
    for (const f of await fs.readdir(local)) if (/^pages-\d+\.img$/.test(f)) await fs.truncate(path.join(local, f), 0);
    return {
      ...ref,
      bytes,
      frozenMs: Math.round(st.frozenTimeUs / 1000),
      pagesWritten: st.pagesWritten,
      dumpMs: Math.round(dumpMs),
      ms: Math.round(performance.now() - t0),
    };
  } finally {
    await fs.rm(criuWork, { recursive: true, force: true });
  }
}

/** Removes a chain here (its pagemaps), once a checkpoint ended it or it broke. */
export async function dropLocalChain(c: CheckpointSetup, chain: string): Promise<void> {
  await fs.rm(path.join(c.work, 'chains', chain), { recursive: true, force: true });
}
