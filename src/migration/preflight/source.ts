// The source's checks: they need no network, and change nothing.
import { criu } from '../../criu.js';
import { PreflightError } from '../../errors.js';
import { isNotExist, parseMemoryUsage, parseState, runc } from '../../runc.js';
import { Throttle } from '../pages/throttle.js';
import { chooseMode } from '../plan/policy.js';
import type { LocalSession } from '../session.js';
import type { SourceFacts } from './facts.js';
import type { Checks } from './run.js';
import { criuCheck, toolVersion } from './tools.js';

/** SEEN hears whether the container runs, once the check that looks has looked (a later refusal reports it). */
export async function checkSource(
  s: LocalSession,
  checks: Checks,
  seen: (running: boolean) => void,
): Promise<SourceFacts> {
  const { opts, src } = s;
  await checks.verify(
    'runc on the source',
    async () => `runc ${await toolVersion(src, runc.version(s.srcRunc), 'runc', '--runc')}`,
  );
  const criuVersion = await checks.fact('criu on the source', async () => {
    const v = await toolVersion(src, criu.version(opts.criu), 'criu', '--criu');
    return { fact: v, detail: `criu ${v}` };
  });
  await checks.verify('criu check on the source', () => criuCheck(src, opts.criu), { skippable: true });
  const running = await checks.fact('container running on the source', async () => {
    const r = await src.run(runc.state(s.srcRunc, opts.container), { allowFail: true });
    if (r.code !== 0) {
      const hint = `List the containers with: runc --root ${opts.runcRoot} list (or give the right root with --runc-root DIR).`;
      if (isNotExist(r.stderr)) seen(false);
      if (isNotExist(r.stderr))
        throw new PreflightError(`no container "${opts.container}" in runc root ${opts.runcRoot} on the source`, hint);
      throw new PreflightError(`runc state ${opts.container} failed on the source: ${r.stderr.trim()}`, hint);
    }
    const state = parseState(r.stdout);
    seen(state.status === 'running');
    if (state.status !== 'running') {
      throw new PreflightError(
        `container "${opts.container}" is ${state.status}, not running`,
        state.status === 'paused'
          ? `Resume it first: runc --root ${opts.runcRoot} resume ${opts.container}.`
          : 'Only a running container can be live-migrated.',
      );
    }
    const mem = await src.run(runc.stats(s.srcRunc, opts.container), { allowFail: true, timeoutMs: 10_000 });
    const memoryBytes = mem.code === 0 ? parseMemoryUsage(mem.stdout) : undefined;
    return { fact: { state, memoryBytes }, detail: `pid ${state.pid}, bundle ${state.bundle}` };
  });
  const mode = await checks.fact('dirty-memory tracking on the source (pre-copy)', async () => {
    const needsProbe =
      opts.mode !== 'one-shot' &&
      (!opts.postCopy || opts.hybrid) &&
      !(opts.mode === 'auto' && opts.transport === 'stream');
    const tracking = needsProbe
      ? (await src.run(criu.checkFeature(opts.criu, 'mem_dirty_track'), { allowFail: true })).code === 0
      : undefined;
    const m = chooseMode(opts.mode, tracking, opts.transport, opts.postCopy, opts.hybrid);
    if (m.refuse && opts.hybrid) {
      throw new PreflightError(
        'this kernel does not track dirty memory (criu check --feature mem_dirty_track fails): --hybrid cannot pre-copy here',
        'Migrate with --post-copy (no pre-copy), or from a kernel built with CONFIG_MEM_SOFT_DIRTY.',
      );
    }
    if (m.refuse) {
      throw new PreflightError(
        'this kernel does not track dirty memory (criu check --feature mem_dirty_track fails): pre-copy cannot work here',
        'Migrate in one shot (--one-shot, or leave out --iterative), or use a kernel built with CONFIG_MEM_SOFT_DIRTY.',
      );
    }
    if (m.warning) s.progress.warn(m.warning);
    return { fact: m.mode, detail: m.note };
  });
  const throttle = await checks.fact('CPU throttle (auto-converge)', async () => {
    if (!opts.autoConverge) return { fact: undefined, detail: 'not used' };
    if (mode !== 'iterative') {
      throw new PreflightError(
        '--auto-converge needs pre-copy, and this migration is one-shot (the source kernel does not track dirty memory)',
        'Leave out --auto-converge, or migrate from a kernel with soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY).',
      );
    }
    const t = await Throttle.check(running.state.pid);
    if ('refuse' in t)
      throw new PreflightError(
        `--auto-converge cannot throttle ${opts.container}: ${t.refuse}`,
        "Leave out --auto-converge, or enable the cpu controller for the container's cgroup.",
      );
    return { fact: t.describe, detail: `${t.describe}; raised only while pre-copy does not converge` };
  });
  return {
    state: running.state,
    bundle: opts.bundle ?? running.state.bundle,
    memoryBytes: running.memoryBytes,
    criuVersion,
    mode,
    throttle,
  };
}
