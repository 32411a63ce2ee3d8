// Replication's fencing (src/migration/replica/lease.ts): the standby's decisions, and the
// model (test/model/lease.ts) explored over every interleaving of renewals, delays,
// losses, the tool's death and failover attempts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { failover, leaseMargin, renew, runsUntil } from '../../src/migration/replica/lease.js';
import { explore, REAL } from '../model/lease.js';

const ask = { sourceConfirmedStopped: false, force: false, by: 'op' };

describe('the lease on the standby', () => {
  test('renewal: extends from the standby clock; refused after a failover, or while another holder is fresh', () => {
    const a = renew(undefined, 1000, 'src:1', 15000, 'freeze');
    assert.equal(a.answer, 'renewed');
    if (a.answer !== 'renewed') return;
    assert.equal(a.record.expiresAt, 16000);
    const other = renew(a.record, 2000, 'src:2', 15000, 'freeze');
    assert.deepEqual(other, { answer: 'held', by: 'src:1', leftMs: 14000 });
    assert.equal(
      renew(a.record, 16001, 'src:2', 15000, 'freeze').answer,
      'renewed',
      'an expired holder may be replaced',
    );
    const f = failover(a.record, 16001, ask);
    assert.ok('go' in f);
    if (!('go' in f)) return;
    assert.deepEqual(renew(f.go, 17000, 'src:1', 15000, 'freeze'), { answer: 'failed-over', at: 16001, by: 'op' });
  });

  test('failover: only once the lease expired (fence freeze), or with the source confirmed stopped, or forced', () => {
    const rec = { holder: 'src:1', expiresAt: 16000, fence: 'freeze' as const };
    const fresh = failover(rec, 16000, ask);
    assert.ok('refuse' in fresh && /fresh/.test(fresh.refuse));
    assert.ok('go' in failover(rec, 16001, ask));
    assert.ok('go' in failover(rec, 1000, { ...ask, sourceConfirmedStopped: true }));
    assert.ok('go' in failover(rec, 1000, { ...ask, force: true }));
    const none = { ...rec, fence: 'none' as const };
    const r = failover(none, 20000, ask);
    assert.ok('refuse' in r && /does not fence itself/.test(r.refuse) && /--source HOST/.test(r.hint));
    assert.ok('go' in failover(none, 20000, { ...ask, sourceConfirmedStopped: true }));
    const released = failover({ ...rec, released: true }, 20000, ask);
    assert.ok('refuse' in released && /ended cleanly/.test(released.refuse));
    assert.ok('refuse' in failover(undefined, 0, ask));
    const done = failover(rec, 16001, ask);
    assert.ok('go' in done && 'refuse' in failover(done.go, 17000, { ...ask, force: true }), 'never twice');
  });

  test("the source's count ends before the standby's lease, by the margin", () => {
    assert.equal(runsUntil(5000, 15000, leaseMargin(15000)), 5000 + 15000 - 1300);
    assert.ok(leaseMargin(15000) >= 1000);
  });
});

describe('fencing, every interleaving (test/model/lease.ts)', () => {
  test('never two running copies: renewals delayed or lost, the tool dead, failover tried at every tick', (t) => {
    const r = explore(REAL);
    t.diagnostic(`${r.states} states`);
    assert.ok(r.states > 1000, `the explorer saw only ${r.states} states`);
    assert.deepEqual(
      r.violations.map((v) => v.trace.join('\n  ')),
      [],
    );
  });

  test('the model catches the wrong rule: counting the lease from the reply lets both copies run', (t) => {
    const r = explore({ ...REAL, countFrom: 'reply' });
    assert.ok(r.violations.length > 0, 'counting from the reply must be caught');
    t.diagnostic(`the shortest trace:\n  ${r.violations[0].trace.join('\n  ')}`);
  });

  test('--fence none: safe unless failover is forced; forced, two copies can run (what README warns of)', () => {
    assert.deepEqual(explore({ ...REAL, fence: 'none' }).violations, []);
    assert.ok(explore({ ...REAL, fence: 'none', force: true }).violations.length > 0);
  });
});
