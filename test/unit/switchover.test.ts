// The switchover transaction with fake sides: the tool "dies" at every step (the fake
// throws Death there and nothing more of the coordinator runs), then the participants do
// what the real ones do when their coordinator is gone (the source's hold, the
// destination's guard), then recovery decides from what they show. Every crash point
// must end with the container on exactly one host.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decideRecovery } from '../../src/migration/recover/recovery.js';
import {
  switchover,
  type DestinationSide,
  type SourceSide,
  type SwitchoverHooks,
} from '../../src/migration/switchover/switchover.js';
import type { IntentPhase } from '../../src/migration/recover/intent.js';

class Death extends Error {}

/** Both hosts as the real participants would leave them. */
interface World {
  src: 'running' | 'frozen' | 'gone';
  /** The hold's files. */
  verdict?: string;
  final?: string;
  /** restored: stopped, invisible until the commit continues it. */
  dst: 'none' | 'restored' | 'committed';
  guard: { alive: boolean; removed: boolean; committed: boolean };
  phase?: IntentPhase;
  log: string[];
  dead?: boolean;
}

function world(): World {
  return { src: 'running', dst: 'none', guard: { alive: false, removed: false, committed: false }, log: [] };
}

/** Fake sides over a world; `dieAt` names the step where the coordinator dies. */
function sides(
  w: World,
  dieAt?: string,
  failAt?: string,
): { src: SourceSide; dst: DestinationSide; hooks: SwitchoverHooks } {
  const step = (name: string) => {
    // A dead coordinator takes no further step: whatever it would call next fails too.
    if (w.dead) throw new Death(name);
    w.log.push(name);
    if (name === dieAt) {
      w.dead = true;
      throw new Death(name);
    }
    if (name === failAt) throw new Error(`failure at ${name}`);
  };
  const src: SourceSide = {
    record: async (phase) => {
      step(`record-${phase}`);
      w.phase = phase;
    },
    freeze: async () => {
      step('freeze');
      w.src = 'frozen';
      return { held: true };
    },
    releaseAddress: async () => step('release'),
    prepare: async () => {
      step('prepare');
      if (w.verdict) return false;
      w.verdict = 'prepared';
      return true;
    },
    finish: async (v) => {
      step(`finish-${v}`);
      w.final ??= v;
      w.src = w.final === 'commit' ? 'gone' : 'running';
    },
    resume: async () => {
      step('resume');
      if (w.verdict === 'prepared') w.final ??= 'rollback';
      else w.verdict ??= 'rollback';
      w.src = 'running';
    },
    afterCommit: async () => step('after-commit'),
    holdEndsAt: () => Date.now() + 60_000,
    // The hold's own deadline: the guard has removed its copy by then (its deadline is earlier).
    outlast: async () => {
      step('outlast');
      if (w.dst === 'restored') w.dst = 'none';
      w.guard = { alive: false, removed: true, committed: false };
      w.verdict ??= 'rollback-timeout';
      w.src = 'running';
    },
  };
  const dst: DestinationSide = {
    startGuard: async () => {
      step('guard');
      w.guard.alive = true;
    },
    guardEndsBy: () => Date.now() + 50_000,
    copyImages: async () => {
      step('copy');
      return 1;
    },
    syncFiles: async () => {
      step('sync');
      return true;
    },
    restore: async () => {
      step('restore');
      w.dst = 'restored';
    },
    commit: async () => {
      // The guard commits on the word; the death can come before the acknowledgement.
      w.dst = 'committed';
      w.guard = { alive: false, removed: false, committed: true };
      step('commit-ack');
      return { trouble: [] };
    },
    // The channel is closed: a guard that did not commit removes its copy.
    settle: async () => {
      if (w.guard.committed) return 'committed';
      if (w.dst === 'restored') w.dst = 'none';
      w.guard = { alive: false, removed: true, committed: false };
      return 'removed';
    },
    remove: async () => {
      step('remove');
      if (w.dst !== 'committed') {
        w.dst = 'none';
        w.guard = { alive: false, removed: true, committed: false };
      }
      return w.dst === 'none';
    },
  };
  const hooks: SwitchoverHooks = {
    step: (_name, _title, run) => run(),
    warn: (m) => w.log.push(`warn: ${m}`),
    killPoint: (p) => step(`kill-${p}`),
    fail: () => undefined,
    moveIp: true,
    syncFiles: true,
  };
  return { src, dst, hooks };
}

