#!/usr/bin/env bash
# Where does the page server beat the tar stream? Migrates a Redis container filled with
# DEBUG POPULATE to each size, with --transport stream, tls, tunnel and direct, RUNS times
# each (alternating; direct = page server over plain TCP; --no-sync-rootfs), between the
# local test hosts, and writes a Markdown table of
# freeze-to-running downtime to bench/results/transport-crossover.md. This figure sets
# DEFAULTS.autoStreamMaxBytes. Takes about 2 minutes with the default sizes.
#   bench/transport-crossover.sh [SIZES_MB...]     (default: 16 32 64 256 512)
# RUNS (default 2) sets the runs per point, OUT the results file.
# Needs: root, make build, make hosts (test/hosts/setup.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/hosts/env.sh
H=$RM_HOSTS_DIR
RUNS=${RUNS:-2}
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(16 32 64 256 512)
out=${OUT:-bench/results/transport-crossover.md}
raw=$(mktemp)
trap 'rm -f "$raw"; for n in src dst; do runc --root "$H/$n/runc" delete -f bench-redis >/dev/null 2>&1 || true; done' EXIT

bash test/hosts/setup.sh >/dev/null
bash examples/make-bundle.sh redis "$H/src/bundles/bench-redis" /rm-src/bench-redis >/dev/null
bash examples/make-bundle.sh redis "$H/dst/bundles/bench-redis" /rm-dst/bench-redis >/dev/null
for mb in "${sizes[@]}"; do
	for rep in $(seq "$RUNS"); do
		for t in stream tls tunnel direct; do
			for n in src dst; do runc --root "$H/$n/runc" delete -f bench-redis >/dev/null 2>&1 || true; done
			nsenter --net="/run/netns/$RM_NS_SRC" runc --root "$H/src/runc" run -d --bundle "$H/src/bundles/bench-redis" bench-redis </dev/null >/dev/null 2>&1
			for _ in $(seq 50); do nsenter --net="/run/netns/$RM_NS_SRC" redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
			nsenter --net="/run/netns/$RM_NS_SRC" redis-cli -h 127.0.0.1 debug populate $((mb * 1000)) k 1000 >/dev/null
			nsenter --net="/run/netns/$RM_NS_SRC" node bin/migrate bench-redis "root@$RM_DST_ADDR" -i "$H/keys/id_ed25519" \
				--known-hosts "$H/keys/known_hosts" --runc-root "$H/src/runc" --remote-runc-root "$H/dst/runc" \
				--bundle "$H/dst/bundles/bench-redis" --transport "$t" --no-sync-rootfs --json | sed "s/^/$mb $t /" >> "$raw"
			echo "$mb MB $t run $rep: $(tail -n1 "$raw" | grep -o '"downtimeMs":[0-9.]*')" >&2
		done
	done
done
node - "$raw" "$out" <<'JS'
const fs = require('fs');
const [raw, out] = process.argv.slice(2);
const rows = {};
for (const line of fs.readFileSync(raw, 'utf8').trim().split('\n')) {
  const [mb, t, ...rest] = line.split(' ');
  const j = JSON.parse(rest.join(' '));
  const key = `${mb}`;
  rows[key] ??= { mem: [], stream: [], tls: [], tunnel: [], direct: [], tlsDump: [], tunnelDump: [], directDump: [] };
  const dump = j.phases.find((p) => p.name === 'dump')?.ms;
  if (t !== 'stream') rows[key][`${t}Dump`].push(dump);
  rows[key].mem.push(j.memoryBytes);
  rows[key][t].push(j.downtimeMs);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };
const fmt = (a) => `${Math.round(med(a))} (${a.map(Math.round).join(', ')})`;
let md = `# Transport crossover: freeze-to-running downtime, ms (median, then each run)\n\n`;
md += `Hosts: the local test hosts (network namespaces, one 2-core VM, kernel ${require('os').release()}), ${new Date().toISOString().slice(0, 10)}.\n`;
md += `Workload: Redis filled with DEBUG POPULATE; one-shot; diskless; no file sync.\n\n`;
md += `| populate | container memory | stream | tls | tunnel (SSH) | direct | dump phase, tls | dump phase, tunnel | dump phase, direct |\n|---|---|---|---|---|---|---|---|---|\n`;
for (const [mb, r] of Object.entries(rows)) {
  md += `| ${mb} MB | ${(med(r.mem) / 1048576).toFixed(0)} MiB | ${fmt(r.stream)} | ${fmt(r.tls)} | ${fmt(r.tunnel)} | ${fmt(r.direct)} | ${fmt(r.tlsDump)} | ${fmt(r.tunnelDump)} | ${fmt(r.directDump)} |\n`;
}
fs.writeFileSync(out, md);
process.stdout.write(md);
JS
