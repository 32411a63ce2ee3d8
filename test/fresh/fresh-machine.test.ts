// The fresh-machine check (test/fresh/check.sh): the project's own installation, run in a
// clean Debian 12 root, must leave a CRIU that runs and passes `criu check` there, and the
// README's demo must migrate a container inside it. A machine that already has what
// earlier runs installed cannot show what a new one lacks; this can.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

test('a fresh Debian 12 root installs the dependencies, runs criu check and the demo', {
  timeout: 1_500_000,
}, async () => {
  const r = await execa('bash', [path.join(ROOT, 'test/fresh/check.sh')], {
    reject: false,
    stdin: 'ignore',
    all: true,
    timeout: 1_450_000,
  });
  const out = r.all ?? '';
  // The steps' own lines, so a failure shows where it stopped.
  const lines = out.split('\n').filter((l) => l.startsWith('fresh:'));
  assert.equal(r.exitCode, 0, out.split('\n').slice(-60).join('\n'));
  for (const step of ['dependencies', 'criu version', 'criu check', 'demo']) {
    assert.ok(
      lines.some((l) => l.startsWith(`fresh: ${step}: passed`)),
      `${step} did not pass:\n${lines.join('\n')}`,
    );
  }
  // The demo moved the counter: the destination's counter is past the source's last value.
  const before = Number(out.match(/the source's counter was at (\d+)/)?.[1]);
  const after = [...out.matchAll(/destination: counter at (\d+)/g)].map((m) => Number(m[1]));
  assert.ok(
    Number.isFinite(before) && after.length > 0 && after.every((n) => n > before),
    `counter before ${before}, after ${after.join(',')}`,
  );
});