/** What the real participants do once their coordinator is gone. */
function orphaned(w: World): void {
  // The guard: its channel closed; it removes an uncommitted copy (and its claim).
  if (w.guard.alive) {
    if (w.dst === 'restored') w.dst = 'none';
    w.guard = { alive: false, removed: true, committed: false };
  }
  // The hold: before a verdict it rolls back by itself; once prepared it waits.
  if (w.src === 'frozen' && w.verdict === undefined) {
    w.verdict = 'rollback-orphaned';
    w.src = 'running';
  }
}

/** migrate recover, on the fake world. */
function recoverWorld(w: World): void {
  if (w.src !== 'frozen' && w.final === undefined && w.verdict !== 'prepared') return;
  const d = decideRecovery({
    hold: { verdict: w.verdict, final: w.final },
    checkpointRunning: w.src === 'frozen' && w.verdict === undefined,
    guard: { ...w.guard, present: true },
    destinationStatus: w.dst === 'none' ? 'missing' : 'running',
    phase: w.phase ?? 'frozen',
  });
  if (d.action === 'destination') {
    w.final ??= 'commit';
    w.src = 'gone';
  } else if (d.action === 'source') {
    if (d.removeDestinationCopy && w.dst !== 'committed') w.dst = 'none';
    if (d.finalVerdict) w.final ??= d.finalVerdict;
    w.src = 'running';
  } else {
    assert.fail(`recovery could not decide: ${d.action} (${d.why})`);
  }
}

/** Where the container runs: a restored copy is stopped until the commit, invisible. */
const running = (w: World) =>
  [w.src === 'running' ? 'source' : undefined, w.dst === 'committed' ? 'destination' : undefined].filter(Boolean);

/** Every step the coordinator takes on the way, in order (from a run without deaths). */
async function steps(): Promise<string[]> {
  const w = world();
  const s = sides(w);
  await switchover(s.src, s.dst, s.hooks);
  return w.log.filter((l) => !l.startsWith('warn'));
}

