# Shared by the by-hand migration scripts (bench/scripts/*.sh), which compare.js runs
# inside the source namespace. Environment: NAME, DST (address), KEY, KNOWN_HOSTS,
# SRC_ROOT, DST_ROOT (runc roots), BUNDLE (on the destination), SVC (address/prefix to
# move, empty: none), TCP (--tcp-established or empty). Prints T_FREEZE and T_RUNNING
# (ns since the epoch) around the downtime, T_DUMPED when the checkpoint returned, and
# BYTES (image bytes moved).
set -euo pipefail
ssh_opts=(-i "$KEY" -o "UserKnownHostsFile=$KNOWN_HOSTS" -o StrictHostKeyChecking=yes -o BatchMode=yes)
now() { date +%s%N; }
# Gives up the service address here; the destination adds it before its restore.
release_addr() { [ -z "$SVC" ] || ip addr del "$SVC" dev eth0; }
claim_addr() { [ -z "$SVC" ] || echo "ip addr add $SVC dev eth0 && "; }
announce_addr() { [ -z "$SVC" ] || echo " && busybox arping -U -c 1 -I eth0 -s ${SVC%/*} ${SVC%/*} >/dev/null"; }
# One SSH connection opened before the freeze, which every later ssh reuses (ControlMaster),
# as the tool keeps one connection.
open_master() {
	ctl=$(mktemp -u /tmp/bench-raw-ssh.XXXXXX)
	ssh_opts+=(-o "ControlPath=$ctl")
	ssh -M -f -N "${ssh_opts[@]}" "root@$DST"
	trap 'ssh "${ssh_opts[@]}" -O exit "root@$DST" 2>/dev/null || true' EXIT
}
# After the checkpoint (images in L/img, pages maybe already in R/img): the address off
# this host, the image files by tar over the master connection, and on the destination
# the address claimed, the restore, the announcement. Prints T_DUMPED and T_RUNNING.
copy_and_restore() { # L R
	echo "T_DUMPED $(now)"
	release_addr
	tar -C "$1/img" -cf - . | ssh "${ssh_opts[@]}" "root@$DST" "tar -C $2/img -xf - && $(claim_addr)runc --root $DST_ROOT restore --detach --bundle $BUNDLE --image-path $2/img --work-path $2/work $TCP $NAME$(announce_addr)"
	echo "T_RUNNING $(now)"
}
