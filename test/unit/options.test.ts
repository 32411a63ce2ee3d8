import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULTS, parseMoveIp, resolveOptions } from '../../src/options.js';
import { UsageError } from '../../src/errors.js';
import { parsePort, parseTarget } from '../../src/ssh/target.js';

test('defaults come from DEFAULTS', () => {
  const o = resolveOptions('web', 'host', {});
  assert.equal(o.runcRoot, DEFAULTS.runcRoot);
  assert.equal(o.remoteRuncRoot, DEFAULTS.remoteRuncRoot);
  assert.equal(o.diskless, true);
  assert.equal(o.workDir, '/dev/shm');
  assert.equal(o.transport, 'auto');
  assert.equal(o.pageServerPort, DEFAULTS.pageServerPort);
  assert.equal(o.tcpEstablished, true);
  assert.equal(o.bundle, undefined);
});

test('--no-diskless moves both work directories to disk', () => {
  const o = resolveOptions('web', 'host', { diskless: false });
  assert.equal(o.workDir, DEFAULTS.diskWorkDir);
  assert.equal(o.remoteWorkDir, DEFAULTS.diskWorkDir);
});

test('bad values are usage errors', () => {
  assert.throws(() => resolveOptions('web', 'h', { transport: 'pigeon' }), UsageError);
  assert.throws(() => resolveOptions('web', 'h', { pageServerPort: '70000' }), UsageError);
  assert.throws(() => resolveOptions('web', 'h', { runcRoot: 'relative/root' }), UsageError);
  assert.throws(() => resolveOptions('-web', 'h', {}), UsageError);
  assert.throws(() => resolveOptions('web', 'h', { quiet: true, verbose: true }), UsageError);
  assert.throws(() => resolveOptions('web', 'h', { connectTimeout: '0' }), UsageError);
});

test('parseMoveIp', () => {
  assert.deepEqual(parseMoveIp('10.0.0.10/32'), { address: '10.0.0.10', prefix: 32, dev: undefined });
  assert.deepEqual(parseMoveIp('10.0.0.10/24@eth1'), { address: '10.0.0.10', prefix: 24, dev: 'eth1' });
  for (const bad of ['10.0.0.10', '10.0.0.256/32', '10.0.0.1/33', 'fe80::1/64', '10.0.0.1/32@']) {
    assert.throws(() => parseMoveIp(bad), UsageError, bad);
  }
});

test('parseTarget', () => {
  assert.deepEqual(parseTarget('host'), { user: undefined, host: 'host', port: undefined });
  assert.deepEqual(parseTarget('root@10.0.0.2'), { user: 'root', host: '10.0.0.2', port: undefined });
  assert.deepEqual(parseTarget('me@h.example:2222'), { user: 'me', host: 'h.example', port: 2222 });
  assert.deepEqual(parseTarget('[fe80::1]:22'), { user: undefined, host: 'fe80::1', port: 22 });
  assert.deepEqual(parseTarget('fe80::1'), { user: undefined, host: 'fe80::1', port: undefined });
  for (const bad of ['', '@host', 'host:0', 'host:x', '[::1', 'a/b'])
    assert.throws(() => parseTarget(bad), UsageError, bad);
  assert.equal(parsePort('22', 'p'), 22);
});

test("--transport page-server, the tunnel's former name, still works", () => {
  assert.equal(resolveOptions('web', 'h', { transport: 'page-server' }).transport, 'tunnel');
  assert.equal(resolveOptions('web', 'h', { transport: 'tls' }).transport, 'tls');
});

test('--pre-dump-mode: splice by default, read on request, anything else refused', () => {
  assert.equal(resolveOptions('web', 'h', {}).preDumpMode, 'splice');
  assert.equal(resolveOptions('web', 'h', { preDumpMode: 'read' }).preDumpMode, 'read');
  assert.throws(() => resolveOptions('web', 'h', { preDumpMode: 'copy' }), UsageError);
});