describe('the switchover as a two-phase commit', () => {
  test('a run without failures commits the destination first, then the source', async () => {
    const log = await steps();
    assert.ok(log.indexOf('commit-ack') < log.indexOf('finish-commit'), log.join(' '));
    assert.ok(log.indexOf('prepare') < log.indexOf('commit-ack'), log.join(' '));
    assert.ok(
      log.indexOf('record-prepared') < log.indexOf('prepare'),
      'the record is written before the step it names',
    );
  });

  test('the images are spent by the restore only where a source can resume; without one they are kept', async () => {
    for (const destroyed of [false, true]) {
      const w = world();
      const s = sides(w);
      let asked: { keepImages?: boolean } | undefined;
      const start = s.dst.startGuard;
      s.dst.startGuard = (o) => {
        asked = o;
        return start(o);
      };
      if (destroyed) {
        s.src.freeze = async () => {
          w.src = 'gone';
          return { held: false, destroyed: true, why: 'the checkpoint ended without its hold' };
        };
      }
      const r = await switchover(s.src, s.dst, s.hooks);
      assert.equal(r.runningOn, 'destination');
      assert.equal(asked?.keepImages, destroyed);
    }
  });

  test("the downtime's parts: each step from the freeze to the commit, and the rest; the finish is not one", async () => {
    const w = world();
    const s = sides(w);
    const slow = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const hooks: SwitchoverHooks = {
      ...s.hooks,
      step: async (name, _t, run) => {
        await slow(name === 'restore' ? 40 : name === 'finish' ? 60 : 5);
        return run();
      },
    };
    const r = await switchover(s.src, s.dst, hooks);
    assert.equal(r.runningOn, 'destination');
    if (r.runningOn !== 'destination') return;
    const p = r.downtimeParts!;
    assert.deepEqual(Object.keys(p), ['dump', 'copy', 'restore', 'prepare', 'commit', 'other']);
    assert.ok(p.restore! >= 39, JSON.stringify(p));
    const sum = Object.values(p).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - r.downtimeMs) < 1, `${sum} against ${r.downtimeMs}`);
    // (The source's finish, after the commit, is not among the keys: not in the downtime.)
  });

  test('the tool dying at any step leaves the container on exactly one host, after recovery at most', async () => {
    const all = await steps();
    assert.ok(all.length > 12, all.join(' '));
    for (const point of all) {
      const w = world();
      const s = sides(w, point);
      await switchover(s.src, s.dst, s.hooks).catch((e) => {
        if (!(e instanceof Death)) throw e;
      });
      assert.ok(w.dead, `never reached ${point}`);
      orphaned(w);
      const before = running(w);
      recoverWorld(w);
      const after = running(w);
      assert.equal(
        after.length,
        1,
        `died at ${point}: running on ${after.join(' and ') || 'no host'} (before recovery: ${before.join(', ')})`,
      );
      // Never two at once, even before recovery: an in-doubt source is frozen, not running.
      assert.ok(before.length <= 1, `died at ${point}: running on both hosts before recovery`);
      // The destination keeps the container once it committed: the commit is not undone.
      if (all.indexOf(point) > all.indexOf('commit-ack')) assert.deepEqual(after, ['destination'], `died at ${point}`);
    }
  });

  test('a failure at any step before the prepare rolls back to the source, destination clean', async () => {
    const all = await steps();
    for (const point of all.slice(all.indexOf('guard'), all.indexOf('record-prepared'))) {
      if (point.startsWith('kill-')) continue;
      const w = world();
      const s = sides(w, undefined, point);
      const r = await switchover(s.src, s.dst, s.hooks);
      assert.equal(r.runningOn, 'source', point);
      assert.deepEqual(running(w), ['source'], point);
    }
  });

  test('a hold that ended by itself before the prepare: the destination copy goes, the source runs', async () => {
    const w = world();
    const s = sides(w);
    const restore = s.dst.restore;
    s.dst.restore = async () => {
      await restore();
      w.verdict = 'rollback-timeout';
      w.src = 'running';
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'source');
    assert.deepEqual(running(w), ['source']);
  });

  test('a commit not acknowledged and not made: the source gets the final rollback', async () => {
    const w = world();
    const s = sides(w);
    s.dst.commit = async () => {
      throw new Error('channel closed');
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'source');
    assert.equal(w.final, 'rollback');
    assert.equal(w.dst, 'none');
    assert.deepEqual(running(w), ['source']);
  });

  test('a commit not acknowledged but made: the migration stands', async () => {
    const w = world();
    const s = sides(w);
    s.dst.commit = async () => {
      w.dst = 'committed';
      w.guard = { alive: false, removed: false, committed: true };
      throw new Error('the acknowledgement was lost');
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'destination');
    assert.deepEqual(running(w), ['destination']);
  });

  test('a commit not acknowledged and the destination unreachable: in doubt, the source stays frozen', async () => {
    const w = world();
    const s = sides(w);
    s.dst.commit = async () => {
      throw new Error('connection lost');
    };
    s.dst.settle = async () => undefined;
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'in-doubt');
    assert.equal(w.src, 'frozen');
    assert.equal(w.final, undefined);
  });

  test('the destination cannot be confirmed clean before the prepare: the tool leaves the source to its hold', async () => {
    const w = world();
    const s = sides(w, undefined, 'restore');
    s.dst.remove = async () => {
      w.log.push('remove');
      return false;
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'source');
    assert.ok(!w.log.includes('resume') && w.log.includes('outlast'), w.log.join(' '));
  });

  test("a guard that would give up too close to the hold's deadline: rolled back before the restore", async () => {
    const w = world();
    const s = sides(w);
    s.dst.guardEndsBy = () => s.src.holdEndsAt() - 2000;
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'source');
    assert.match((r as { error: Error }).error.message, /started too late/);
    assert.ok(!w.log.includes('restore'), w.log.join(' '));
  });

  test('committed is final: a copy whose tasks could not all be continued keeps the source frozen, in doubt', async () => {
    const w = world();
    const s = sides(w);
    s.dst.commit = async () => {
      w.dst = 'committed';
      return { trouble: ['resume-failed 1234'] };
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'in-doubt');
    assert.equal(w.src, 'frozen');
    assert.equal(w.final, undefined);
  });

  test('an address the destination could not announce after its commit: migrated, and the result says so', async () => {
    const w = world();
    const s = sides(w);
    s.dst.commit = async () => {
      w.dst = 'committed';
      return { trouble: ['announce-failed 2'] };
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'destination');
    assert.equal((r as { announceFailed?: string }).announceFailed, 'announce-failed 2');
  });

  test('a failure after the commit is a warning, not a failed migration', async () => {
    const w = world();
    const s = sides(w);
    s.src.afterCommit = async () => {
      throw new Error('du failed');
    };
    const r = await switchover(s.src, s.dst, s.hooks);
    assert.equal(r.runningOn, 'destination');
  });
});

