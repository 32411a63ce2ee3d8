// The page server's port, open to this migration only. CRIU's page server serves the
// first connection it accepts: anyone else who reaches the port first blocks the dump
// (and, without TLS, could send it pages). So while the migration runs:
//
//   tls, direct   on the destination, connections to the page server's address and port
//                 from any address but the source's are reset; on the source, only
//                 root's processes (CRIU) may open one, and none is forwarded (a
//                 container or VM there, NATed to the source's address, would pass the
//                 destination's rule).
//   post-copy     the same, the other way: the lazy page server listens on the source.
//   tunnel        on the destination, only the SSH session's own user may connect to the
//                 page server on 127.0.0.1 (the forwarded channel comes from its sshd);
//                 the source's forwarded port already serves only the tool's own user.
//
// The rules go when the migration ends, and with the tool if it dies or loses the
// connection (keepers on both hosts).
import { addressFamily, firewall, type PortRule } from '../../firewall.js';
import type { SshConnection } from '../../ssh/connection.js';
import type { MethodKind } from '../plan/method.js';
import type { ChosenTransport } from '../preflight/facts.js';
import type { Session } from '../session.js';
import { localKeeper, remoteKeeper, type EndKeeper } from '../prepare/keeper.js';

export interface PortGuard {
  /** The rules in force, in words (preflight's line). */
  describe: string;
  remove: () => Promise<void>;
}

/** The source's address as the destination sees it (SSH_CONNECTION), else the connection's local address. */
export async function sourceAddressSeen(ssh: SshConnection): Promise<string | undefined> {
  const r = await ssh.exec('printf %s "$SSH_CONNECTION"').catch(() => undefined);
  const seen = r?.stdout.trim().split(/\s+/)[0];
  return seen || ssh.localAddress;
}

/**
 * Sets the rules for the chosen transport. Returns undefined (and a reason) where a host
 * has no iptables: the migration goes on, mutual TLS still refuses strangers' pages.
 */
export async function guardPort(
  ctx: Session,
  o: { method: MethodKind; transport: ChosenTransport; tag: string; address?: string; sourceAddress?: string },
): Promise<PortGuard | { skipped: string }> {
  const t = o.transport;
  if (t === 'stream') return { skipped: 'no page server (stream)' };
  const port = ctx.opts.pageServerPort;
  const tag = o.tag;
  const dstAddress = o.address;
  if (t !== 'tunnel' && !dstAddress)
    return { skipped: "the destination's address is unknown (a jump host or a proxy)" };
  const dstRules: PortRule[] = [];
  const srcRules: PortRule[] = [];
  if (o.method === 'hybrid') {
    // Pre-dumps to the destination's page server, then lazy pages from the source's.
    if (!dstAddress) return { skipped: "the destination's address is unknown (a jump host or a proxy)" };
    const family = addressFamily(dstAddress);
    const from = await sourceAddressSeen(ctx.ssh);
    if (!from) return { skipped: "the source's address as the destination sees it is unknown" };
    dstRules.push({ family, chain: 'INPUT', address: dstAddress, port, onlyFrom: from, tag });
    srcRules.push({ family, chain: 'OUTPUT', address: dstAddress, port, onlyUid: 0, tag });
    srcRules.push({ family, chain: 'FORWARD', address: dstAddress, port, tag });
  }
  if (o.method === 'post-copy' || o.method === 'hybrid') {
    // The lazy page server listens on the source: only the destination's address may
    // connect from outside; on the source itself only root (the tool aborts a server
    // nobody reached over the loopback); on the destination only root (its lazy-pages daemon).
    const address = o.sourceAddress;
    const from = dstAddress;
    if (!address || !from) return { skipped: "the two hosts' addresses are not both known" };
    const family = addressFamily(address);
    srcRules.push({ family, chain: 'INPUT', port, onlyFrom: from, exceptLoopback: true, tag });
    srcRules.push({ family, chain: 'OUTPUT', port, onlyUid: 0, tag });
    dstRules.push({ family, chain: 'OUTPUT', address, port, onlyUid: 0, tag });
    dstRules.push({ family, chain: 'FORWARD', address, port, tag });
  } else if (t === 'tunnel') {
    const uid = Number((await ctx.ssh.exec('id -u')).stdout.trim());
    dstRules.push({ family: 4, chain: 'OUTPUT', address: '127.0.0.1', port, onlyUid: uid, tag });
  } else {
    const address = dstAddress;
    const from = await sourceAddressSeen(ctx.ssh);
    if (!address) return { skipped: "the destination's address is unknown" };
    if (!from) return { skipped: "the source's address as the destination sees it is unknown" };
    const family = addressFamily(address);
    dstRules.push({ family, chain: 'INPUT', address, port, onlyFrom: from, tag });
    srcRules.push({ family, chain: 'OUTPUT', address, port, onlyUid: 0, tag });
    srcRules.push({ family, chain: 'FORWARD', address, port, tag });
  }
  const keepers: EndKeeper[] = [];
  const remove = async () => {
    for (const k of keepers.splice(0).reverse()) await k().catch(() => undefined);
  };
  try {
    for (const [host, rules] of [
      [ctx.dst, dstRules],
      [ctx.src, srcRules],
    ] as const) {
      for (const r of rules) {
        const add = await host.run(firewall.insert(r), { allowFail: true });
        if (add.code !== 0) {
          await remove();
          return {
            skipped: `${firewall.insert(r)[0]} failed on the ${host.name}: ${add.stderr.trim().split('\n').pop()}`,
          };
        }
        keepers.push(
          host === ctx.dst
            ? await remoteKeeper(ctx.dst, 'port-guard', firewall.remove(r))
            : await localKeeper('port-guard', firewall.remove(r)),
        );
      }
    }
  } catch (err) {
    await remove();
    throw err;
  }
  const describe =
    o.method === 'hybrid'
      ? `port ${port} on ${dstAddress} (pre-dumps) and on the source (lazy pages): from the other host only, and root's processes only`
      : o.method === 'post-copy'
        ? `port ${port} on the source: from ${dstAddress} only (root's processes there), and root's on the source`
        : t === 'tunnel'
          ? `port ${port} on the destination's loopback: uid ${dstRules[0].onlyUid} only`
          : `port ${port} on ${dstRules[0].address}: from ${dstRules[0].onlyFrom} only, root's processes on the source only, nothing forwarded through the source`;
  return { describe, remove };
}
