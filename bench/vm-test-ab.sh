#!/usr/bin/env bash
# A VM end-to-end test, before and after a change, A/B: the VMs run the tool from this
# work tree's dist/ (mounted over 9p), so each run puts one build's dist/ in place, the
# builds alternating (before first), RUNS (default 3) runs each; this tree's own dist/ is
# put back at the end. For each run: the test's duration and the figures the test prints
# (the converges test prints its phases, pages and downtimes). As root, with the VMs
# runnable (test/vm/); never beside another benchmark or make test.
#   BEFORE_DIST=/tmp/dist-before AFTER_DIST=/tmp/dist-after PATTERN='converges: several' bench/vm-test-ab.sh
# Output: OUT/TAG.jsonl (one row a run: build, run, test, durationS, passed, figures) and
# OUT/TAG.md.
# shellcheck disable=SC2016 # the node -e programs' template literals are JavaScript's
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
: "${BEFORE_DIST:?set BEFORE_DIST to the dist/ directory of the build before}"
: "${AFTER_DIST:?set AFTER_DIST to the dist/ directory of the build after}"
: "${PATTERN:?set PATTERN to a test name pattern of test/vm-e2e}"
OUT=${OUT:-bench/results} TAG=${TAG:-vm-test-ab} RUNS=${RUNS:-3}
tmp=$(mktemp -d)
keep=$tmp/dist-here
cp -a dist "$keep" || exit 1
restore() {
	rm -rf dist && cp -a "$keep" dist
	rm -rf "$tmp"
}
trap restore EXIT
: >"$tmp/all.jsonl"
for run in $(seq 1 "$RUNS"); do
	for build in before after; do
		src=$BEFORE_DIST
		[ "$build" = after ] && src=$AFTER_DIST
		rm -rf dist && cp -a "$src" dist || exit 1
		node --test --test-concurrency=1 --test-name-pattern="$PATTERN" dist/test/vm-e2e/precopy.test.js >"$tmp/log" 2>&1
		BUILD=$build RUN=$run node -e '
const fs = require("fs");
const log = fs.readFileSync(process.argv[1], "utf8").split("\n");
const rows = [];
let name;
for (const line of log) {
  let m = line.match(/^    (not )?ok \d+ - (.*)$/);
  if (m && !/# SKIP/.test(line)) { name = { test: m[2], passed: !m[1] }; continue; }
  m = line.match(/^      duration_ms: ([\d.]+)/);
  if (m && name) { rows.push({ ...name, durationS: Math.round(Number(m[1])) / 1000 }); name = undefined; }
}
const figures = log.filter((l) => /^# \\# /.test(l)).map((l) => l.replace(/^# \\# /, ""));
for (const r of rows)
  console.log(JSON.stringify({ build: process.env.BUILD, run: Number(process.env.RUN), ...r, figures }));
' "$tmp/log" >>"$tmp/all.jsonl"
		tail -n 1 "$tmp/all.jsonl" | cut -c1-200 >&2
	done
done
mkdir -p "$OUT"
cp "$tmp/all.jsonl" "$OUT/$TAG.jsonl"
node -e '
const fs = require("fs");
const rows = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const out = [`# ${process.argv[2]}: VM test durations, before and after (alternating)`, "", "| test | build | runs (s) | median (s) | passed |", "|---|---|---|---|---|"];
for (const test of [...new Set(rows.map((r) => r.test))])
  for (const build of ["before", "after"]) {
    const rs = rows.filter((r) => r.test === test && r.build === build);
    if (rs.length) out.push(`| ${test.slice(0, 60)} | ${build} | ${rs.map((r) => r.durationS.toFixed(1)).join(", ")} | ${med(rs.map((r) => r.durationS)).toFixed(1)} | ${rs.filter((r) => r.passed).length}/${rs.length} |`);
  }
out.push("", "Figures the tests printed, run by run:", "");
const seen = new Set();
for (const r of rows) {
  if (seen.has(`${r.build} ${r.run}`)) continue;
  seen.add(`${r.build} ${r.run}`);
  out.push(`- ${r.build} ${r.run}: ${r.figures.join(" / ") || "(none)"}`);
}
fs.writeFileSync(process.argv[3], out.join("\n") + "\n");
' "$OUT/$TAG.jsonl" "$TAG" "$OUT/$TAG.md"
cat "$OUT/$TAG.md"
