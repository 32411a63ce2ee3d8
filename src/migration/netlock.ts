// CRIU locks a dumped container's TCP connections with iptables DROP rules that skip
// packets marked 0xc114 (its own), or with an nftables table "CRIU-<id>". After a
// successful dump the source's rules stay behind; they are removed once the migration
// commits. The parsing is pure; removeCriuLockRules runs its commands through the
// runner it is given (a host of the tool's, or a test bed's namespace).

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

/** Runs one command without throwing on a non-zero exit. */
export type Runner = (argv: string[]) => Promise<{ code: number | null; stdout: string }>;

/** The lock rules and tables present now, as the argv that would delete each (one string per item). */
export async function criuLockRules(run: Runner): Promise<string[]> {
  const found: string[] = [];
  for (const bin of ['iptables', 'ip6tables']) {
    const list = await run([bin, '-w', '-S']);
    if (list.code !== 0) continue;
    for (const argv of criuIptablesDeletes(list.stdout, bin)) found.push(JSON.stringify(argv));
    // The chain itself, if CRIU made one (deleted after its rules).
    if (/^-N CRIU$/m.test(list.stdout)) found.push(JSON.stringify([bin, '-w', '-X', 'CRIU']));
  }
  const nft = await run(['nft', 'list', 'tables']);
  if (nft.code === 0) for (const t of criuNftTables(nft.stdout)) found.push(JSON.stringify(['nft', 'delete', 'table', ...t.split(' ')]));
  return found;
}

/**
 * Removes the lock rules (and CRIU's chain or nftables table) CRIU left, except those in
 * `keep` (present before this dump: another dump's, which are not ours); returns how many.
 */
export async function removeCriuLockRules(run: Runner, keep: string[] = []): Promise<number> {
  let removed = 0;
  for (const item of await criuLockRules(run)) {
    if (keep.includes(item)) continue;
    if ((await run(JSON.parse(item) as string[])).code === 0) removed++;
  }
  return removed;
}

/**
 * Post-copy: after a broken lazy window CRIU resumes the tasks without unlocking the
 * network, and a container with its own network namespace keeps CRIU's chain there
 * (every packet but CRIU's dropped). Removes it when PID's namespace is not the host's
 * (the host's rules are removeCriuLockRules' with the snapshot of other dumps' rules).
 * Returns how many rules went.
 */
export async function unlockContainerNetns(pid: number, run: Runner): Promise<number> {
  const own = await run(['readlink', `/proc/${pid}/ns/net`]);
  const host = await run(['readlink', '/proc/self/ns/net']);
  if (own.code !== 0 || host.code !== 0 || own.stdout.trim() === host.stdout.trim()) return 0;
  return removeCriuLockRules((argv) => run(['nsenter', '-t', String(pid), '-n', ...argv]));
}
