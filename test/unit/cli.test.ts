// The front door, as a user meets it: bin/migrate run for real, for input refused before
// anything runs (no host is contacted: each of these ends at the command line).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseTarget } from '../../src/ssh/target.js';
import { resolveOptions } from '../../src/options.js';
import { UsageError } from '../../src/errors.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/migrate');
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

test('with --json a usage error is one JSON object on stdout too: refused, exit 2, the version, the message', () => {
  const r = run('--json', '--max-downtime', 'abc', 'c', 'h');
  assert.equal(r.code, 2);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  const j = JSON.parse(lines[0]) as { outcome: string; exitCode: number; version: string; error: { message: string } };
  assert.equal(j.outcome, 'refused');
  assert.equal(j.exitCode, 2);
  assert.match(j.version, /^\d+\.\d+\.\d+/);
  assert.match(j.error.message, /--max-downtime "abc"/);
  // commander's own errors too (an unknown option)
  const u = run('--json', '--no-such-flag', 'c', 'h');
  assert.equal(u.code, 2);
  assert.match(
    (JSON.parse(u.stdout) as { error: { message: string } }).error.message,
    /unknown option '--no-such-flag'/,
  );
  // without --json, nothing on stdout
  assert.equal(run('--max-downtime', 'abc', 'c', 'h').stdout, '');
  // Once the command line names them, the container and the destination are in it.
  const named = JSON.parse(run('--json', '--one-shot', '--threshold', '10%', 'web1', 'root@h:22').stdout) as {
    container?: string;
    destination?: string;
    source?: string;
  };
  assert.equal(named.container, 'web1');
  assert.equal(named.destination, 'root@h:22');
  assert.equal(named.source, os.hostname());
  assert.equal((JSON.parse(u.stdout) as { container?: string }).container, undefined, 'not guessed from argv');
});

test('too many arguments are refused, not ignored', () => {
  const r = run('a', 'b', 'c');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /too many arguments/);
});

test("ssh's habits get a hint: -p, -J, -F, -l", () => {
  for (const [flag, hint] of [
    ['-p', /host:PORT/],
    ['-J', /ProxyJump/],
    ['-F', /--ssh-config/],
    ['-l', /user@host/],
  ] as const) {
    const r = run(flag, 'x', 'c', 'h');
    assert.equal(r.code, 2, flag);
    assert.match(r.stderr, hint, flag);
  }
  // The value joined to the flag, as ssh also takes it.
  assert.match(run('-p2222', 'c', 'h').stderr, /host:PORT/);
  assert.match(run('-Jjump', 'c', 'h').stderr, /ProxyJump/);
});

test('flags the method would ignore are refused: pre-copy flags with --one-shot or --post-copy, --tune-sysctl without post-copy', () => {
  const one = run('--one-shot', '--threshold', '10%', '--max-iterations', '3', 'c', 'h');
  assert.equal(one.code, 2);
  assert.match(one.stderr, /--threshold, --max-iterations steer pre-copy: --one-shot makes no pre-dumps/);
  const pc = run('--post-copy', '--pre-dump-mode', 'read', 'c', 'h');
  assert.equal(pc.code, 2);
  assert.match(pc.stderr, /--pre-dump-mode steers pre-copy: --post-copy/);
  const ts = run('--tune-sysctl', 'c', 'h');
  assert.equal(ts.code, 2);
  assert.match(ts.stderr, /--tune-sysctl .* without --post-copy or --hybrid/);
  // The same flags with pre-copy pass the command line (hybrid pre-copies too).
  assert.doesNotThrow(() =>
    resolveOptions('c', 'h', { hybrid: true, postCopy: true, given: ['--max-iterations'], tuneSysctl: true }),
  );
});

test('destinations: ssh:// URLs as ssh reads them; host:port:port and a bare word with colons refused before anything runs', () => {
  assert.deepEqual(parseTarget('ssh://root@db1:2222'), { user: 'root', host: 'db1', port: 2222 });
  assert.deepEqual(parseTarget('ssh://db1/'), { user: undefined, host: 'db1', port: undefined });
  assert.deepEqual(parseTarget('fe80::1'), { user: undefined, host: 'fe80::1', port: undefined });
  assert.deepEqual(parseTarget('root@[::1]:22'), { user: 'root', host: '::1', port: 22 });
  assert.throws(() => parseTarget('root@host:1:1'), UsageError);
  assert.throws(() => resolveOptions('c', 'host:1:1', {}), /neither host:port nor an IPv6 address/);
  const r = run('c', 'root@host:1:1');
  assert.equal(r.code, 2);
  assert.doesNotMatch(r.stderr, /runc on the source/, 'no preflight ran');
});

test("migrate help COMMAND shows that command's help", () => {
  const r = run('help', 'recover');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Usage: migrate recover/);
});

