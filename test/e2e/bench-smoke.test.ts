// The benchmark harness is not a test, but a one-size, one-run smoke of it keeps it from
// rotting: it must migrate Redis with each transport and write its table.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './hosts.js';

test('bench/transport-crossover.sh runs end to end (16 MB, one run)', async () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rm-bench-')), 'crossover.md');
  const r = await execa('bash', [path.join(ROOT, 'bench/transport-crossover.sh'), '16'], {
    env: { RUNS: '1', OUT: out },
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  assert.equal(r.exitCode, 0, String(r.stderr));
  const md = fs.readFileSync(out, 'utf8');
  const row = md.split('\n').find((l) => l.startsWith('| 16 MB'));
  assert.ok(row, md);
  // Every transport produced a downtime figure.
  const cells = row!.split('|').map((c) => c.trim());
  for (const c of cells.slice(3, 10)) assert.match(c, /^\d+ \(\d+\)$/, row);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});

test('bench/compare.js runs end to end (16 MB, one run, naive, raw and ours)', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-bench-'));
  const r = await execa('node', [path.join(ROOT, 'dist/bench/compare.js')], {
    env: {
      SIZES: '16',
      RUNS: '1',
      COUNTER: '0',
      STARTUP: '0',
      METHODS: 'naive raw-tls ours-tls',
      OUT: out,
      TAG: 'smoke',
    },
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  assert.equal(r.exitCode, 0, String(r.stderr));
  const md = fs.readFileSync(path.join(out, 'smoke.md'), 'utf8');
  // Each method measured a client gap and a freeze-to-running time; the state moved whole.
  for (const m of ['naive', 'raw-tls', 'ours-tls'])
    assert.match(md, new RegExp(`^\\| ${m}( \\| \\d+){5} \\|$`, 'm'), md);
  assert.doesNotMatch(md, /Failed runs/);
  fs.rmSync(out, { recursive: true, force: true });
});
