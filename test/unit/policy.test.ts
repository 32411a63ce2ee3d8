import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  chooseMode,
  chooseTransport,
  decide,
  parseThreshold,
  predictDowntime,
  type Iteration,
  type StopRuleConfig,
} from '../../src/migration/plan/policy.js';
import { decodeStatsImage, encodeStatsImage } from '../../src/criustats.js';

const cfg: StopRuleConfig = {
  maxDowntimeMs: 300,
  maxIterations: 8,
  restoreBaseMs: 100,
  restoreMsPerMiB: 0.5,
  finalDumpCostFactor: 2,
  restoreCostFactor: 1.5,
  steadyShare: 0.1,
};
const MiB = 1048576 / 4096; // pages per MiB

function it(n: number, mibWritten: number, o: Partial<Iteration> = {}): Iteration {
  return {
    n,
    pagesScanned: 64 * MiB,
    pagesWritten: Math.round(mibWritten * MiB),
    pagesSkippedParent: 0,
    frozenMs: 20 + mibWritten * 2,
    memdumpMs: mibWritten * 2,
    // 100 MiB/s
    memwriteMs: mibWritten * 10,
    wallMs: 200 + mibWritten * 10,
    sinceLastMs: n === 1 ? undefined : 1000,
    copyMs: 10,
    dumpMs: 20 + mibWritten * 10,
    ...o,
  };
}

test('converging: keeps going while the prediction is over the limit, stops when it fits', () => {
  const first = [it(1, 64)];
  const d1 = decide(first, cfg);
  assert.equal(d1.stop, false);
  assert.equal(d1.predictedDowntimeMs, undefined, 'no dirty rate after one iteration');
  // 20 MiB dirtied in 1 s at 100 MiB/s: a final dump ~ 20 MiB/s * 1 s = 20 MiB -> 200 ms + fixed
  const d2 = decide([...first, it(2, 20, { wallMs: 1000 })], cfg);
  assert.equal(d2.stop, false, d2.why);
  assert.ok(d2.predictedDowntimeMs! > 300);
  const d3 = decide([...first, it(2, 20, { wallMs: 1000 }), it(3, 1, { wallMs: 210 })], cfg);
  assert.equal(d3.stop, true, d3.why);
  assert.equal(d3.reason, 'downtime');
  assert.ok(d3.predictedDowntimeMs! <= 300);
});

test('not converging: the dirty rate outruns the link', () => {
  // 150 MiB dirtied per second, sent at 100 MiB/s
  const its = [it(1, 64), it(2, 150, { sinceLastMs: 1000 })];
  const d = decide(its, cfg);
  assert.equal(d.stop, true);
  assert.equal(d.reason, 'not-converging');
  assert.ok(d.dirtyRate! >= d.bandwidth);
});

test('not converging: written pages stop shrinking', () => {
  const its = [it(1, 64), it(2, 30, { sinceLastMs: 2000 }), it(3, 29, { sinceLastMs: 2000 })];
  const d = decide(its, { ...cfg, maxDowntimeMs: 10 });
  assert.equal(d.stop, true);
  assert.equal(d.reason, 'not-converging');
});

test('steady: a small dirty set that stops shrinking ends the loop without a warning reason', () => {
  const its = [it(1, 64), it(2, 2, { sinceLastMs: 4000, wallMs: 4000 }), it(3, 2, { sinceLastMs: 4000, wallMs: 4000 })];
  const d = decide(its, { ...cfg, maxDowntimeMs: 10 });
  assert.equal(d.stop, true);
  assert.equal(d.reason, 'steady');
});

test('threshold met (bytes and percent), the downtime rule then unused', () => {
  const its = [it(1, 64), it(2, 5)];
  const pct = decide(its, { ...cfg, threshold: { percent: 10 } });
  assert.equal(pct.stop, true);
  assert.equal(pct.reason, 'threshold');
  const notYet = decide(its, { ...cfg, threshold: { percent: 5 } });
  assert.equal(notYet.stop, false);
  const b = decide(its, { ...cfg, threshold: { bytes: 6 * 1048576 } });
  assert.equal(b.reason, 'threshold');
});

test('max iterations', () => {
  const its = [it(1, 64), it(2, 40, { sinceLastMs: 4000 }), it(3, 30, { sinceLastMs: 4000 })];
  const d = decide(its, { ...cfg, maxDowntimeMs: 1, maxIterations: 3 });
  assert.equal(d.stop, true);
  assert.equal(d.reason, 'max-iterations');
  const one = decide([it(1, 64)], { ...cfg, maxIterations: 1 });
  assert.equal(one.reason, 'max-iterations');
});

