// The pre-copy loop: memory is copied while the container runs, each pre-dump parented
// on the last, until the stop rule says the rest fits the downtime the user accepts.
// Contract: the container keeps running on the source whatever happens here (a pre-dump
// freezes it only for the time CRIU takes to collect dirty pages); a failure throws,
// and the undo stack (prepare/undo.ts) removes what it made on both hosts.
import fs from 'node:fs/promises';
import path from 'node:path';
import { criuLogErrors } from '../../criu.js';
import { decodeStatsImage } from '../../criustats.js';
import { formatBytes } from '../../progress.js';
import { runc } from '../../runc.js';
import type { StopRule } from '../plan/method.js';
import type { WorkDirs } from '../prepare/paths.js';
import type { Session } from '../session.js';
import type { Throttle } from './throttle.js';
import type { PageRoute } from './transfer.js';
import { convergeStep, decide, MODEL, PAGE_SIZE, type Decision, type Iteration } from '../plan/policy.js';
import { fetchPagemaps, streamDir } from './stream.js';
import { startPageServer } from './transfer.js';
import { watchTransfer } from './meter.js';

export interface PrecopyResult {
  /** throttlePct: auto-converge's CPU throttle in force during the iteration. */
  iterations: Array<
    Iteration & { predictedDowntimeMs?: number; bandwidth: number; dirtyRate?: number; throttlePct?: number }
  >;
  decision: Decision;
  /** The last pre-dump's directory name, the final dump's parent. */
  last: string;
}

export interface PrecopyRun {
  readonly work: WorkDirs;
  readonly route: PageRoute;
  readonly rule: StopRule;
  /** TLS lines for CRIU's config (certs.ts), or nothing. */
  readonly criuConfig: string;
  readonly memoryBytes?: number;
  /** --auto-converge. */
  readonly throttle?: Throttle;
  /** Hybrid: the lazy final dump needs each pre-dump's pagemaps on the source. */
  readonly fetchPagemaps: boolean;
}

