import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareVersions, criu, criuLogErrors, parseCriuVersion } from '../../src/criu.js';
import { isNotExist, parseMemoryUsage, parseRuncVersion, parseState, runc } from '../../src/runc.js';
import { addr, parseAddrDev, parseClaimedArpIgnore, parseRouteDev } from '../../src/migration/network/address.js';
import {
  criuIptablesDeletes,
  criuNftTables,
  lockRuleOf,
  removeCriuLockRules,
} from '../../src/migration/network/netlock.js';
import { diagnose } from '../../src/migration/switchover/diagnose.js';
import { commandLine, quote } from '../../src/shell.js';
import { RemoteHost } from '../../src/host.js';
import { kdatWarning } from '../../src/migration/preflight/tools.js';
import { WARM_MAX_BYTES, warmBytes } from '../../src/migration/prepare/warm.js';

const g = { runc: 'runc', root: '/run/runc' };

test('runc argv', () => {
  assert.deepEqual(
    runc.checkpoint(g, 'c1', {
      imagePath: '/w/i',
      workPath: '/w/w',
      tcpEstablished: true,
      pageServer: '127.0.0.1:5000',
    }),
    [
      'runc',
      '--root',
      '/run/runc',
      'checkpoint',
      '--image-path',
      '/w/i',
      '--work-path',
      '/w/w',
      '--page-server',
      '127.0.0.1:5000',
      '--tcp-established',
      '--file-locks',
      'c1',
    ],
  );
  assert.deepEqual(
    runc
      .checkpoint({ ...g, criu: '/opt/criu' }, 'c1', {
        imagePath: '/i',
        workPath: '/w',
        tcpEstablished: false,
        preDump: true,
        parentPath: '../1',
      })
      .slice(0, 5),
    ['runc', '--root', '/run/runc', '--criu', '/opt/criu'],
  );
  assert.ok(
    runc
      .checkpoint(g, 'c', { imagePath: '/i', workPath: '/w', tcpEstablished: false, preDump: true, parentPath: '../1' })
      .join(' ')
      .includes('--pre-dump --parent-path ../1'),
  );
  assert.deepEqual(runc.restore(g, 'c1', { bundle: '/b', imagePath: '/i', workPath: '/w', tcpEstablished: true }), [
    'runc',
    '--root',
    '/run/runc',
    'restore',
    '--detach',
    '--bundle',
    '/b',
    '--image-path',
    '/i',
    '--work-path',
    '/w',
    '--tcp-established',
    '--file-locks',
    'c1',
  ]);
});

test("a migration's restore spends its images; a lazy one and a failover's do not", () => {
  const o = { bundle: '/b', imagePath: '/i', workPath: '/w', tcpEstablished: true };
  assert.ok(runc.restore(g, 'c', { ...o, spendImages: true }).includes('--auto-dedup'));
  assert.ok(!runc.restore(g, 'c', o).includes('--auto-dedup'));
  // Post-copy's pages are served from the images while the copy runs.
  const lazy = runc.restore(g, 'c', { ...o, spendImages: true, lazy: true });
  assert.ok(lazy.includes('--lazy-pages') && !lazy.includes('--auto-dedup'));
});

test('criu page server argv reports readiness on stdout', () => {
  const a = criu.pageServer('criu', {
    imagesDir: '/i',
    workDir: '/w',
    address: '127.0.0.1',
    port: 27027,
    logFile: '/w/ps.log',
  });
  assert.deepEqual(a.slice(0, 2), ['criu', 'page-server']);
  assert.ok(a.join(' ').includes('--status-fd 1'));
  assert.ok(a.join(' ').includes('--address 127.0.0.1 --port 27027'));
  assert.ok(!a.includes('--prev-images-dir'));
  assert.ok(
    criu
      .pageServer('criu', { imagesDir: '/i', workDir: '/w', address: 'a', port: 1, logFile: 'l', prevImagesDir: '/p' })
      .includes('--prev-images-dir'),
  );
});