test('colour on a terminal only, and never with NO_COLOR or --no-color (under script(1), a real pty)', () => {
  // A terminal as a user's: chalk gives no colour under CI (an unknown CI) or TERM=dumb.
  const { CI: _ci, FORCE_COLOR: _force, ...base } = process.env;
  const onPty = (cmd: string, env: Record<string, string> = {}) =>
    spawnSync('script', ['-qec', cmd, '/dev/null'], {
      encoding: 'utf8',
      env: { ...base, TERM: 'xterm-256color', NO_COLOR: '', ...env },
    }).stdout;
  const cmd = `${process.execPath} ${BIN} --max-downtime abc c h`;
  const ESC = String.fromCharCode(27);
  assert.ok(onPty(cmd).includes(`${ESC}[31merror: --max-downtime`), 'red on a terminal');
  assert.ok(!onPty(cmd, { NO_COLOR: '1' }).includes(ESC));
  assert.ok(!onPty(`${process.execPath} ${BIN} --no-color --max-downtime abc c h`).includes(ESC));
  // NO_COLOR set but empty does not count (no-color.org).
  assert.ok(onPty(cmd, { NO_COLOR: '' }).includes(`${ESC}[31m`));
});

test('not root on this host: refused at once (exit 2), before any probe of runc or CRIU', () => {
  const r = spawnSync(process.execPath, [BIN, 'c', 'h'], { encoding: 'utf8', uid: 65534, gid: 65534 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /must run as root on this host/);
  assert.doesNotMatch(
    r.stderr,
    /criu check|kernel|runc on the source|--force/,
    'no probe ran, and no blame on the kernel',
  );
});

test("recover's help shows its own flags and exit codes, and still accepts the migration's flags (the watchdog passes them)", () => {
  const help = run('recover', '--help').stdout;
  assert.match(help, /--resume-source/);
  assert.match(help, /Exit codes:/);
  assert.doesNotMatch(help, /--post-copy|--max-downtime|--sync-volume/);
  // Accepted all the same: the refusal is the root check's, not commander's.
  const r = spawnSync(process.execPath, [BIN, 'recover', '--post-copy', '--tune-sysctl', 'c', 'h'], {
    encoding: 'utf8',
    uid: 65534,
    gid: 65534,
  });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /must run as root/);
});

test('the man page renders (man -l) and lists every flag --help lists, for migrate and each command', () => {
  const page = run('man').stdout;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'man-'));
  fs.writeFileSync(path.join(dir, 'migrate.1'), page);
  const r = spawnSync('man', ['-l', path.join(dir, 'migrate.1')], {
    encoding: 'utf8',
    env: { ...process.env, MANWIDTH: '100', MANPAGER: 'cat', PAGER: 'cat' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', 'groff has no complaint');
  // man hyphenates long words at line ends: read it with those joined.
  const text = r.stdout.replace(/\u2010\n\s*/g, '').replace(/-\n\s+/g, '-');
  const flagsOf = (help: string) =>
    new Set(help.match(/^\s+(?:-\w, )?(--[\w-]+)/gm)?.map((l) => l.trim().replace(/^-\w, /, '')));
  for (const cmd of [[], ['recover'], ['replicate'], ['failover']]) {
    for (const flag of flagsOf(run(...cmd, '--help').stdout)) {
      if (flag === '--help' || flag === '--version') continue;
      assert.ok(text.includes(flag), `${['migrate', ...cmd].join(' ')} ${flag} is not in the man page`);
    }
  }
  assert.match(text, /EXIT STATUS/);
  assert.match(text, /migrate --dry-run web1/);
});

test('README names every flag --help lists, for migrate and each command', () => {
  const readme = fs.readFileSync(path.resolve(path.dirname(BIN), '../README.md'), 'utf8');
  for (const cmd of [[], ['recover'], ['replicate'], ['failover']]) {
    const help = run(...cmd, '--help').stdout;
    for (const flag of new Set(help.match(/^\s+(?:-\w, )?(--[\w-]+)/gm)?.map((l) => l.trim().replace(/^-\w, /, '')))) {
      if (flag === '--help' || flag === '--version') continue;
      assert.match(
        readme,
        new RegExp(`${flag}(?![\\w-])`),
        `${['migrate', ...cmd].join(' ')} ${flag} is not in README.md`,
      );
    }
  }
});

test('--help: the flags in their groups, each flag in a named group, no line wider than 80 columns', () => {
  const help = run('--help').stdout;
  for (const g of ['Connection:', 'runc and CRIU:', 'Memory method:', 'Network:', 'Files:', 'Safety:', 'Output:'])
    assert.match(help, new RegExp(`^${g}`, 'm'));
  assert.doesNotMatch(help, /^Other:/m, 'a flag in no group (src/help.ts HELP_GROUPS)');
  const wide = help.split('\n').filter((l) => l.length > 80);
  assert.deepEqual(wide, []);
  assert.doesNotMatch(help, /default: "|default: false/, 'defaults as values');
  // the examples start with --dry-run
  assert.match(help.slice(help.indexOf('Examples:')), /^Examples:\n\s+migrate --dry-run/);
});

test('migrate help WORD, WORD no command: exit 2 (not 0), and JSON with --json', () => {
  const r = run('--json', 'help', 'recvoer');
  assert.equal(r.code, 2);
  assert.match((JSON.parse(r.stdout) as { error: { message: string } }).error.message, /"recvoer" is not a command/);
});

test('zone ids and ssh:// destinations: an IPv6 link-local address with its interface; the URL form kept as the host it names', () => {
  assert.equal(parseTarget('root@fe80::1%br_lan').host, 'fe80::1%br_lan');
  assert.equal(resolveOptions('c', 'ssh://root@sb:2222/', {}).destination, 'root@sb:2222');
});
