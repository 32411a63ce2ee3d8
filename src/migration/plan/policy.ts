// The stop rule of the pre-copy loop: one pure function of the figures measured so far.
// After each pre-dump it predicts the downtime of switching over now, as QEMU does for
// VMs (what is still dirty / bandwidth), plus the fixed costs of a switchover measured
// on the way (a dump's own cost, the small-file copy) and a restore estimate, and says
// whether to switch over now or copy once more.

export const PAGE_SIZE = 4096;

/** What one pre-copy iteration measured. */
export interface Iteration {
  n: number;
  pagesScanned: number;
  pagesWritten: number;
  pagesSkippedParent: number;
  /** CRIU's own figures for this pre-dump, ms. */
  frozenMs: number;
  memdumpMs: number;
  memwriteMs: number;
  /** Wall time of the whole iteration (page server start to small files copied), ms. */
  wallMs: number;
  /** Time from the previous iteration's start to this one's: the window the pages written here were dirtied in. */
  sinceLastMs?: number;
  /** Wall time spent copying the small files, ms. */
  copyMs: number;
  /** Wall time of `runc checkpoint --pre-dump` itself (start to exit), ms. */
  dumpMs: number;
}

/**
 * The stop rule's model of the switchover's fixed costs. Measured, not chosen: these are
 * facts about CRIU and runc on the machines they were fitted on, not user settings.
 */
export const MODEL = {
  /**
   * The restore-time model: base + per MiB of container memory. Fitted to the one-shot
   * restores measured on the local test hosts (bench/results/transport-crossover.md).
   */
  restoreBaseMs: 150,
  restoreMsPerMiB: 1.7,
  /**
   * A final dump and a restore cost these multiples of a pre-dump's fixed cost (runc
   * checkpoint --pre-dump time less its page transfer). Fitted on the QEMU test VMs: a
   * pre-dump 1.0-1.1 s, the final dump 2.6 s, the restore 2.2-2.3 s (two runs).
   */
  finalDumpCostFactor: 2.5,
  restoreCostFactor: 2.1,
  /** Pre-copy ends as "steady" when the pages written stop shrinking below this share of the first iteration. */
  steadyShare: 0.1,
} as const;

export interface StopRuleConfig {
  /** Switch over once the predicted downtime is at most this (ignored when threshold is set). */
  maxDowntimeMs: number;
  /** The thesis' rule instead: an iteration that writes less than this. */
  threshold?: { bytes: number } | { percent: number };
  maxIterations: number;
  /** Predicted restore time on the destination: base + per MiB of all memory. */
  restoreBaseMs: number;
  restoreMsPerMiB: number;
  /** Below this share of the first iteration, a dirty set that stops shrinking is steady. */
  steadyShare: number;
  /** A final dump's and a restore's fixed cost, as multiples of a pre-dump's. */
  finalDumpCostFactor: number;
  restoreCostFactor: number;
}

/**
 * steady: the pages written stopped shrinking, but at a small share of the first
 * iteration: pre-copy did its work and more iterations cannot shrink the rest.
 * not-converging: they stopped shrinking while still large, or memory is dirtied as fast
 * as it is sent.
 */
export type StopReason = 'downtime' | 'threshold' | 'max-iterations' | 'steady' | 'not-converging';

export interface Decision {
  stop: boolean;
  reason?: StopReason;
  /** Predicted downtime if switching over now, ms; undefined before a dirty rate is known. */
  predictedDowntimeMs?: number;
  /** Measured bandwidth, bytes/s, and dirty rate, bytes/s. */
  bandwidth: number;
  dirtyRate?: number;
  why: string;
}

const bytes = (it: Iteration) => it.pagesWritten * PAGE_SIZE;

/** Bytes per second the pages travel at: the best iteration that moved enough to time. */
export function bandwidthOf(its: Iteration[]): number {
  let best = 0;
  for (const it of its) {
    const ms = Math.max(it.memwriteMs, 1);
    if (bytes(it) >= 1024 * 1024 || best === 0) best = Math.max(best, (bytes(it) / ms) * 1000);
  }
  return best;
}