test('parsers', () => {
  assert.equal(parseCriuVersion('Version: 4.2.1\nGitID: v4.2\n'), '4.2.1');
  assert.equal(parseCriuVersion('Version: 4.2\n'), '4.2');
  assert.equal(parseRuncVersion('runc version 1.1.5+ds1\ncommit: x\n'), '1.1.5');
  assert.equal(compareVersions('4.2', '4.2.0'), 0);
  assert.equal(compareVersions('4.1.1', '4.2'), -1);
  assert.equal(compareVersions('1.10.0', '1.9.9'), 1);
  const st = parseState(
    '{"ociVersion":"1.0.2","id":"c","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"x"}',
  );
  assert.deepEqual(st, { id: 'c', pid: 42, status: 'running', bundle: '/b', rootfs: '/b/rootfs', created: 'x' });
  assert.equal(
    parseMemoryUsage('{"type":"stats","id":"c","data":{"memory":{"usage":{"usage":638976,"max":1}}}}\n'),
    638976,
  );
  assert.equal(parseMemoryUsage('garbage'), undefined);
  assert.ok(isNotExist('container does not exist'));
  assert.equal(parseAddrDev('2: eth0    inet 10.77.1.10/32 scope global eth0\\       valid_lft forever'), 'eth0');
  assert.equal(parseAddrDev('5: eth0@if4    inet 10.0.0.1/24 brd'), 'eth0');
  assert.equal(parseAddrDev(''), undefined);
  assert.equal(parseRouteDev('10.77.0.1 dev eth0 src 10.77.0.2 uid 0 \\    cache'), 'eth0');
  assert.deepEqual(addr.garp(['busybox', 'arping'], { address: '10.0.0.1', prefix: 32 }, 'eth0'), [
    'busybox',
    'arping',
    '-U',
    '-c',
    '1',
    '-I',
    'eth0',
    '-s',
    '10.0.0.1',
    '10.0.0.1',
  ]);
});

test('the destination claims the address in one round trip, unmutes it in one, announces it in one', () => {
  const m = { address: '10.0.0.1', prefix: 32 };
  assert.deepEqual(addr.claim(m, 'eth0'), [
    'sh',
    '-c',
    'cat /proc/sys/net/ipv4/conf/eth0/arp_ignore && echo 8 > /proc/sys/net/ipv4/conf/eth0/arp_ignore && iptables -w -I OUTPUT -s 10.0.0.1 -j DROP && ip addr add 10.0.0.1/32 dev eth0',
  ]);
  assert.deepEqual(addr.unmute(m, 'eth0.100'), [
    'sh',
    '-c',
    'iptables -w -D OUTPUT -s 10.0.0.1 -j DROP && echo "$1" > /proc/sys/net/ipv4/conf/eth0.100/arp_ignore',
    'sh',
  ]);
  assert.deepEqual(addr.garp(['busybox', 'arping'], m, 'eth0.100'), [
    'busybox',
    'arping',
    '-U',
    '-c',
    '1',
    '-I',
    'eth0.100',
    '-s',
    '10.0.0.1',
    '10.0.0.1',
  ]);
  assert.equal(parseClaimedArpIgnore('0\n'), '0');
  assert.equal(parseClaimedArpIgnore(''), undefined);
  assert.equal(parseClaimedArpIgnore('cat: no such file\n'), undefined);
});

test('CRIU lock rules are found and turned into deletions', () => {
  const listing = [
    '-P INPUT ACCEPT',
    '-A INPUT -s 10.0.0.3/32 -d 10.0.0.10/32 -p tcp -m tcp --sport 4000 --dport 7777 -m mark ! --mark 0xc114 -j DROP',
    '-A INPUT -p tcp --dport 22 -j ACCEPT',
    '-A OUTPUT -s 10.0.0.10/32 -d 10.0.0.3/32 -p tcp -m tcp --sport 7777 --dport 4000 -m mark ! --mark 0xc114 -j DROP',
  ].join('\n');
  const d = criuIptablesDeletes(listing, 'iptables');
  assert.equal(d.length, 2);
  assert.deepEqual(d[0].slice(0, 5), ['iptables', '-w', '-D', 'INPUT', '-s']);
  assert.deepEqual(criuNftTables('table inet filter\ntable inet CRIU-1234\n'), ['inet CRIU-1234']);
});

