// When CRIU fails, the first `Error (` lines of its log, and the known cause they match.
import { criuLogErrors } from '../../criu.js';

interface KnownCause {
  pattern: RegExp;
  cause: string;
}

const KNOWN: KnownCause[] = [
  // Before the network-lock pattern: these lines name the page server, not iptables.
  {
    pattern: /tls: .*(not activated|expired)/i,
    cause:
      "The TLS certificates made for this migration are not valid on one host: its clock is more than an hour off the source's. Set the clocks right (NTP), or use --transport tunnel.",
  },
  {
    pattern: /tls: .*(NOT trusted|Invalid certificate|handshake)|Can't connect to server/i,
    cause:
      "The dump could not talk to the page server over TLS: another program may have taken its port on the destination (see the page server's log there), or the source reaches the destination through an address translation. Use --transport tunnel, or another --page-server-port.",
  },
  {
    pattern: /External (socket|file)|unix: Can't dump|isn't (?:an )?external|Can't dump .* socket/i,
    cause:
      'The container holds a file or socket that lives outside it (its stdio on a host file, or a host unix socket). Start it with stdio on /dev/null or a console socket.',
  },
  {
    pattern: /file lock|lock.* found|Can't dump file locks/i,
    cause: 'The container holds file locks; CRIU needs --file-locks for them.',
  },
  {
    pattern: /mnt.*(No such file|doesn't exist)|Can't mount at|no mount with/i,
    cause:
      'A mount the container uses is missing on the destination: give it the same mounts (volumes, bind sources) as on the source.',
  },
  {
    pattern: /Cannot assign requested address|EADDRNOTAVAIL|Can't bind/i,
    cause:
      "A TCP connection's local address does not exist on the destination: move the service address with --move-ip ADDR/PREFIX.",
  },
  {
    pattern: /cpuinfo|CPU.*(mismatch|feature)|xsave/i,
    cause: 'The destination CPU lacks features the source CPU has: migrate between hosts with compatible CPUs.',
  },
  {
    pattern: /iptables|nft|network lock|Can't lock network/i,
    cause: 'CRIU could not lock the network: install iptables (or nftables) on both hosts.',
  },
  {
    pattern: /size mismatch|File .* has bad size|st_size/i,
    cause:
      "A file the container holds open differs in size on the destination: make the destination's rootfs identical to the source's.",
  },
];

export function diagnose(log: string, maxErrors = 5): { errors: string[]; cause?: string } {
  const errors = criuLogErrors(log, maxErrors);
  const text = errors.join('\n') || log;
  const hit = KNOWN.find((k) => k.pattern.test(errors.join('\n')) || (errors.length === 0 && k.pattern.test(text)));
  return { errors, cause: hit?.cause };
}