/** Predicted freeze-to-running time of a final dump started now. */
export function predictDowntime(
  its: Iteration[],
  cfg: StopRuleConfig,
): { ms?: number; bandwidth: number; dirtyRate?: number } {
  const last = its[its.length - 1];
  const bandwidth = bandwidthOf(its);
  if (its.length < 2 || !last.sinceLastMs) return { bandwidth };
  // The pages this iteration wrote were dirtied since the previous one began.
  const dirtyRate = (bytes(last) / last.sinceLastMs) * 1000;
  // A final dump now finds what was dirtied since this iteration began.
  const finalBytes = dirtyRate * (last.wallMs / 1000);
  const transferMs = bandwidth > 0 ? (finalBytes / bandwidth) * 1000 : Infinity;
  // A pre-dump's fixed cost, measured: runc and CRIU starting, freezing, collecting, all
  // but the page transfer. It tells how fast this machine does that work; the final dump
  // (files, sockets, namespaces too) and the restore cost multiples of it.
  const preDumpFixedMs = Math.max(last.dumpMs - last.memwriteMs, last.frozenMs);
  const finalFixedMs = cfg.finalDumpCostFactor * preDumpFixedMs;
  // Restore: the model fitted on the test hosts, or the multiple, whichever is more.
  const totalMiB = (its[0].pagesScanned * PAGE_SIZE) / 1048576;
  const restoreMs = Math.max(
    cfg.restoreBaseMs + cfg.restoreMsPerMiB * totalMiB,
    cfg.restoreCostFactor * preDumpFixedMs,
  );
  return { ms: finalFixedMs + transferMs + last.copyMs + restoreMs, bandwidth, dirtyRate };
}

export function decide(its: Iteration[], cfg: StopRuleConfig): Decision {
  const last = its[its.length - 1];
  const p = predictDowntime(its, cfg);
  const base = { predictedDowntimeMs: p.ms, bandwidth: p.bandwidth, dirtyRate: p.dirtyRate };
  const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

  if (cfg.threshold && its.length >= 2) {
    const limit = 'bytes' in cfg.threshold ? cfg.threshold.bytes : (bytes(its[0]) * cfg.threshold.percent) / 100;
    if (bytes(last) < limit) {
      return {
        ...base,
        stop: true,
        reason: 'threshold',
        why: `iteration ${last.n} wrote ${mib(bytes(last))}, under the threshold of ${mib(limit)}`,
      };
    }
  } else if (!cfg.threshold && p.ms !== undefined && p.ms <= cfg.maxDowntimeMs) {
    return {
      ...base,
      stop: true,
      reason: 'downtime',
      why: `predicted downtime ${Math.round(p.ms)} ms fits --max-downtime ${cfg.maxDowntimeMs} ms`,
    };
  }
  if (its.length >= 2 && p.dirtyRate !== undefined && p.dirtyRate >= p.bandwidth) {
    return {
      ...base,
      stop: true,
      reason: 'not-converging',
      why: `memory is dirtied at ${mib(p.dirtyRate)}/s, as fast as it is sent (${mib(p.bandwidth)}/s): more iterations cannot help`,
    };
  }
  if (its.length >= 3 && bytes(last) >= 0.9 * bytes(its[its.length - 2])) {
    const share = bytes(last) / Math.max(bytes(its[0]), 1);
    const what = `iteration ${last.n} wrote ${mib(bytes(last))}, not less than the one before (${mib(bytes(its[its.length - 2]))})`;
    return share <= cfg.steadyShare
      ? {
          ...base,
          stop: true,
          reason: 'steady',
          why: `${what}: the dirty set is down to ${(share * 100).toFixed(1)} % of the first iteration and stays there`,
        }
      : { ...base, stop: true, reason: 'not-converging', why: what };
  }
  if (its.length >= cfg.maxIterations) {
    return {
      ...base,
      stop: true,
      reason: 'max-iterations',
      why: `${cfg.maxIterations} iterations done (--max-iterations)`,
    };
  }
  return {
    ...base,
    stop: false,
    why: p.ms === undefined ? 'measuring the dirty rate' : `predicted downtime ${Math.round(p.ms)} ms`,
  };
}

/** "64M", "1.5G", "500000", "10%" -> a threshold. */
export function parseThreshold(text: string): { bytes: number } | { percent: number } | undefined {
  const pct = text.match(/^(\d+(?:\.\d+)?)%$/);
  if (pct) {
    const v = Number(pct[1]);
    return v > 0 && v <= 100 ? { percent: v } : undefined;
  }
  const m = text.match(/^(\d+(?:\.\d+)?)([kKmMgG]?)(i?B)?$/);
  if (!m) return undefined;
  const mult = ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[m[2].toLowerCase()] ?? 1;
  const v = Number(m[1]) * mult;
  return v > 0 ? { bytes: Math.round(v) } : undefined;
}

