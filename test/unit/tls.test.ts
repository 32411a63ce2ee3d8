// The TLS transport's pure parts: openssl's command lines and configuration, CRIU's TLS
// options, the port rules, and the transfer line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { caConfig, criuTlsConfig, openssl, opensslDate } from '../../src/openssl.js';
import { criu, criuHasTls } from '../../src/criu.js';
import { addressFamily, firewall } from '../../src/firewall.js';
import { transferLine } from '../../src/migration/pages/meter.js';

test("openssl: backdated validity in openssl ca's form, the CA self-signed, leaves signed by it", () => {
  assert.equal(opensslDate(new Date('2026-11-23T15:44:00.123Z')), '20261123154400Z');
  const ca = openssl.sign({
    config: '/w/ca.cnf',
    csr: '/w/ca.csr',
    out: '/w/ca.crt',
    ext: 'ca_cert',
    start: new Date(0),
    end: new Date(1000),
    selfSign: true,
    caKey: '/w/ca.key',
  });
  assert.ok(ca.includes('-selfsign') && !ca.includes('-cert'));
  assert.deepEqual(ca.slice(ca.indexOf('-startdate'), ca.indexOf('-startdate') + 4), [
    '-startdate',
    '19700101000000Z',
    '-enddate',
    '19700101000001Z',
  ]);
  const leaf = openssl.sign({
    config: '/w/ca.cnf',
    csr: '/w/s.csr',
    out: '/w/s.crt',
    ext: 'server_cert',
    start: new Date(0),
    end: new Date(1000),
    caCert: '/w/ca.crt',
    caKey: '/w/ca.key',
  });
  assert.deepEqual(leaf.slice(-2), ['-cert', '/w/ca.crt']);
  assert.ok(openssl.request('/w/k', '/w/r', 'x y').includes('/CN=x y'));
});

test("certificates name the page server's address (IP or DNS): CRIU checks it on both ends", () => {
  const v4 = caConfig('/w', '10.0.0.2');
  assert.equal((v4.match(/subjectAltName = IP:10\.0\.0\.2/g) ?? []).length, 2);
  assert.match(v4, /\[server_cert\][^[]*serverAuth/);
  assert.match(v4, /\[client_cert\][^[]*clientAuth/);
  assert.match(v4, /\[ca_cert\][^[]*CA:TRUE, pathlen:0/);
  assert.match(caConfig('/w', 'fd00::2'), /subjectAltName = IP:fd00::2/);
  assert.match(caConfig('/w', 'dst.example'), /subjectAltName = DNS:dst\.example/);
});

test("CRIU's TLS: page-server options, the dump's config lines, and the probe", () => {
  const a = criu.pageServer('criu', {
    imagesDir: '/i',
    workDir: '/w',
    address: '10.0.0.2',
    port: 1,
    logFile: '/l',
    tls: { caCert: '/t/ca.crt', cert: '/t/s.crt', key: '/t/s.key' },
  });
  assert.deepEqual(a.slice(-7), [
    '--tls',
    '--tls-cacert',
    '/t/ca.crt',
    '--tls-cert',
    '/t/s.crt',
    '--tls-key',
    '/t/s.key',
  ]);
  assert.ok(
    !criu
      .pageServer('criu', { imagesDir: '/i', workDir: '/w', address: 'a', port: 1, logFile: '/l' })
      .includes('--tls'),
  );
  assert.equal(
    criuTlsConfig({ caCert: '/t/ca.crt', cert: '/t/c.crt', key: '/t/c.key' }),
    'tls\ntls-cacert /t/ca.crt\ntls-cert /t/c.crt\ntls-key /t/c.key\n',
  );
  assert.ok(criuHasTls('  --tls-cacert FILE     trust certificates signed only by this CA\n'));
  assert.ok(!criuHasTls('  --ps-socket FD        use specified FD as page server socket\n'));
});

test('port rules: inserted first in their chain, removed by the same spec, v4 or v6', () => {
  const r = {
    family: addressFamily('10.0.0.2'),
    chain: 'INPUT' as const,
    address: '10.0.0.2',
    port: 27027,
    onlyFrom: '10.0.0.1',
    tag: 'runc-migrate.abc',
  };
  const ins = firewall.insert(r);
  const del = firewall.remove(r);
  assert.deepEqual(ins.slice(0, 6), ['iptables', '-w', '5', '-I', 'INPUT', '1']);
  assert.deepEqual(ins.slice(6), del.slice(5));
  assert.ok(ins.join(' ').includes('! -s 10.0.0.1') && ins.join(' ').endsWith('-j REJECT --reject-with tcp-reset'));
  const out = firewall.insert({
    family: addressFamily('fd00::2'),
    chain: 'OUTPUT',
    address: 'fd00::2',
    port: 1,
    onlyUid: 0,
    tag: 't',
  });
  assert.equal(out[0], 'ip6tables');
  assert.ok(out.join(' ').includes('-m owner ! --uid-owner 0'));
  // Connection attempts only: the kernel's resets (no owner) must pass, or a peer that died stays half-open.
  assert.ok(ins.join(' ').includes('-p tcp --syn') && out.join(' ').includes('-p tcp --syn'));
  // Forwarded (NATed co-tenants of the host): every connection attempt to the port is reset.
  const fwd = firewall.insert({ family: 4, chain: 'FORWARD', address: '10.0.0.2', port: 27027, tag: 't' });
  assert.equal(
    fwd.join(' '),
    'iptables -w 5 -I FORWARD 1 -p tcp --syn -d 10.0.0.2 --dport 27027 -m comment --comment t -j REJECT --reject-with tcp-reset',
  );
});

test('the transfer line: bytes, rate and time left when the size is known', () => {
  assert.equal(transferLine(100 * 1048576, 1000, 300 * 1048576), '100.0 MiB of ~300.0 MiB, 100.0 MiB/s, 2 s left');
  assert.equal(transferLine(100 * 1048576, 1000), '100.0 MiB, 100.0 MiB/s');
  assert.equal(transferLine(0, 0), '0 B');
  // Before half a second has passed, no rate and no guess at the time left.
  assert.equal(transferLine(40, 11, 487424), '40 B of ~476.0 KiB');
});