describe('recovery decisions', () => {
  const guard = (o: Partial<{ committed: boolean; removed: boolean; alive: boolean; present: boolean }> = {}) => ({
    committed: false,
    removed: false,
    alive: false,
    present: true,
    ...o,
  });
  const phase = 'prepared' as const;
  test('in doubt with the destination unreachable: nothing is decided', () => {
    assert.equal(decideRecovery({ hold: { verdict: 'prepared' }, checkpointRunning: true, phase }).action, 'in-doubt');
  });
  test('committed is final: the copy gone after the commit keeps the source frozen, unless the operator says otherwise', () => {
    const f = {
      hold: { verdict: 'prepared' },
      checkpointRunning: true,
      guard: guard({ committed: true }),
      destinationStatus: 'missing',
      phase: 'committing' as const,
    };
    assert.equal(decideRecovery(f).action, 'kept');
    const d = decideRecovery({ ...f, resumeSource: true });
    assert.deepEqual([d.action, (d as { finalVerdict?: string }).finalVerdict], ['source', 'rollback']);
  });
  test('a committed copy is continued by recover (the guard may have died before it continued every task)', () => {
    const d = decideRecovery({
      hold: { verdict: 'prepared' },
      checkpointRunning: true,
      guard: guard({ committed: true }),
      destinationStatus: 'running',
      phase: 'committing',
    });
    assert.equal((d as { resumeCopy?: boolean }).resumeCopy, true);
  });
  test('no trace of the guard (the destination rebooted): kept once the commit may have been sent, rolled back before', () => {
    const f = {
      hold: { verdict: 'prepared' },
      checkpointRunning: true,
      guard: guard({ present: false }),
      destinationStatus: 'missing',
    };
    assert.equal(decideRecovery({ ...f, phase: 'committing' }).action, 'kept');
    assert.equal(decideRecovery({ ...f, phase: 'destination-committed' }).action, 'kept');
    assert.equal(decideRecovery({ ...f, phase: 'prepared' }).action, 'source');
  });
  test('in doubt, the guard committed and the copy runs: commit', () => {
    const d = decideRecovery({
      hold: { verdict: 'prepared' },
      checkpointRunning: true,
      guard: guard({ committed: true }),
      destinationStatus: 'running',
      phase,
    });
    assert.deepEqual([d.action, (d as { finalVerdict?: string }).finalVerdict], ['destination', 'commit']);
  });
  test('in doubt, the guard removed its copy: rollback', () => {
    const d = decideRecovery({
      hold: { verdict: 'prepared' },
      checkpointRunning: true,
      guard: guard({ removed: true }),
      destinationStatus: 'missing',
      phase,
    });
    assert.deepEqual([d.action, (d as { finalVerdict?: string }).finalVerdict], ['source', 'rollback']);
  });
  test('in doubt, the guard still deciding: wait', () => {
    assert.equal(
      decideRecovery({
        hold: { verdict: 'prepared' },
        checkpointRunning: true,
        guard: guard({ alive: true }),
        destinationStatus: 'running',
        phase,
      }).action,
      'wait',
    );
  });
  test('the hold rolled back by itself: the source, and a leftover copy goes', () => {
    const d = decideRecovery({
      hold: { verdict: 'rollback-orphaned' },
      checkpointRunning: false,
      guard: guard(),
      destinationStatus: 'running',
      phase: 'restoring',
    });
    assert.equal(d.action, 'source');
    assert.equal((d as { removeDestinationCopy: boolean }).removeDestinationCopy, true);
  });
  test('a final verdict already written decides', () => {
    assert.equal(
      decideRecovery({ hold: { verdict: 'prepared', final: 'commit' }, checkpointRunning: false, phase }).action,
      'destination',
    );
    assert.equal(
      decideRecovery({
        hold: { verdict: 'prepared', final: 'rollback' },
        checkpointRunning: false,
        guard: guard(),
        destinationStatus: 'missing',
        phase,
      }).action,
      'source',
    );
  });
  test('the tool died during pre-copy: the source ran all along; only the images go, once the pre-dump under way ended', () => {
    assert.equal(decideRecovery({ hold: {}, checkpointRunning: true, phase: 'precopy' }).action, 'wait');
    const d = decideRecovery({
      hold: {},
      checkpointRunning: false,
      guard: guard({ present: false }),
      destinationStatus: 'missing',
      phase: 'precopy',
    });
    assert.deepEqual([d.action, (d as { removeDestinationCopy: boolean }).removeDestinationCopy], ['source', false]);
  });
  test('only the clean-up of a committed migration was left: the destination; of a rolled-back one: the source', () => {
    assert.equal(decideRecovery({ hold: {}, checkpointRunning: false, phase: 'committed' }).action, 'destination');
    const d = decideRecovery({
      hold: {},
      checkpointRunning: false,
      guard: guard({ present: false }),
      destinationStatus: 'missing',
      phase: 'rolled-back',
    });
    assert.deepEqual([d.action, (d as { removeDestinationCopy: boolean }).removeDestinationCopy], ['source', false]);
  });
  test('no verdict while the checkpoint still runs: wait for the hold', () => {
    assert.equal(
      decideRecovery({
        hold: {},
        checkpointRunning: true,
        guard: guard(),
        destinationStatus: 'missing',
        phase: 'frozen',
      }).action,
      'wait',
    );
  });
});

