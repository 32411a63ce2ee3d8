// The bash completion script, run by a real bash: flags, flag values, and positions.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { buildProgram } from '../../src/cli.js';
import { bashCompletion } from '../../src/completion.js';

/** What the script completes for the words typed so far (the last one is being completed). */
function complete(words: string[], records = '/nonexistent'): string[] {
  const script = `${bashCompletion(buildProgram(), records)}
runc() { echo web1; echo db; }
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}
_migrate; printf '%s\\n' "\${COMPREPLY[@]}"`;
  return execFileSync('bash', ['-c', script], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

test('flags complete from the command line definition', () => {
  assert.deepEqual(complete(['migrate', '--tra']), ['--transport']);
  assert.ok(complete(['migrate', '--']).includes('--max-downtime'));
});

test('a flag with choices completes its choices', () => {
  assert.deepEqual(complete(['migrate', '--transport', 't']), ['tls', 'tunnel']);
});

test('the first argument completes container names (and subcommands), skipping flag values', () => {
  assert.deepEqual(complete(['migrate', '--transport', 'stream', 'w']), ['web1']);
  assert.deepEqual(complete(['migrate', 'comp']), ['completion']);
  assert.deepEqual(complete(['migrate', 'completion', '']), ['bash']);
});

test('each subcommand completes its own flags, not the migration flags', () => {
  const rec = complete(['migrate', 'recover', '--']);
  assert.ok(rec.includes('--resume-source'), rec.join(' '));
  assert.ok(rec.includes('--identity'));
  assert.ok(!rec.includes('--dry-run'), 'recover rejects --dry-run: not offered');
  assert.ok(!rec.includes('--post-copy'), 'a migration flag recover only accepts for its watchdog');
  assert.ok(complete(['migrate', 'replicate', '--']).includes('--chain-length'));
  assert.ok(!complete(['migrate', '--']).includes('--chain-length'));
  assert.deepEqual(complete(['migrate', 'replicate', '--fence', '']), ['freeze', 'none']);
  assert.deepEqual(complete(['migrate', 'help', 're']), ['recover', 'replicate']);
});

test('recover completes the containers with a record, then the destination the record names', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rm-compl-'));
  try {
    fs.writeFileSync(
      path.join(dir, 'web1.json'),
      `${JSON.stringify({ version: 1, container: 'web1', destination: 'root@10.0.0.2:2222', phase: 'frozen' }, null, 2)}\n`,
    );
    fs.writeFileSync(path.join(dir, 'web1.lock'), '1\n');
    assert.deepEqual(complete(['migrate', 'recover', ''], dir), ['web1']);
    assert.deepEqual(complete(['migrate', 'recover', '-i', 'key', 'web1', ''], dir), ['root@10.0.0.2:2222']);
    // A flag recover takes but does not offer (the watchdog passes it) still takes its value.
    assert.deepEqual(complete(['migrate', 'recover', '--work-dir', '/w', 'web1', ''], dir), ['root@10.0.0.2:2222']);
    // db runs (runc lists it) but has no record: nothing to recover.
    assert.deepEqual(complete(['migrate', 'recover', 'd'], dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the second argument of replicate completes hosts, of failover hosts and local', () => {
  assert.deepEqual(complete(['migrate', 'replicate', 'w']), ['web1']);
  assert.ok(complete(['migrate', 'failover', 'web1', 'lo']).includes('local'));
});
