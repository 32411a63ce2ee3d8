// CRIU locks a dumped container's TCP connections with iptables DROP rules that skip
// packets marked 0xc114 (its own), or with an nftables table "CRIU-<id>". After a
// successful dump the source's rules stay behind; they are removed once the migration
// commits. Pure parsing here; the caller runs the commands.

const MARK = /--mark 0xc114\b/;

/** `iptables -S` lines CRIU added -> the argv that delete each (same order). */
export function criuIptablesDeletes(listing: string, bin: string): string[][] {
  const out: string[][] = [];
  for (const line of listing.split('\n')) {
    const l = line.trim();
    if (!l.startsWith('-A ') || !(MARK.test(l) || /\s-j CRIU\b/.test(l) || /^-A CRIU\b/.test(l))) continue;
    out.push([bin, '-w', '-D', ...splitRule(l.slice(3))]);
  }
  return out;
}

function splitRule(s: string): string[] {
  return (s.match(/"[^"]*"|\S+/g) ?? []).map((t) => (t.startsWith('"') ? t.slice(1, -1) : t));
}

/** `nft list tables` -> ["inet CRIU-123", ...] */
export function criuNftTables(listing: string): string[] {
  return listing
    .split('\n')
    .map((l) => l.trim().match(/^table\s+(\S+)\s+(CRIU-\S+)$/))
    .filter((m): m is RegExpMatchArray => !!m)
    .map((m) => `${m[1]} ${m[2]}`);
}
