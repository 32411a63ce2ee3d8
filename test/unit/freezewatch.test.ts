// The freeze watch: the moment the container's freezer is asked to freeze, from its file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { watchFreeze } from '../../src/migration/switchover/freezewatch.js';

test('the freeze is placed within a few ms before the freezer says so (v1 and v2), never after', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-freeze-'));
  try {
    for (const [version, before, after] of [
      [1, 'THAWED\n', 'FREEZING\n'],
      [2, '0\n', '1\n'],
    ] as const) {
      const file = path.join(dir, `f${version}`);
      fs.writeFileSync(file, before);
      const w = await watchFreeze({ file, version });
      await new Promise((r) => setTimeout(r, 30));
      fs.writeFileSync(file, after);
      // Asked by the time the write returned: the freeze is placed at or before that, within a few polls.
      const asked = performance.now();
      await new Promise((r) => setTimeout(r, 30));
      const at = await w.stop();
      // (1 ms of slack: the two threads' clocks are each from their own time origin.)
      assert.ok(at !== undefined && at <= asked + 1, `v${version}: ${at}, asked by ${asked}`);
      assert.ok(asked - at < 50, `v${version}: ${asked - at} ms before the ask`);
    }
    // No freezer, or one that cannot be read: no time (the caller keeps the dump's start).
    assert.equal(await (await watchFreeze(undefined)).stop(), undefined);
    assert.equal(await (await watchFreeze({ file: path.join(dir, 'missing'), version: 2 })).stop(), undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
