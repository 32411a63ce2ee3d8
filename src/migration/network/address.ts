// --move-ip: the service address the container's TCP peers use moves with it. Removed
// on the source once the tasks are frozen; added on the destination while the images are
// copied, with arp_ignore=8 and its output dropped until the commit (no peer reaches the
// restored copy, and it answers none, before then); on the commit unmuted, the copy
// continued, then announced by a gratuitous ARP (best effort: peers that miss it find the
// address again by asking).
// Rolled back in reverse. argv builders are pure.
import type { MoveIp } from '../../options.js';
import { commandLine, quote } from '../../shell.js';

export const addr = {
  showTo: (address: string) => ['ip', '-o', '-4', 'addr', 'show', 'to', address],
  routeGet: (address: string) => ['ip', '-o', 'route', 'get', address],
  add: (m: MoveIp, dev: string) => ['ip', 'addr', 'add', `${m.address}/${m.prefix}`, 'dev', dev],
  del: (m: MoveIp, dev: string) => ['ip', 'addr', 'del', `${m.address}/${m.prefix}`, 'dev', dev],
  /** The device's arp_ignore, as a file (a sysctl key would break on a dotted device name such as eth0.100). */
  arpIgnoreFile: (dev: string) => `/proc/sys/net/ipv4/conf/${dev}/arp_ignore`,
  readArpIgnore: (dev: string) => ['cat', addr.arpIgnoreFile(dev)],
  /** Shell text: sets the device's arp_ignore to VALUE (a number, or "$1" inside a script). */
  setArpIgnore: (dev: string, value: string) => `echo ${value} > ${quote(addr.arpIgnoreFile(dev))}`,
  /**
   * From before the restore until the commit (and while a rolled-back copy is killed), the
   * destination's copy must not send to the peers, whose connections live on in the
   * source until then: drop its output.
   */
  blockOutput: (m: MoveIp) => ['iptables', '-w', '-I', 'OUTPUT', '-s', m.address, '-j', 'DROP'],
  unblockOutput: (m: MoveIp) => ['iptables', '-w', '-D', 'OUTPUT', '-s', m.address, '-j', 'DROP'],
  /**
   * Which arping a host has: prints its path (iputils'), "busybox", or nothing. Read it with
   * arpingOf. Every host finds its own (the announce runs where the address goes).
   */
  arpingProbe: ['sh', '-c', 'command -v arping || { command -v busybox >/dev/null && echo busybox; }'] as const,
  /** The arping command arpingProbe found; undefined when the host has none. */
  arpingOf: (probeStdout: string): string[] | undefined => {
    const found = probeStdout.trim().split('\n').pop() ?? '';
    if (!found) return undefined;
    return found === 'busybox' ? ['busybox', 'arping'] : ['arping'];
  },
  /** Gratuitous ARP; `arping` is iputils' or busybox's, both take these flags. */
  garp: (arping: string[], m: MoveIp, dev: string) => [
    ...arping,
    '-U',
    '-c',
    '1',
    '-I',
    dev,
    '-s',
    m.address,
    m.address,
  ],
  /**
   * The destination's side before the restore, in one round trip (it runs while the
   * images are copied): print the old arp_ignore, set 8 (no ARP answers), mute the
   * address's output (the restored copy must not ACK a peer's data before the commit: a
   * rolled-back source would never see that data), add the address.
   */
  claim: (m: MoveIp, dev: string) => [
    'sh',
    '-c',
    [
      commandLine(addr.readArpIgnore(dev)),
      addr.setArpIgnore(dev, '8'),
      commandLine(addr.blockOutput(m)),
      commandLine(addr.add(m, dev)),
    ].join(' && '),
  ],
  /**
   * Undoes claim, each step whatever the others did: address off, output allowed,
   * arp_ignore back to the old value, given as the argument after this argv.
   */
  unclaim: (m: MoveIp, dev: string) => [
    'sh',
    '-c',
    `${commandLine(addr.del(m, dev))} 2>/dev/null; ${commandLine(addr.unblockOutput(m))} 2>/dev/null; ${addr.setArpIgnore(dev, '"$1"')}; true`,
    'sh',
  ],
  /**
   * The source lets the address go once the tasks are frozen. Under a lock in the hold's
   * directory HOLD, and only where no give-back has marked it there: a release the tool
   * started just before it was killed can run after the rollback gave the address back,
   * and must not take it away again.
   */
  release: (m: MoveIp, dev: string, hold: string) => [
    'flock',
    addressLock(hold),
    'sh',
    '-c',
    `[ -e ${quote(givenBackMark(hold))} ] || ${commandLine(addr.del(m, dev))}`,
  ],
  /**
   * The source takes the address back after a rollback, and tells its peers. It marks the
   * give-back under the lock first (see release), then adds the address whatever the lock
   * did: a lock that a hung release keeps past 5 s is not waited for, and a hold directory
   * that is gone does not keep the address away.
   */
  giveBack: (arping: string[], m: MoveIp, dev: string, hold: string) => [
    'sh',
    '-c',
    `{ flock -w 5 9; : > ${quote(givenBackMark(hold))}; } 9>>${quote(addressLock(hold))} 2>/dev/null; ${commandLine(addr.add(m, dev))} 2>/dev/null; ${commandLine(addr.garp(arping, m, dev))} >/dev/null 2>&1; true`,
  ],
  /**
   * After the commit, before the copy's tasks continue: output allowed, arp_ignore back to
   * the old value (the argument after this argv). Its exit status is both steps': a copy
   * left mute or deaf is no migration. First, so that nothing the continued tasks send is
   * dropped (a reply lost there waits for the restored socket's retransmission timer, 3 s
   * on a host with no cached RTT for that peer: docs/figures.md).
   */
  unmute: (m: MoveIp, dev: string) => [
    'sh',
    '-c',
    `${commandLine(addr.unblockOutput(m))} && ${addr.setArpIgnore(dev, '"$1"')}`,
    'sh',
  ],
  /**
   * migrate recover, once a guard marked its commit and may have died before it unmuted:
   * the address's DROP rule goes where it is still there (one the guard removed meanwhile
   * is fine), arp_ignore returns to the value the guard's log recorded ("claimed N"; 0 if
   * none) where it still reads 8, and the address is announced. Fails (exit 1, why on
   * stderr) only when a step that was needed failed.
   */
  unmuteAfterGuard: (arping: string[], m: MoveIp, dev: string, guardLog: string) => {
    const rule = (op: string) => commandLine(['iptables', '-w', op, 'OUTPUT', '-s', m.address, '-j', 'DROP']);
    const f = quote(addr.arpIgnoreFile(dev));
    return [
      'sh',
      '-c',
      `old=$(sed -n 's/^claimed \\([0-9][0-9]*\\).*/\\1/p' ${quote(guardLog)} 2>/dev/null | head -n 1)
${rule('-C')} 2>/dev/null; c=$?
if [ $c = 0 ]; then
	${rule('-D')} 2>/dev/null || ! ${rule('-C')} 2>/dev/null || { echo "iptables could not remove the DROP rule" >&2; exit 1; }
elif [ $c != 1 ]; then
	echo "iptables -C failed ($c)" >&2; exit 1
fi
if [ "$(cat ${f})" = 8 ] && [ "\${old:-0}" != 8 ]; then echo "\${old:-0}" > ${f} || exit 1; fi
${commandLine(addr.garp(arping, m, dev))} >/dev/null 2>&1
exit 0`,
    ];
  },
};

/** The lock that orders the source's release of the address and its give-backs (in the hold's directory). */
export const addressLock = (hold: string) => `${hold}/address.lock`;
/** Left by a give-back: a release that comes later does nothing. */
export const givenBackMark = (hold: string) => `${hold}/address-given-back`;

/** The old arp_ignore value `claim` printed first, if it got that far. */
export function parseClaimedArpIgnore(stdout: string): string | undefined {
  const first = stdout.trim().split('\n')[0]?.trim();
  return first && /^\d+$/.test(first) ? first : undefined;
}

/** "2: eth0    inet 10.0.0.5/24 brd ..." -> "eth0" (the first line's device). */
export function parseAddrDev(stdout: string): string | undefined {
  return stdout
    .split('\n')
    .find((l) => l.trim())
    ?.match(/^\d+:\s+(\S+?)(?:@\S+)?\s+inet/)?.[1];
}

/** "10.0.0.1 dev eth0 src 10.0.0.2 uid 0" -> "eth0" */
export function parseRouteDev(stdout: string): string | undefined {
  return stdout.match(/\bdev\s+(\S+)/)?.[1];
}