test("only this container's connections' lock rules are removed: another dump that began meanwhile keeps its own", async () => {
  const ours =
    '-A INPUT -s 10.0.0.3/32 -d 10.0.0.10/32 -p tcp -m tcp --sport 4000 --dport 7777 -m mark ! --mark 0xc114 -j DROP';
  const oursOut =
    '-A OUTPUT -s 10.0.0.10/32 -d 10.0.0.3/32 -p tcp -m tcp --sport 7777 --dport 4000 -m mark ! --mark 0xc114 -j DROP';
  const theirs =
    '-A INPUT -s 10.0.0.3/32 -d 10.0.0.11/32 -p tcp -m tcp --sport 4001 --dport 6379 -m mark ! --mark 0xc114 -j DROP';
  const v6 =
    '-A INPUT -s fd77::3/128 -d fd77::1/128 -p tcp -m tcp --sport 5000 --dport 80 -m mark ! --mark 0xc114 -j DROP';
  // As ss shows a dual-stack listener's connection: IPv4-mapped (CRIU's rule names the IPv4 address).
  const mine = [
    { local: '[::ffff:10.0.0.10]:7777', peer: '[::ffff:10.0.0.3]:4000' },
    { local: '[fd77::1]:80', peer: '[fd77::3]:5000' },
  ];
  const item = (l: string) => JSON.stringify(criuIptablesDeletes(l, 'iptables')[0]);
  assert.equal(lockRuleOf(item(ours), mine), true);
  assert.equal(lockRuleOf(item(oursOut), mine), true);
  assert.equal(lockRuleOf(item(theirs), mine), false);
  assert.equal(lockRuleOf(item(v6), mine), true);
  assert.equal(lockRuleOf(JSON.stringify(['iptables', '-w', '-X', 'CRIU']), mine), undefined);
  const ran: string[] = [];
  const run = async (argv: string[]) => {
    ran.push(argv.join(' '));
    return argv.includes('-S') && argv[0] === 'iptables'
      ? { code: 0, stdout: ['-P INPUT ACCEPT', ours, theirs, oursOut].join('\n') }
      : { code: argv.includes('-S') || argv[0] === 'nft' ? 1 : 0, stdout: '' };
  };
  assert.equal(await removeCriuLockRules(run, [], mine), 2);
  assert.ok(!ran.some((r) => r.includes('--dport 6379')), ran.join('\n'));
});

test('diagnose picks the first CRIU errors and a known cause', () => {
  const log =
    "(00.1) Warn x\n(00.2) Error (criu/files-reg.c:2267): Can't open file tmp/tick: No such file or directory\n(00.3) Error (criu/cr-restore.c:2331): Restoring FAILED.\n";
  const d = diagnose(log);
  assert.equal(d.errors.length, 2);
  const tcp = diagnose("(0.1) Error (criu/sk-tcp.c:1): Can't bind inet socket: Cannot assign requested address\n");
  assert.match(tcp.cause ?? '', /--move-ip/);
  assert.equal(diagnose('nothing wrong').errors.length, 0);
});

test('shell quoting round-trips through sh', async () => {
  assert.equal(quote('plain/path-1.2'), 'plain/path-1.2');
  assert.equal(quote("it's"), `'it'\\''s'`);
  assert.equal(quote(''), "''");
  const { execa } = await import('execa');
  const args = ['a b', "c'd", '$HOME', '`x`', ''];
  const r = await execa('sh', ['-c', `printf '%s\\n' ${commandLine(args)}`]);
  assert.deepEqual(r.stdout.split('\n'), args);
});

test('remote command lines: sudo and env prefixes', () => {
  const fake = {} as any;
  const h = new RemoteHost(fake, true, () => {});
  assert.equal(h.line(['runc', 'state', 'c']), 'sudo -n -- runc state c');
  const h2 = new RemoteHost(fake, false, () => {});
  assert.equal(h2.line(['criu', 'check'], { A: 'b c' }), "env 'A=b c' criu check");
});

