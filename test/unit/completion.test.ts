// The bash completion script, run by a real bash: flags, flag values, and positions.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { buildProgram } from '../../src/cli.js';
import { bashCompletion } from '../../src/completion.js';

/** What the script completes for the words typed so far (the last one is being completed). */
function complete(words: string[]): string[] {
  const script = `${bashCompletion(buildProgram())}
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
