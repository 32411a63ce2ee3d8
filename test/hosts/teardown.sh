#!/usr/bin/env bash
# Removes everything setup.sh and the tests made: containers on both hosts, sshd,
# namespaces, and the hosts' directory. Safe to run when nothing is there.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$RM_HOSTS_DIR

for side in src dst; do
	root=$D/$side/runc
	[ -d "$root" ] || continue
	for c in $(runc --root "$root" list -q 2>/dev/null); do
		runc --root "$root" kill "$c" KILL >/dev/null 2>&1 || true
		runc --root "$root" delete -f "$c" >/dev/null 2>&1 || true
	done
done
for pidf in "$D/dst/run/sshd.pid" "$D/dst/run/sshd-rsa.pid" "$D/jump/sshd.pid" "$D/src/sshd/sshd.pid"; do
	if [ -f "$pidf" ]; then kill "$(cat "$pidf")" 2>/dev/null || true; fi
done
# Stray page servers or CRIU processes started for the test hosts' images.
pkill -f "criu page-server.*runc-migrate" 2>/dev/null || true
for n in "$RM_NS_JUMP" "$RM_NS_CLIENT" "$RM_NS_DST" "$RM_NS_SRC" "$RM_NS_LAN"; do
	if [ -e "/run/netns/$n" ]; then
		# Processes still inside the namespace (sshd children, test clients) go first.
		for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$n" 2>/dev/null || true
	fi
done
# Directories the tool may have left under tmpfs (it should not; the tests check).
umount -R "$D"/*/bundles/*/rootfs 2>/dev/null || true
umount -l "$D/dst/run" 2>/dev/null || true
rm -rf "$D"
if id "$RM_SUDO_USER" >/dev/null 2>&1; then userdel --remove "$RM_SUDO_USER" >/dev/null 2>&1 || true; fi
rm -f "/etc/sudoers.d/$RM_SUDO_USER"
exit 0
