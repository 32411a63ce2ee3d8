// The iptables rules that keep a page server's port to this migration's own processes.
// Pure: argv builders only (portguard.ts runs them).

export interface PortRule {
  /** iptables or ip6tables, by the address family. */
  family: 4 | 6;
  /**
   * FORWARD: on a host whose own containers or VMs reach the peer through it (NAT makes
   * their traffic look like the host's), every forwarded connection to the port is reset.
   */
  chain: 'INPUT' | 'OUTPUT' | 'FORWARD';
  /** The page server's address (undefined: any of the host's, as a lazy page server listens) and port. */
  address?: string;
  port: number;
  /** INPUT: only this peer address may connect. */
  onlyFrom?: string;
  /** OUTPUT: only processes of this uid may connect. */
  onlyUid?: number;
  /** INPUT: connections over the loopback device are left to the OUTPUT rule (the host's own root may connect). */
  exceptLoopback?: boolean;
  /** The comment that names the migration (iptables -S shows it). */
  tag: string;
}

export function addressFamily(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

/** ADDRESS:PORT as runc's --page-server and most tools take it: an IPv6 address in brackets. */
export function hostPort(address: string, port: number): string {
  return addressFamily(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** An address as ss's filters take it (dst ADDR): IPv6 in brackets. */
export function ssAddress(address: string): string {
  return addressFamily(address) === 6 ? `[${address}]` : address;
}

function spec(r: PortRule): string[] {
  const match =
    r.chain === 'INPUT'
      ? ['!', '-s', r.onlyFrom!, ...(r.exceptLoopback ? ['!', '-i', 'lo'] : [])]
      : r.chain === 'OUTPUT'
        ? ['-m', 'owner', '!', '--uid-owner', String(r.onlyUid!)]
        : [];
  // Only connection attempts (SYN): the kernel's own resets and probes answers carry no
  // owner, and an OUTPUT rule that caught them left a lazy page server blocked on a dead
  // peer's zero window (its send never failed) after the daemon was killed.
  return [
    '-p',
    'tcp',
    '--syn',
    ...(r.address ? ['-d', r.address] : []),
    '--dport',
    String(r.port),
    ...match,
    '-m',
    'comment',
    '--comment',
    r.tag,
    '-j',
    'REJECT',
    '--reject-with',
    'tcp-reset',
  ];
}

export const firewall = {
  /** First in its chain: a connection the rule refuses is reset before anything accepts it. */
  insert: (r: PortRule) => [r.family === 6 ? 'ip6tables' : 'iptables', '-w', '5', '-I', r.chain, '1', ...spec(r)],
  remove: (r: PortRule) => [r.family === 6 ? 'ip6tables' : 'iptables', '-w', '5', '-D', r.chain, ...spec(r)],
};
