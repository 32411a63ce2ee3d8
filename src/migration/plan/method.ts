// How the memory moves, decided once (plan.ts) from the options and the preflight's
// facts; every stage reads it from the plan and none re-derives it from the options.
import type { Options } from '../../options.js';

export type MethodKind = 'one-shot' | 'pre-copy' | 'post-copy' | 'hybrid';

/** Post-copy's lazy window: the destination guard's limits (the source's watchdog adds a margin to each). */
export interface LazyLimits {
  readonly stallS: number;
  readonly windowS: number;
}

/** Pre-copy's stop rule as the options give it. */
export interface StopRule {
  readonly threshold?: Options['threshold'];
  readonly maxDowntimeMs: number;
  readonly maxIterations: number;
}

export type Method =
  | { readonly kind: 'one-shot' }
  | { readonly kind: 'pre-copy'; readonly rule: StopRule }
  /** The final dump leaves the memory in the frozen tasks; the destination fetches it from the source's lazy page server. */
  | { readonly kind: 'post-copy'; readonly sourceAddress: string; readonly lazy: LazyLimits }
  | { readonly kind: 'hybrid'; readonly rule: StopRule; readonly sourceAddress: string; readonly lazy: LazyLimits };

/** What a runner does, in order: runners.ts runs them, --dry-run prints them. */
export type RunStage = 'presync' | 'pre-copy' | 'page-server' | 'switchover';

/**
 * Each method's stages. The plan leaves out a stage with nothing to do: the pre-sync
 * without files to sync, the final dump's page server with the stream transport. The
 * switchover is the stop-and-copy one, or post-copy's lazy window for a lazy method.
 */
export const METHOD_STAGES: Record<MethodKind, readonly RunStage[]> = {
  'one-shot': ['presync', 'page-server', 'switchover'],
  'pre-copy': ['presync', 'pre-copy', 'page-server', 'switchover'],
  'post-copy': ['presync', 'switchover'],
  hybrid: ['presync', 'pre-copy', 'switchover'],
};

/** Pre-dumps before the freeze. */
export function preDumps(m: Method): m is Extract<Method, { rule: StopRule }> {
  return m.kind === 'pre-copy' || m.kind === 'hybrid';
}

/** The memory stays on the source after the freeze (post-copy, hybrid). */
export function isLazy(m: Method): m is Extract<Method, { lazy: LazyLimits }> {
  return m.kind === 'post-copy' || m.kind === 'hybrid';
}

/** The method's mode for the report and the pre-copy policy ('iterative' when pre-dumps run). */
export function modeOf(m: Method): 'iterative' | 'one-shot' {
  return preDumps(m) ? 'iterative' : 'one-shot';
}
