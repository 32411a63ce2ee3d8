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
  if (nft.code === 0)
    for (const t of criuNftTables(nft.stdout)) found.push(JSON.stringify(['nft', 'delete', 'table', ...t.split(' ')]));
  return found;
}

/** A TCP connection as CRIU's per-connection rule names it: both addresses and ports. */
export interface Connection {
  local: string;
  peer: string;
}

/**
 * "10.0.0.1:80" / "[fd00::1]:80" -> address and port. An IPv4-mapped address (a socket
 * of a dual-stack listener: ss shows "[::ffff:10.0.0.1]:80") is the IPv4 address CRIU's
 * rule names.
 */
function endpoint(s: string): { addr: string; port: string } {
  const i = s.lastIndexOf(':');
  const addr = s.slice(0, i).replace(/^\[|\]$/g, '');
  return { addr: addr.replace(/^::ffff:(\d{1,3}(\.\d{1,3}){3})$/i, '$1'), port: s.slice(i + 1) };
}

/**
 * Whether a lock rule ITEM (criuLockRules' form) is CRIU's lock of one of CONNS: its
 * source and destination addresses and ports are those of a connection, either way
 * round (CRIU locks both directions). Rules that name no connection (CRIU's chain, the
 * jump to it, an nftables table) are nobody's in particular: undefined.
 */
export function lockRuleOf(item: string, conns: Connection[]): boolean | undefined {
  const argv = JSON.parse(item) as string[];
  const at = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const [s, d, sport, dport] = [
    at('-s')?.replace(/\/\d+$/, ''),
    at('-d')?.replace(/\/\d+$/, ''),
    at('--sport'),
    at('--dport'),
  ];
  if (!s || !d || !sport || !dport) return undefined;
  return conns.some((c) => {
    const [l, p] = [endpoint(c.local), endpoint(c.peer)];
    return (
      (s === l.addr && sport === l.port && d === p.addr && dport === p.port) ||
      (s === p.addr && sport === p.port && d === l.addr && dport === l.port)
    );
  });
}

/**
 * Removes the lock rules (and CRIU's chain or nftables table) CRIU left, except those in
 * `keep` (present before this dump: another dump's, which are not ours) and, when MINE is
 * given (this container's connections, taken before its dump), the per-connection rules
 * of other connections (a dump of another container that began meanwhile). Returns how many.
 */
export async function removeCriuLockRules(run: Runner, keep: string[] = [], mine?: Connection[]): Promise<number> {
  let removed = 0;
  for (const item of await criuLockRules(run)) {
    if (keep.includes(item)) continue;
    if (mine && lockRuleOf(item, mine) === false) continue;
    if ((await run(JSON.parse(item) as string[])).code === 0) removed++;
  }
  return removed;
}

/** The TCP connections of the container whose init is PID (its processes PIDS), as `ss` sees them in its network namespace. */
export async function connectionsOf(pid: number, pids: number[], run: Runner): Promise<Connection[]> {
  const list = await run(['nsenter', '-t', String(pid), '-n', 'ss', '-Htnp', 'state', 'connected']);
  return list.code === 0 ? containerConnections(list.stdout, pids) : [];
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

/**
 * `ss -Htnp state connected` (run in the container's network namespace) -> the
 * connections a process of PIDS holds, as the addresses `ss -K` filters on. A scope
 * ("%eth0") is left out: the filter does not take it.
 */
export function containerConnections(ssOut: string, pids: number[]): Array<{ local: string; peer: string }> {
  const mine = new Set(pids);
  const found: Array<{ local: string; peer: string }> = [];
  for (const line of ssOut.split('\n')) {
    const owners = [...line.matchAll(/\bpid=(\d+)/g)].map((m) => Number(m[1]));
    if (!owners.some((p) => mine.has(p))) continue;
    const addrs = line
      .split(/\s+/)
      .map((t) => t.replace(/%[^\]:\s]+/, ''))
      .filter((t) => /^(\[[0-9a-fA-F:.]+\]|\d{1,3}(\.\d{1,3}){3}):\d+$/.test(t));
    if (addrs.length >= 2) found.push({ local: addrs[0], peer: addrs[1] });
  }
  return found;
}

/**
 * Post-copy: after a broken lazy window CRIU resumes the tasks with the TCP connections
 * it dumped (--tcp-established) still in repair mode: they neither send nor fail, and
 * the application waits on them for ever. Their peers have been talking to the
 * destination's copy, so they cannot go on: each is destroyed (`ss -K`, the kernel's
 * SOCK_DESTROY), the application gets an error and its peer a reset. PID: the
 * container's init; PIDS: its processes (runc ps). Returns how many were found and how
 * many went (a kernel without CONFIG_INET_DIAG_DESTROY refuses).
 */
export async function dropRepairedConnections(
  pid: number,
  pids: number[],
  run: Runner,
): Promise<{ found: number; dropped: number }> {
  const inNs = (argv: string[]) => run(['nsenter', '-t', String(pid), '-n', ...argv]);
  const list = await inNs(['ss', '-Htnp', 'state', 'connected']);
  if (list.code !== 0) return { found: 0, dropped: 0 };
  const found = containerConnections(list.stdout, pids);
  let dropped = 0;
  for (const c of found) {
    if ((await inNs(['ss', '-K', '-Htn', 'state', 'connected', 'src', c.local, 'dst', c.peer])).code === 0) dropped++;
  }
  return { found: found.length, dropped };
}

/**
 * Everything of CRIU's lock that a broken lazy window leaves on the resumed source, which
 * the hold would have lifted on a rollback: the host's lock rules (but those in KEEP,
 * another dump's), the chain inside a namespace of the container's own, and the
 * connections still in repair mode. PID: the container's init, if it runs; PS: the argv
 * that lists its processes as JSON (runc ps). Returns a warning when connections stay hung.
 */
export async function unlockAfterWindow(
  run: Runner,
  o: { pid?: number; ps: string[]; keep: string[]; mine?: Connection[] },
): Promise<string | undefined> {
  await removeCriuLockRules(run, o.keep, o.mine);
  if (!o.pid) return undefined;
  await unlockContainerNetns(o.pid, run);
  const ps = await run(o.ps);
  let pids: number[] = [o.pid];
  try {
    if (ps.code === 0) pids = JSON.parse(ps.stdout) as number[];
  } catch {
    /* the init alone */
  }
  const c = await dropRepairedConnections(o.pid, pids, run);
  return c.dropped < c.found
    ? `${c.found - c.dropped} of the container's TCP connections could not be destroyed (ss -K: does the kernel have CONFIG_INET_DIAG_DESTROY?) and hang in repair mode: restart the application's connections`
    : undefined;
}
