#!/usr/bin/env bash
# The restore (and the other downtime parts), before and after a change, A/B: compare.js's ours-* methods run by another
# build (BEFORE, a checkout with its dist/ built) and by this one, alternating, RUNS
# (default 3) runs each. Besides compare.js's figures, the machine's memory peak during
# each run (one method per compare.js run): MemAvailable before the run less its lowest value during it, read every 100 ms
# (the source's container, the destination's images and the restored copy all live on this
# machine). As root, on the local test hosts; never beside another benchmark or make test.
#   BEFORE=/tmp/before SIZES=1024 METHODS="ours-direct ours-tls" RUNS=3 bench/restore-ab.sh
# ECHO=1 adds compare.js's echo server (SIZES= for it alone); a raw-* method runs under
# both builds alike (the same script), which gives it twice the runs.
# Output: OUT/TAG.jsonl (compare.js's rows, with build and memPeakMiB) and OUT/TAG.md.
# shellcheck disable=SC2016 # the node -e programs' template literals are JavaScript's
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
: "${BEFORE:?set BEFORE to a checkout of the other build (its dist/ built)}"
OUT=${OUT:-bench/results} TAG=${TAG:-restore-ab}
RUNS=${RUNS:-3} SIZES=${SIZES-1024} METHODS=${METHODS:-ours-direct ours-tls} ECHO=${ECHO:-0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
avail() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
: >"$tmp/all.jsonl"
for rep in $(seq 1 "$RUNS"); do
	for method in $METHODS; do for build in before after; do
		bin=$PWD/bin/migrate
		[ "$build" = before ] && bin=$(cd "$BEFORE" && pwd)/bin/migrate
		base=$(avail)
		(
			low=$base
			while [ ! -e "$tmp/stop" ]; do
				a=$(avail)
				[ "$a" -lt "$low" ] && low=$a && echo "$low" >"$tmp/low"
				sleep 0.1
			done
		) &
		sampler=$!
		echo "$base" >"$tmp/low"
		RM_MIGRATE_BIN=$bin SIZES=$SIZES ECHO=$ECHO METHODS=$method RUNS=1 COUNTER=0 STARTUP=0 OUT=$tmp TAG=run \
			node dist/bench/compare.js 2>"$tmp/err" >/dev/null || { cat "$tmp/err" >&2; exit 1; }
		touch "$tmp/stop"
		wait "$sampler"
		rm -f "$tmp/stop"
		peak=$(((base - $(cat "$tmp/low")) / 1024))
		node -e '
			const [build, peak] = process.argv.slice(1);
			for (const l of require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean)) {
				const r = JSON.parse(l);
				console.log(JSON.stringify({ ...r, build, memPeakMiB: Number(peak) }));
			}' "$build" "$peak" <"$tmp/run.jsonl" | tee -a "$tmp/all.jsonl" |
			node -e 'for (const l of require("fs").readFileSync(0,"utf8").split("\n").filter(Boolean)) { const r = JSON.parse(l); console.error(`${r.build} ${r.method} ${r.workload === "echo" ? "echo" : r.sizeMb + " MB"} #${process.argv[1]}: restore ${r.phases?.restore} ms, downtime ${r.downtimeMs} ms, client gap ${r.clientGapMs} ms, peak ${r.memPeakMiB} MiB, ${r.ok ? "ok" : "FAILED"}`); }' "$rep"
	done; done
done
mkdir -p "$OUT"
cp "$tmp/all.jsonl" "$OUT/$TAG.jsonl"
node - "$OUT/$TAG.jsonl" "$BEFORE" "$RUNS" "$SIZES" "$METHODS" "$ECHO" >"$OUT/$TAG.md" <<'EOF'
const fs = require('fs');
const [file, before, runs, sizes, methods, echo] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const med = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const cell = (a) => a.length ? `${Math.round(med(a))} (${Math.round(Math.min(...a))}-${Math.round(Math.max(...a))})` : '-';
let md = `# The restore, before and after (A/B, namespace hosts)\n\n`;
md += `\`BEFORE=${before} ${echo === '1' ? 'ECHO=1 ' : ''}SIZES="${sizes}" METHODS="${methods}" RUNS=${runs} bench/restore-ab.sh\`, ${new Date().toISOString().slice(0, 10)}; builds alternating. `;
md += `Cells: median (min-max), ms. *memory peak*: the machine's MemAvailable before the run less its lowest during it (source container, destination images and restored copy together).\n\n`;
md += `| size | method | build | restore part | dump part | copy part | downtime | client gap | memory peak, MiB | ok |\n|---|---|---|---|---|---|---|---|---|---|\n`;
const keys = [...new Set(rows.map((r) => `${r.workload === 'echo' ? 'echo' : r.sizeMb + ' MB'}|${r.method}|${r.build}`))];
for (const k of keys) {
  const [size, method, build] = k.split('|');
  const rs = rows.filter((r) => `${r.workload === 'echo' ? 'echo' : r.sizeMb + ' MB'}|${r.method}|${r.build}` === k);
  md += `| ${size} | ${method} | ${build} | ${cell(rs.map((r) => r.phases?.restore).filter((x) => x !== undefined))} | ${cell(rs.map((r) => r.phases?.dump).filter((x) => x !== undefined))} | ${cell(rs.map((r) => r.parts?.copy).filter((x) => x !== undefined))} | ${cell(rs.map((r) => r.downtimeMs))} | ${cell(rs.map((r) => r.clientGapMs).filter((x) => x !== undefined))} | ${cell(rs.map((r) => r.memPeakMiB))} | ${rs.filter((r) => r.ok).length}/${rs.length} |\n`;
}
md += `\nEvery run: \`${require('path').basename(file)}\`.\n`;
process.stdout.write(md);
EOF
echo "results: $OUT/$TAG.md" >&2
