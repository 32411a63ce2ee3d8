// The tool installs as Node command-line tools do: `npm pack` makes a tarball that
// `npm install -g` turns into a working `migrate` on PATH, run from any directory, with
// nothing read from this source tree.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

test('npm pack, then npm install -g of the tarball, gives a working migrate on PATH', {
  timeout: 300_000,
}, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-pack-'));
  try {
    const packed = await execa('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT, stdin: 'ignore' });
    const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info.files.map((f) => f.path);
    // What a user needs, and nothing of the development tree.
    for (const f of ['bin/migrate', 'dist/src/cli.js', 'dist/src/migration/migrate.js', 'package.json', 'README.md'])
      assert.ok(files.includes(f), `${f} missing from the tarball: ${files.join(' ')}`);
    for (const f of files)
      assert.doesNotMatch(
        f,
        /^(src|test|bench|examples|dist\/test|dist\/bench)\//,
        `${f} should not be in the tarball`,
      );

    const prefix = path.join(tmp, 'global');
    await execa(
      'npm',
      [
        'install',
        '-g',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--prefix',
        prefix,
        path.join(tmp, info.filename),
      ],
      { cwd: tmp, stdin: 'ignore' },
    );
    // From a directory outside the repository, with the install's bin first on PATH.
    const env = { PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}`, NO_COLOR: '1' };
    const run = (args: string[]) => execa('migrate', args, { cwd: '/', env, reject: false, stdin: 'ignore' });
    const version = await run(['--version']);
    assert.equal(version.exitCode, 0, version.stderr);
    assert.equal(version.stdout.trim(), pkg.version);
    const help = await run(['--help']);
    assert.equal(help.exitCode, 0, help.stderr);
    assert.match(help.stdout, /^Usage: migrate /m);
    assert.match(help.stdout, /Exit codes:/);
    const completion = await run(['completion', 'bash']);
    assert.equal(completion.exitCode, 0, completion.stderr);
    assert.match(completion.stdout, /^complete -F _migrate migrate$/m);
    // The installed copy runs from the install prefix, not from this tree.
    const real = fs.realpathSync(path.join(prefix, 'bin', 'migrate'));
    assert.ok(real.startsWith(fs.realpathSync(prefix)), real);
    // Usage errors still work from there (exit 2, a hint).
    const bad = await run(['only-one-argument']);
    assert.equal(bad.exitCode, 2);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