test('prediction adds the fixed costs to what is still dirty', () => {
  const p = predictDowntime(
    [it(1, 64), it(2, 10, { wallMs: 1000, sinceLastMs: 1000, memwriteMs: 100, dumpMs: 125, frozenMs: 25, copyMs: 10 })],
    cfg,
  );
  // dirty 10 MiB/s for 1 s = 10 MiB at 100 MiB/s (bandwidth) = 100 ms; a pre-dump's fixed
  // cost 125 - 100 = 25, the final dump's 2 x 25 = 50; copy 10; restore
  // max(100 + 0.5*64, 1.5 x 25) = 132: 292 ms in all
  assert.ok(Math.abs(p.ms! - 292) < 1, String(p.ms));
  // On a slow machine the measured pre-dump cost sets the restore estimate too.
  const slow = predictDowntime(
    [
      it(1, 64),
      it(2, 10, { wallMs: 1000, sinceLastMs: 1000, memwriteMs: 100, dumpMs: 2100, frozenMs: 25, copyMs: 10 }),
    ],
    cfg,
  );
  assert.ok(Math.abs(slow.ms! - (4000 + 100 + 10 + 3000)) < 1, String(slow.ms));
});

test('parseThreshold', () => {
  assert.deepEqual(parseThreshold('10%'), { percent: 10 });
  assert.deepEqual(parseThreshold('64M'), { bytes: 64 * 1048576 });
  assert.deepEqual(parseThreshold('1.5GiB'), { bytes: 1.5 * 1024 ** 3 });
  assert.deepEqual(parseThreshold('500000'), { bytes: 500000 });
  for (const bad of ['0%', '101%', 'x', '-1M', '']) assert.equal(parseThreshold(bad), undefined, bad);
});

test('stats image round-trips through the decoder', () => {
  const s = {
    freezingTimeUs: 1200,
    frozenTimeUs: 45000,
    memdumpTimeUs: 30000,
    memwriteTimeUs: 20000,
    pagesScanned: 300000,
    pagesSkippedParent: 290000,
    pagesWritten: 10000,
    pagesLazy: 0,
  };
  assert.deepEqual(decodeStatsImage(encodeStatsImage(s)), s);
  assert.throws(() => decodeStatsImage(Buffer.alloc(16)), /not a CRIU stats image/);
});

test('decodes a stats-dump written by CRIU 4.2.1 (runc checkpoint of the counter)', () => {
  const img = Buffer.from(
    '4059105506330957230000000a2108cf930610e8b40818ed022049281a300038134000480050045804600068007000',
    'hex',
  );
  const st = decodeStatsImage(img);
  assert.ok(st.pagesScanned >= st.pagesWritten && st.pagesWritten > 0);
  assert.ok(st.frozenTimeUs > st.memdumpTimeUs && st.freezingTimeUs > 0);
  assert.equal(st.pagesSkippedParent, 0);
});

test('one-shot fallback: pre-copy where the kernel tracks dirty memory, one shot with a warning where not, --iterative refused there', () => {
  assert.deepEqual(chooseMode('auto', true, 'auto').mode, 'iterative');
  const fallback = chooseMode('auto', false, 'auto');
  assert.equal(fallback.mode, 'one-shot');
  assert.match(fallback.warning!, /without pre-copy/);
  assert.equal(chooseMode('iterative', false, 'tunnel').refuse, true);
  assert.equal(chooseMode('iterative', true, 'direct').mode, 'iterative');
  assert.equal(chooseMode('one-shot', true, 'auto').mode, 'one-shot');
  assert.equal(chooseMode('auto', undefined, 'stream').mode, 'one-shot');
});

test('transport: auto streams a small one-shot container, takes TLS where both hosts have it, the tunnel where not; explicit choices that cannot work are refused', () => {
  const base = {
    mode: 'one-shot' as const,
    memoryBytes: 10 * 1048576,
    tls: { ok: true },
    directRoute: true,
    streamMaxBytes: 48 * 1048576,
  };
  assert.equal(chooseTransport('auto', base).transport, 'stream');
  assert.match(chooseTransport('auto', base).why!, /10 MiB in use, below 48 MiB/);
  assert.equal(chooseTransport('auto', { ...base, memoryBytes: undefined }).transport, 'tls');
  assert.equal(chooseTransport('auto', { ...base, memoryBytes: 100 * 1048576 }).transport, 'tls');
  // Pre-copy needs a page server whatever the size.
  assert.equal(chooseTransport('auto', { ...base, mode: 'iterative' }).transport, 'tls');
  const noTls = chooseTransport('auto', {
    ...base,
    memoryBytes: 100 * 1048576,
    tls: { ok: false, why: 'criu on the destination has no TLS' },
  });
  assert.equal(noTls.transport, 'tunnel');
  assert.match(noTls.why!, /criu on the destination has no TLS/);
  assert.equal(
    chooseTransport('auto', { ...base, memoryBytes: 100 * 1048576, directRoute: false }).transport,
    'tunnel',
  );
  assert.match(
    chooseTransport('tls', { ...base, tls: { ok: false, why: 'no openssl on the source' } }).refuse!.message,
    /no openssl on the source/,
  );
  assert.match(chooseTransport('tls', { ...base, directRoute: false }).refuse!.hint, /--transport tunnel/);
  assert.ok(chooseTransport('direct', { ...base, directRoute: false }).refuse);
  assert.equal(chooseTransport('direct', base).transport, 'direct');
  assert.equal(chooseTransport('tunnel', { ...base, directRoute: false }).transport, 'tunnel');
  assert.equal(chooseTransport('stream', { ...base, memoryBytes: 1 << 30 }).transport, 'stream');
});