/**
 * Pre-copy or one shot, from what was asked and what the source kernel can do.
 * refuse: the user asked for pre-copy where it cannot work.
 */
export function chooseMode(
  requested: 'auto' | 'iterative' | 'one-shot',
  dirtyTracking: boolean | undefined,
  transport: 'auto' | 'tls' | 'tunnel' | 'stream' | 'direct',
  postCopy = false,
  hybrid = false,
): { mode: 'iterative' | 'one-shot'; warning?: string; refuse?: boolean; note: string } {
  if (hybrid)
    return dirtyTracking
      ? { mode: 'iterative', note: 'available: pre-copy, then post-copy (--hybrid)' }
      : { mode: 'one-shot', refuse: true, note: 'not available' };
  if (postCopy) return { mode: 'one-shot', note: 'not needed (--post-copy moves memory after the restore)' };
  if (requested === 'one-shot') return { mode: 'one-shot', note: 'not needed (--one-shot)' };
  if (requested === 'auto' && transport === 'stream')
    return { mode: 'one-shot', note: 'not used: --transport stream migrates in one shot' };
  if (!dirtyTracking) {
    if (requested === 'iterative') return { mode: 'one-shot', refuse: true, note: 'not available' };
    return {
      mode: 'one-shot',
      warning: 'the source kernel does not track dirty memory (no soft-dirty): migrating in one shot, without pre-copy',
      note: 'not available: one-shot',
    };
  }
  return { mode: 'iterative', note: 'available: iterative pre-copy' };
}

/** What the transport choice depends on, found by preflight. */
export interface TransportFacts {
  mode: 'iterative' | 'one-shot';
  /** Memory the container uses (runc events --stats), if known. */
  memoryBytes?: number;
  /** Whether CRIU's TLS works on both hosts (and openssl on the source makes the certificates); why not if not. */
  tls: { ok: boolean; why?: string };
  /** The source reaches the destination's address itself (no ProxyJump between them). */
  directRoute: boolean;
  /** The jump hosts in between, by name, when there are. */
  jumpHosts?: string[];
  /** auto's limit for the tar stream (DEFAULTS.autoStreamMaxBytes). */
  streamMaxBytes: number;
  /** --post-copy: the destination fetches pages from a page server on the source. */
  postCopy?: boolean;
}

export type TransportChoice =
  | { transport: 'tls' | 'tunnel' | 'stream' | 'direct'; why: string; refuse?: undefined }
  | { refuse: { message: string; hint: string }; transport?: undefined; why?: undefined };

/**
 * The transport for this migration. auto: the tar stream for a small container in one
 * shot (no page-server round trip), else CRIU's TLS where both hosts have it and the
 * source reaches the destination's address, else the page server through the SSH
 * connection. An explicit choice that cannot work here is refused.
 */
export function chooseTransport(
  requested: 'auto' | 'tls' | 'tunnel' | 'stream' | 'direct',
  f: TransportFacts,
): TransportChoice {
  const mib = (b: number) => `${Math.round(b / 1048576)} MiB`;
  const noRoute = {
    message: `--transport ${requested} needs the destination's address as the source reaches it, and the SSH connection goes through a jump host${f.jumpHosts?.length ? ` (${f.jumpHosts.join(', ')})` : ''}`,
    hint: 'Use --transport tunnel (through the SSH connection), or connect without ProxyJump.',
  };
  if (f.postCopy) {
    // Only TLS: a lazy page server on the source takes a plain connection that closes as
    // "every page was fetched" and destroys the source; a TLS session cut short is an error.
    const back = {
      ...noRoute,
      message: `--post-copy needs the destination to reach the source's address (it fetches pages from it), and the SSH connection goes through a jump host${f.jumpHosts?.length ? ` (${f.jumpHosts.join(', ')})` : ''}`,
      hint: 'Connect without ProxyJump, or migrate without --post-copy.',
    };
    if (!f.directRoute) return { refuse: back };
    if (!f.tls.ok)
      return {
        refuse: {
          message: `--post-copy cannot work here: ${f.tls.why}`,
          hint: "Post-copy fetches pages only over CRIU's TLS: install a CRIU built with TLS (gnutls) on both hosts, or migrate without --post-copy.",
        },
      };
    return { transport: 'tls', why: "post-copy: the destination fetches pages from the source over CRIU's TLS" };
  }
  switch (requested) {
    case 'stream':
      return { transport: 'stream', why: '--transport stream' };
    case 'tunnel':
      return { transport: 'tunnel', why: '--transport tunnel' };
    case 'direct':
      return f.directRoute
        ? { transport: 'direct', why: '--transport direct: pages in clear on the network' }
        : { refuse: noRoute };
    case 'tls':
      if (!f.directRoute) return { refuse: noRoute };
      if (!f.tls.ok)
        return {
          refuse: {
            message: `--transport tls cannot work here: ${f.tls.why}`,
            hint: 'Use --transport tunnel (pages through the SSH connection), or install a CRIU built with TLS (gnutls) on both hosts.',
          },
        };
      return { transport: 'tls', why: '--transport tls' };
  }
  if (f.mode === 'one-shot' && f.memoryBytes !== undefined && f.memoryBytes < f.streamMaxBytes) {
    return { transport: 'stream', why: `auto: ${mib(f.memoryBytes)} in use, below ${mib(f.streamMaxBytes)}` };
  }
  const size =
    f.mode === 'iterative'
      ? 'pre-copy'
      : f.memoryBytes !== undefined
        ? `${mib(f.memoryBytes)} in use`
        : 'memory use unknown';
  if (!f.directRoute)
    return {
      transport: 'tunnel',
      why: `auto: ${size}; no direct route to the destination (ProxyJump), so through the SSH connection`,
    };
  if (!f.tls.ok)
    return {
      transport: 'tunnel',
      why: `auto: ${size}; TLS not available (${f.tls.why}), so through the SSH connection`,
    };
  return { transport: 'tls', why: `auto: ${size}; CRIU's TLS on both hosts` };
}

