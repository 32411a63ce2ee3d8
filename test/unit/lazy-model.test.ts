// The lazy window's model (test/model/lazy.ts) over every interleaving of link resets,
// silent drops, the guard's and the watchdog's limits, the tool's death and recover: the
// protocol as built holds its invariants, and the model finds the two faults it was built
// to exclude (the old log-text rule, and a daemon killed without a reset of its session).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkLazy } from '../model/lazy.js';

const built = { daemonFails: false, exitCodeRule: true, killResets: true };

test('the lazy window as built: a kept copy had every page, never a kept copy and a visible source, one copy at the end', () => {
  const r = checkLazy(built);
  assert.ok(r.states > 200, `explored ${r.states} states`);
  assert.deepEqual(r.violations, []);
});

test("a daemon that fails by itself while the link works: the loss CRIU's protocol leaves is the only other end", () => {
  // settled() accepts no visible copy only when the daemon failed by itself.
  assert.deepEqual(checkLazy({ ...built, daemonFails: true }).violations, []);
});

test("the old rule (the daemon's log said it disconnected) keeps a copy whose session was reset mid-transfer", () => {
  const v = checkLazy({ ...built, exitCodeRule: false }).violations;
  assert.equal(v[0]?.invariant, 'a kept copy had every page');
  assert.ok(v[0].trace.includes('the link is reset'), v[0].trace.join(' > '));
});

test('a daemon killed with its session open closes it cleanly, which CRIU reads as complete: the container is lost', () => {
  const v = checkLazy({ ...built, killResets: false }).violations;
  assert.ok(
    v.some(
      (x) =>
        /exactly one visible copy \(found 0\)/.test(x.invariant) &&
        x.trace.includes('CRIU sees the clean close: the source is destroyed'),
    ),
    JSON.stringify(v),
  );
});