test("stale work directories: this machine's, gone, and needed by no unfinished migration; never another machine's, whatever its host name", async () => {
  const { staleDirs } = await import('../../src/migration/prepare/stale.js');
  const rec = (dir: string, owner: string) => `${dir}\0${owner}\n\0`;
  const listing = [
    rec('/dev/shm/runc-migrate.a', 'me 100 M1 B1'),
    rec('/dev/shm/runc-migrate.b', 'me 200 M1 B1'),
    rec('/dev/shm/runc-migrate.c', 'other 100 M2 B9'),
    rec('/dev/shm/runc-migrate.d', 'me 300 M1 B1'),
    rec('/dev/shm/runc-migrate.e', 'me 400 M1 B1'),
    rec('/w d\nir/runc-migrate.f', 'me 500 M1 B1'),
    rec('/dev/shm/runc-migrate.g', 'garbage'),
    // Another source with the same host name, whose pid 600 happens to be free here.
    rec('/dev/shm/runc-migrate.h', 'me 600 M2 B7'),
    // This machine before its last boot: gone, though pid 200 lives now.
    rec('/dev/shm/runc-migrate.i', 'me 200 M1 B0'),
    // The old owner format (no machine): left alone.
    rec('/dev/shm/runc-migrate.j', 'me 700'),
  ].join('');
  const stale = staleDirs(listing, {
    machine: 'M1',
    boot: 'B1',
    alive: (pid) => pid === 200,
    needed: new Set(['/dev/shm/runc-migrate.d']),
    self: ['/dev/shm/runc-migrate.e'],
  });
  assert.deepEqual(stale, ['/dev/shm/runc-migrate.a', '/w d\nir/runc-migrate.f', '/dev/shm/runc-migrate.i']);
});

test("diagnose names TLS failures: a clock off by more than the certificates' margin, a page server the dump cannot talk to", () => {
  assert.match(
    diagnose(
      '(00.03) Error (criu/tls.c:205): tls: The certificate is NOT trusted. The certificate chain uses not yet valid certificate. The certificate is not activated.\n',
    ).cause!,
    /clock/,
  );
  assert.match(
    diagnose(
      '(00.03) Error (criu/tls.c:226): tls: Invalid certificate\n(00.03) Error (criu/tls.c:205): tls: The certificate is NOT trusted. The certificate issuer is unknown.\n',
    ).cause!,
    /--transport tunnel/,
  );
});

test("CRIU's kernel probe: a warning where CRIU cannot cache it (not a tmpfs, a killed CRIU's leftover), none where it did", () => {
  assert.equal(kdatWarning('tmpfs\ncached\n', 'destination'), undefined);
  // Cached, even with a leftover beside it: nothing to pay.
  assert.equal(kdatWarning('tmpfs\ncached\nleftover\n', 'destination'), undefined);
  assert.match(
    kdatWarning('tmpfs\nleftover\n', 'destination') ?? '',
    /left by a CRIU killed.*rm \/run\/criu\.kdat\.tmp$/,
  );
  // CRIU itself leaves criu.kdat.tmp where /run is not a tmpfs: the filesystem is the cause named.
  assert.match(
    kdatWarning('ext2/ext3\nleftover\n', 'destination') ?? '',
    /\/run is ext2\/ext3, not a tmpfs.*60 ms.*hosts\.$/,
  );
  // A tmpfs without the file (a CRIU that failed its probe): nothing known to fix.
  assert.equal(kdatWarning('tmpfs\n', 'destination'), undefined);
  assert.equal(kdatWarning('', 'destination'), undefined);
});

test('each host announces with its own arping: iputils where installed, else busybox, else none', () => {
  assert.deepEqual(addr.arpingOf('/usr/sbin/arping\n'), ['arping']);
  assert.deepEqual(addr.arpingOf('busybox\n'), ['busybox', 'arping']);
  assert.equal(addr.arpingOf(''), undefined);
});

test('the warm-up sends what the frozen path will send through the connection, at most 16 MiB', () => {
  assert.equal(warmBytes(undefined), WARM_MAX_BYTES);
  assert.equal(warmBytes(1), 256 * 1024);
  assert.equal(warmBytes(3 * 1024 * 1024 + 1), 3 * 1024 * 1024 + 256 * 1024);
  assert.equal(warmBytes(1 << 30), 16 * 1024 * 1024);
});