/**
 * Post-copy's pipe limit on one host: fine, raised by --tune-sysctl (and put back after),
 * or a refusal that says what to set.
 */
export function pipeSizeAction(
  current: number | undefined,
  needed: number,
  tune: boolean,
): { ok: true } | { raise: true; from: number } | { refuse: string } {
  if (current === undefined) return { refuse: 'fs.pipe-max-size cannot be read' };
  if (current >= needed) return { ok: true };
  if (tune) return { raise: true, from: current };
  return { refuse: `fs.pipe-max-size is ${current}, below the ${needed} CRIU's lazy pages need` };
}

/** Auto-converge's steps (QEMU's defaults): the first throttle, each later step, the most. */
export const AUTO_CONVERGE = { startPct: 20, stepPct: 10, maxPct: 99, triggerShare: 0.5 } as const;

/**
 * Auto-converge after iteration ITS[-1] and the stop rule's DECISION, with CURRENT percent
 * in force. The throttle rises (20 %, then 10 % more each iteration, at most 99 %) when
 * memory is dirtied at half the transfer rate or more (QEMU: dirtied bytes above half of
 * those sent), or when the stop rule gave up as not-converging; such a give-up is
 * overridden while the throttle can still rise and iterations are left.
 *
 * At the most, a give-up stands only once the throttle has held a whole iteration's
 * dirtying: the throttle is set after an iteration is measured, so most of the next
 * iteration's dirty pages were written before, under the lower one (in the VMs the first
 * iteration at 99 % carried 8205-10256 pages written at 90 %, the second 3655-5641).
 * ITS[i].throttlePct: the throttle in force during iteration i.
 */
export function convergeStep(
  its: Array<Iteration & { throttlePct?: number }>,
  d: Decision,
  current: number,
  maxIterations: number,
): { throttlePct: number; overrideStop: boolean; why?: string } {
  const a = AUTO_CONVERGE;
  const keepingUp =
    its.length >= 2 && d.dirtyRate !== undefined && d.bandwidth > 0 && d.dirtyRate >= a.triggerShare * d.bandwidth;
  const gaveUp = d.stop && d.reason === 'not-converging';
  if (current >= a.maxPct) {
    const settled = its.length >= 2 && (its[its.length - 2].throttlePct ?? 0) >= a.maxPct;
    const wait = gaveUp && !settled && its.length < maxIterations;
    return {
      throttlePct: current,
      overrideStop: wait,
      why: wait ? `the first iteration at ${current} % was mostly dirtied before it: one more` : undefined,
    };
  }
  if (!(keepingUp || gaveUp) || (d.stop && !gaveUp)) return { throttlePct: current, overrideStop: false };
  const next = current === 0 ? a.startPct : Math.min(a.maxPct, current + a.stepPct);
  const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB/s`;
  return {
    throttlePct: next,
    overrideStop: gaveUp && its.length < maxIterations,
    why: `dirtied at ${mib(d.dirtyRate ?? 0)} against ${mib(d.bandwidth)} sent: CPU throttled ${next} %`,
  };
}
