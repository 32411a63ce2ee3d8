// The switchover protocol's model (test/model/protocol.ts), explored exhaustively: every
// interleaving of the tool, the hold, the guard, the channel's faults, the environment and
// recover. The new protocol must keep every invariant; the old one (the code before the
// change) must not, and each change that matters must matter on its own.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  explore,
  formatTrace,
  initialState,
  NEW_PROTOCOL,
  OLD_PROTOCOL,
  replay,
  stateKey,
  type Exploration,
  type ProtocolConfig,
  type State,
  type Violation,
} from '../model/protocol.js';

/** Well below what the model has (about 9,000 states for the new protocol): a broken explorer cannot pass by exploring little. */
const MIN_STATES = 5000;

const show = (v: Violation) => `${v.kind}: ${v.detail}\n${formatTrace(v.trace)}`;
const at = (trace: string[], part: string) => trace.findIndex((e) => e.includes(part));

let newRun: Exploration | undefined;
const exploreNew = () => (newRun ??= explore(NEW_PROTOCOL));

describe('the switchover protocol, every interleaving', () => {
  test('the state key is canonical: the order fields were set in does not matter', () => {
    const a = initialState();
    const b = Object.fromEntries(Object.entries(initialState()).reverse()) as unknown as State;
    assert.equal(stateKey(a), stateKey(b));
    assert.notEqual(stateKey(a), stateKey({ ...a, toGuard: ['restore'] }));
  });

  test('the new protocol keeps every invariant in every interleaving', (t) => {
    const r = exploreNew();
    t.diagnostic(
      `new protocol: ${r.states} states, ${r.transitions} transitions, ${r.settled} settled; outcomes ${JSON.stringify(r.outcomes)}`,
    );
    assert.ok(r.states > MIN_STATES, `only ${r.states} states explored`);
    assert.deepEqual(r.violations.map(show), []);
    // Not vacuous: migrations end on either host, and the faults were reached.
    assert.ok((r.outcomes.destination ?? 0) > 0 && (r.outcomes.source ?? 0) > 0, JSON.stringify(r.outcomes));
    assert.ok((r.outcomes['kept-frozen-lost-after-commit'] ?? 0) > 0, 'a copy lost after its commit was never reached');
  });

  test('the new protocol: the only source kept frozen without a commit follows a destination reboot after `committing`', () => {
    // Invariant 2 as stated allows a frozen source only once the destination committed. The
    // guard's markers are on tmpfs: after a reboot, recover cannot tell "commit arrived, then
    // the copy was lost" from "commit never arrived", so it keeps the source frozen in doubt
    // for the operator. Safe, but not a settled single copy: pinned here so a change shows.
    const r = exploreNew();
    assert.ok(r.inDoubt.length > 0);
    for (const s of r.inDoubt) {
      assert.equal(s.guard, 'wiped');
      assert.ok(s.phase === 'committing' || s.phase === 'destination-committed', s.phase);
      assert.equal(s.everCommitted, false);
      assert.deepEqual([s.source, s.verdict, s.final], ['frozen', 'prepared', null]);
    }
  });

  test('the new protocol: a tool that gives up unconfirmed under a partition leaves a stopped copy only', () => {
    const s = replay(NEW_PROTOCOL, [
      'tool: freezes the source (the hold holds it)',
      'tool: starts the guard',
      'tool: sends restore',
      'guard: restores the copy STOPPED, acks verified',
      'net: silent partition (both ways)',
      'tool: timeout/channel closed waiting for verified -> gives up',
      'tool: tells the guard remove',
      'tool: removal not confirmed -> leaves the source to the hold, ends',
      // The hold sees the tool's process gone: it does not wait for its deadline.
      'hold: the tool is gone -> verdict=rollback, source runs',
    ]);
    assert.deepEqual([s.source, s.copy, s.guard], ['resumed', 'stopped', 'waitCommit']);
  });

  test('the old protocol: the tool resumes the source while a partitioned running copy waits for its deadline', (t) => {
    const r = explore(OLD_PROTOCOL);
    t.diagnostic(`old protocol: ${r.states} states, ${r.violations.length} violating states`);
    assert.ok(r.states > MIN_STATES, `only ${r.states} states explored`);
    assert.ok(r.violations.length > 0, 'the old protocol shows no violation');
    const partitioned = r.violations.filter((v) => {
      const partition = at(v.trace, 'net: silent partition');
      return (
        v.kind === 'two-visible-copies' &&
        partition >= 0 &&
        partition < at(v.trace, 'resumes the source anyway') &&
        at(v.trace, 'tool: sends commit') < 0 &&
        v.state.partition !== 'none' &&
        v.state.copy === 'running' &&
        (v.state.guard === 'waitRestore' || v.state.guard === 'waitCommit')
      );
    });
    assert.ok(partitioned.length > 0, `no partition case among:\n${r.violations.slice(0, 3).map(show).join('\n')}`);
    t.diagnostic('shortest partition case:');
    for (const line of formatTrace(partitioned.sort((a, b) => a.trace.length - b.trace.length)[0].trace).split('\n'))
      t.diagnostic(line);
  });

  test('each change, undone alone on top of the new protocol', (t) => {
    const flips: Array<{ undo: Array<keyof ProtocolConfig>; breaks: Violation['kind'][] }> = [
      { undo: ['leaveStopped', 'toolWaitsForConfirmation'], breaks: ['two-visible-copies'] },
      // A running copy is visible at once; the hold resumes the source as soon as the tool's
      // process ends, whatever the tool waited for: two copies.
      { undo: ['leaveStopped'], breaks: ['two-visible-copies'] },
      // recover reads "committed, copy not running" between the guard's marker and its SIGCONT
      // (rolls back, then the guard continues: two copies), or after the copy crashed.
      { undo: ['committedIsFinal'], breaks: ['two-visible-copies', 'source-resumed-after-commit'] },
      // A reboot after the commit wipes the marker: recover resumes the source after a commit.
      { undo: ['recoverTrustsPhase'], breaks: ['source-resumed-after-commit'] },
      // Alone, harmless: the hold resumes the source the moment the tool's process ends, so
      // whether the tool waited for the confirmation changes nothing; a stopped copy is not
      // visible and nothing ever continues it without a commit.
      { undo: ['toolWaitsForConfirmation'], breaks: [] },
      // Alone, harmless for safety: the guard's deadline may already pass at any moment in an
      // untimed model; heartbeat loss only shortens the real-time window.
      { undo: ['heartbeat'], breaks: [] },
    ];
    for (const { undo, breaks } of flips) {
      const cfg: ProtocolConfig = { ...NEW_PROTOCOL };
      for (const flag of undo) cfg[flag] = OLD_PROTOCOL[flag];
      const r = explore(cfg);
      const kinds = [...new Set(r.violations.map((v) => v.kind))].sort();
      t.diagnostic(`undo ${undo.join('+')}: ${r.states} states, violations ${kinds.join(', ') || 'none'}`);
      assert.ok(r.states > MIN_STATES, `${undo.join('+')}: only ${r.states} states explored`);
      assert.deepEqual(
        kinds,
        [...breaks].sort(),
        `${undo.join('+')}:\n${r.violations.slice(0, 1).map(show).join('\n')}`,
      );
    }
  });
});