export async function precopy(ctx: Session, run: PrecopyRun, checkInterrupt: () => void): Promise<PrecopyResult> {
  const { opts, progress, src, dst } = ctx;
  const L = run.work.local;
  const R = run.work.remote;
  const its: PrecopyResult['iterations'] = [];
  const rule = { ...run.rule, ...MODEL };
  let prevStart: number | undefined;
  // Auto-converge: the container's CPU time at each iteration's start (its rate is the base of the throttle).
  let prevUsage: { s: number; at: number } | undefined;
  const config = path.join(L.base, 'pre-dump.conf');
  await fs.writeFile(config, `pre-dump-mode ${opts.preDumpMode}\n${run.criuConfig}`, { mode: 0o600 });
  for (let n = 1; ; n++) {
    checkInterrupt();
    const dir = String(n);
    const local = path.join(L.images, dir);
    const remote = path.join(R.images, dir);
    const parent = n > 1 ? `../${n - 1}` : undefined;
    const t0 = performance.now();
    let dumpMs = 0;
    const figures = await progress.phase(
      `pre-dump-${n}`,
      `pre-dump ${n}`,
      async () => {
        await fs.mkdir(local, { mode: 0o700 });
        await dst.run(['mkdir', '-m', '0700', remote]);
        const ps = await startPageServer(ctx, run.route, remote, parent);
        try {
          const workPath = path.join(L.criuWork, `pre-dump-${n}`);
          await fs.mkdir(workPath, { mode: 0o700 });
          const d0 = performance.now();
          const expected =
            n === 1 ? run.memoryBytes : its.length ? its[its.length - 1].pagesWritten * PAGE_SIZE : undefined;
          const stopMeter = await watchTransfer(ctx, 'dst', remote, expected);
          const preDump = () =>
            src.run(
              runc.checkpoint(ctx.srcRunc, opts.container, {
                imagePath: local,
                workPath,
                pageServer: ps.endpoint,
                tcpEstablished: false,
                preDump: true,
                parentPath: parent,
              }),
              // CRIU reads the pre-dump mode and, with TLS, its certificates from this file (runc has no flags for them).
              { allowFail: true, timeoutMs: 600_000, env: { CRIU_CONFIG_FILE: config } },
            );
          // Auto-converge: no throttle while CRIU's parasite works inside the frozen tasks.
          const r = await (run.throttle ? run.throttle.suspendedDuring(preDump) : preDump()).finally(stopMeter);
          dumpMs = performance.now() - d0;
          if (r.code !== 0) {
            const log = await fs.readFile(path.join(workPath, 'dump.log'), 'utf8').catch(() => '');
            const errs = criuLogErrors(log, 3);
            throw new Error(
              `pre-dump ${n} failed on the source (runc exited ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''})${errs.length ? `: ${errs.join(' | ')}` : ''}`,
            );
          }
          const code = await ps.done;
          if (code !== 0)
            throw new Error(`the page server exited ${code} during pre-dump ${n}: not every page arrived`);
        } finally {
          await ps.stop();
        }
        const c0 = performance.now();
        await streamDir(ctx, local, remote, ['./parent']);
        // Hybrid: the lazy final dump is parented on this one, and looks for its pagemaps here.
        if (run.fetchPagemaps) await fetchPagemaps(ctx, remote, local);
        const copyMs = performance.now() - c0;
        // runc points CRIU's work directory at --work-path: the stats land there.
        const st = decodeStatsImage(await fs.readFile(path.join(L.criuWork, `pre-dump-${n}`, 'stats-dump')));
        const it: Iteration = {
          n,
          pagesScanned: st.pagesScanned,
          pagesWritten: st.pagesWritten,
          pagesSkippedParent: st.pagesSkippedParent,
          frozenMs: st.frozenTimeUs / 1000,
          memdumpMs: st.memdumpTimeUs / 1000,
          memwriteMs: st.memwriteTimeUs / 1000,
          wallMs: performance.now() - t0,
          sinceLastMs: prevStart === undefined ? undefined : t0 - prevStart,
          copyMs,
          dumpMs,
        };
        return it;
      },
      (it) =>
        `(${formatBytes(it.pagesWritten * PAGE_SIZE)} written, ${formatBytes(it.pagesSkippedParent * PAGE_SIZE)} unchanged)`,
    );
    prevStart = t0;
    let d = decide([...its, figures], rule);
    const throttlePct = run.throttle?.pct;
    its.push({
      ...figures,
      predictedDowntimeMs: d.predictedDowntimeMs,
      bandwidth: d.bandwidth,
      dirtyRate: d.dirtyRate,
      throttlePct,
    });
    if (run.throttle) {
      const t = run.throttle;
      const usage = await t.usageS();
      const at = performance.now();
      const cpus = usage !== undefined && prevUsage ? (usage - prevUsage.s) / ((at - prevUsage.at) / 1000) : undefined;
      prevUsage = usage !== undefined ? { s: usage, at } : undefined;
      const c = convergeStep(its, d, t.pct, run.rule.maxIterations);
      const raised = c.throttlePct !== t.pct;
      if (raised) await t.set(c.throttlePct, cpus);
      if (c.why) progress.info(`  auto-converge: ${c.why}`);
      if (c.overrideStop)
        d = {
          ...d,
          stop: false,
          reason: undefined,
          why: raised ? `not converging: throttled to ${c.throttlePct} %` : `not converging yet at ${c.throttlePct} %`,
        };
    }
    const mbs = (d.bandwidth / 1e6).toFixed(1);
    progress.info(
      `  iteration ${n}: ${figures.pagesWritten} pages written, ${mbs} MB/s` +
        (d.predictedDowntimeMs !== undefined ? `, predicted downtime ${Math.round(d.predictedDowntimeMs)} ms` : '') +
        (d.stop ? ` -> switch over: ${d.why}` : ''),
    );
    if (d.stop) {
      if (d.reason === 'not-converging') progress.warn(`pre-copy did not converge: ${d.why}`);
      return { iterations: its, decision: d, last: dir };
    }
  }
}
