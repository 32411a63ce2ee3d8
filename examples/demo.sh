#!/usr/bin/env bash
# The demo behind `make demo`: builds two local test hosts (network namespaces with their
# own sshd and runc roots), starts the counter on the source, migrates it to the
# destination with runc-migrate, shows it counting on there, and tears everything down.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/test/hosts/env.sh"
D=$RM_HOSTS_DIR
NAME=demo-counter

cleanup() { bash "$top/test/hosts/teardown.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# The counter writes to its own /dev/shm; read it through the container's root.
count() { # count ROOT
	local pid
	pid=$(runc --root "$1" state "$NAME" 2>/dev/null | sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p')
	cat "/proc/$pid/root/dev/shm/count" 2>/dev/null || echo '?'
}

step "Building the test hosts: $RM_NS_SRC ($RM_SRC_ADDR) and $RM_NS_DST ($RM_DST_ADDR, sshd)"
bash "$top/test/hosts/setup.sh" >/dev/null

step "Making the counter bundle on the source, and only its config.json (its own cgroup) on the destination: the tool syncs the rootfs"
bash "$top/examples/make-bundle.sh" counter "$D/src/bundles/$NAME" "/rm-src/$NAME" >/dev/null
bash "$top/examples/make-bundle.sh" counter "$D/dst/bundles/$NAME" "/rm-dst/$NAME" >/dev/null
rm -rf "$D/dst/bundles/$NAME/rootfs"
nsenter --net="/run/netns/$RM_NS_SRC" runc --root "$D/src/runc" run -d --bundle "$D/src/bundles/$NAME" "$NAME" </dev/null >/dev/null 2>&1
for _ in 1 2 3 4 5; do
	sleep 0.5
	echo "  source: counter at $(count "$D/src/runc")"
done

last=$(count "$D/src/runc")
step "Migrating: migrate $NAME root@$RM_DST_ADDR"
set -x
nsenter --net="/run/netns/$RM_NS_SRC" node "$top/bin/migrate" "$NAME" "root@$RM_DST_ADDR" \
	-i "$D/keys/id_ed25519" --known-hosts "$D/keys/known_hosts" \
	--runc-root "$D/src/runc" --remote-runc-root "$D/dst/runc" \
	--bundle "$D/dst/bundles/$NAME"
{ set +x; } 2>/dev/null

step "After the migration"
echo "  source runc list:      $(runc --root "$D/src/runc" list -q | tr '\n' ' ')(empty: the source is gone)"
echo "  destination runc list: $(runc --root "$D/dst/runc" list -q | tr '\n' ' ')"
echo "  the source's counter was at $last just before the migration began"
for _ in 1 2 3 4 5; do
	sleep 0.5
	echo "  destination: counter at $(count "$D/dst/runc")"
done

step "Tearing the test hosts down"
