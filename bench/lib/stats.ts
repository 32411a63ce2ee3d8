// Pure figures for the benchmark tables: median and spread of repeated runs, ratios, and
// the Markdown cells the results files show. No I/O.

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}

/** Median (mean of the middle two for an even count), min and max; NaN-free input only. */
export function summarize(values: number[]): Summary {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { n: v.length, median, min: v[0], max: v[v.length - 1] };
}

/** "412 (380-455)" for milliseconds; "-" when nothing was measured. */
export function cell(values: number[], digits = 0): string {
  const s = summarize(values);
  if (s.n === 0) return '-';
  const f = (x: number) => x.toFixed(digits);
  return s.n === 1 ? f(s.median) : `${f(s.median)} (${f(s.min)}-${f(s.max)})`;
}

/** Ratio of medians, "0.42"; "-" when either side is missing. */
export function ratio(a: number[], b: number[]): string {
  const x = summarize(a).median;
  const y = summarize(b).median;
  return Number.isFinite(x) && Number.isFinite(y) && y > 0 ? (x / y).toFixed(2) : '-';
}

/**
 * The order of methods in run `rep` of one size: rotated by one each run, so that no
 * method always runs first (warm caches) or last (a drifting machine).
 */
export function rotation<T>(methods: readonly T[], rep: number): T[] {
  const k = methods.length ? rep % methods.length : 0;
  return [...methods.slice(k), ...methods.slice(0, k)];
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? '-' : (bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 1 : 0);
}

/** The P-th percentile (nearest rank) of V; undefined when V is empty. */
export function percentile(v: number[], p: number): number | undefined {
  if (!v.length) return undefined;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/**
 * The client's request latencies during a lazy window: of SAMPLES ([sent at, latency],
 * ms), those sent from the end of its longest gap (when the destination first answered,
 * GAP_ENDS_AT) for WINDOW ms. None without a window.
 */
export function windowLatencies(
  samples: Array<[number, number]> | undefined,
  gapEndsAtMs: number | undefined,
  windowMs: number | undefined,
): number[] {
  if (!windowMs || !samples || gapEndsAtMs === undefined) return [];
  return samples.filter(([at]) => at >= gapEndsAtMs && at <= gapEndsAtMs + windowMs).map(([, rtt]) => rtt);
}