/**
 * The plan of a container running on '/b' with its rootfs synced, as preflight would have
 * found it: RAW the command line's flags, and what the checks found (mode, transport, --move-ip).
 */
async function planFor(
  raw: Record<string, unknown>,
  found: { mode: 'one-shot' | 'iterative'; transport: string; moveIp?: boolean },
) {
  const { makePlan } = await import('../../src/migration/plan/plan.js');
  const { resolveOptions } = await import('../../src/options.js');
  const opts = resolveOptions('web', 'host', raw);
  const session = {
    opts,
    srcRunc: { runc: 'runc', root: '/run/runc' },
    dstRunc: { runc: 'runc', root: '/run/runc' },
  } as unknown as Parameters<typeof makePlan>[0];
  const facts = {
    source: {
      state: { pid: 1, bundle: '/b', status: 'running' },
      bundle: '/b',
      memoryBytes: 1 << 20,
      criuVersion: '4.2',
      mode: found.mode,
    },
    destination: {
      criuVersion: '4.2',
      transport: found.transport,
      transportWhy: 'test',
      address: '10.0.0.2',
      sourceAddress: '10.0.0.1',
      pipeSizes: [],
      punchHoles: true,
      moveIp: found.moveIp
        ? { address: '10.0.0.9', prefix: 32, srcDev: 'eth0', dstDev: 'eth0', arping: ['arping'], srcArping: ['arping'] }
        : undefined,
      files: {
        plan: {
          trees: [{ what: 'rootfs', containerPath: '/', src: '/b/rootfs', dst: '/b/rootfs' }],
          mounts: [],
          notSynced: [],
        },
        shared: [],
      },
    },
  } as unknown as Parameters<typeof makePlan>[1];
  return makePlan(session, facts);
}

describe('the plan', () => {
  test("each method's plan holds the stages its runner runs, and --dry-run shows them in that order", async () => {
    const cases = [
      { raw: {}, mode: 'one-shot', transport: 'tls', stages: ['presync', 'page-server', 'switchover'] },
      { raw: {}, mode: 'one-shot', transport: 'stream', stages: ['presync', 'switchover'] },
      { raw: {}, mode: 'iterative', transport: 'direct', stages: ['presync', 'pre-copy', 'page-server', 'switchover'] },
      { raw: { postCopy: true }, mode: 'one-shot', transport: 'tls', stages: ['presync', 'switchover'] },
      {
        raw: { postCopy: true, hybrid: true },
        mode: 'iterative',
        transport: 'tls',
        stages: ['presync', 'pre-copy', 'switchover'],
      },
    ] as const;
    for (const c of cases) {
      const plan = await planFor(c.raw, c);
      assert.deepEqual(plan.stages, c.stages, JSON.stringify(c.raw));
      // The dry run's steps: the stages, the switchover's expanded into its own.
      const shown = [
        ...new Set(
          plan.steps.map((st) => (['presync', 'pre-copy', 'page-server'].includes(st.step) ? st.step : 'switchover')),
        ),
      ];
      assert.deepEqual(shown, c.stages, JSON.stringify(c.raw));
    }
  });

  test('--dry-run shows the steps the switchover takes, in its order', async () => {
    const plan = await planFor({ moveIp: '10.0.0.9/32' }, { mode: 'one-shot', transport: 'stream', moveIp: true });
    // The steps a run takes, as the progress hook sees them.
    const w = world();
    const s = sides(w);
    const taken: string[] = [];
    await switchover(s.src, s.dst, { ...s.hooks, step: (name, _t, run) => (taken.push(name), run()) });
    // The pre-sync runs before the switchover (as pre-copy and the page server do).
    assert.equal(plan.steps[0].step, 'presync');
    assert.deepEqual(
      plan.steps.slice(1).map((p) => p.step),
      taken,
    );
    assert.ok(plan.holdTimeoutS >= 60 && plan.guardDeadlineS < plan.holdTimeoutS);
  });
});
