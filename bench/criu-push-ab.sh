#!/usr/bin/env bash
# The page server's corked close, A/B: the installed CRIU against one built with
# docs/criu-page-server-push.patch (PATCHED_CRIU, its criu binary), on both hosts, for a
# one-shot migration of the counter with --transport direct (a page server, no files),
# RUNS (default 4) runs each, alternating. Prints one line per run: the downtime, its dump
# part (from the freeze until every image is written and the source held) and CRIU's
# frozen time. As root, on the local test hosts (make hosts first).
#   PATCHED_CRIU=/path/to/criu-4.2-patched/criu/criu bench/criu-push-ab.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
: "${PATCHED_CRIU:?set PATCHED_CRIU to a criu binary built with docs/criu-page-server-push.patch}"
# shellcheck source=test/hosts/env.sh
. test/hosts/env.sh
D=$RM_HOSTS_DIR
clean() { for side in src dst; do runc --root "$D/$side/runc" delete -f ab >/dev/null 2>&1; done; }
for rep in $(seq 1 "${RUNS:-4}"); do
	for which in stock patched; do
		extra=()
		[ "$which" = patched ] && extra=(--criu "$PATCHED_CRIU" --remote-criu "$PATCHED_CRIU")
		clean
		bash examples/make-bundle.sh counter "$D/src/bundles/ab" /rm-src/ab >/dev/null 2>&1
		bash examples/make-bundle.sh counter "$D/dst/bundles/ab" /rm-dst/ab >/dev/null 2>&1
		nsenter --net=/run/netns/rm-src runc --root "$D/src/runc" run -d --bundle "$D/src/bundles/ab" ab </dev/null >/dev/null 2>&1
		sleep 1
		out=$(SSH_AUTH_SOCK='' HOME=/nonexistent-home nsenter --net=/run/netns/rm-src node bin/migrate ab "root@$RM_DST_ADDR" \
			-i "$D/keys/id_ed25519" --known-hosts "$D/keys/known_hosts" --runc-root "$D/src/runc" \
			--remote-runc-root "$D/dst/runc" --bundle "$D/dst/bundles/ab" --one-shot --transport direct \
			--no-sync-rootfs --json "${extra[@]}" 2>/dev/null)
		echo "$which $rep $(echo "$out" | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{const j=JSON.parse(s);console.log(j.outcome,"downtime",j.downtimeMs,"dump",j.downtimeParts?.dump,"frozenUs",j.finalDump?.frozenTimeUs)})')"
	done
done
clean
