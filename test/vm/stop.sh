#!/usr/bin/env bash
# Stops the test VMs started by start.sh and removes their runtime files ($RM_VM_RUN_DIR:
# pid files, consoles, overlays, known ssh connections). The cached image and the keys
# stay. Safe to run when nothing runs. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
log() { echo "stop: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "stop: error: run as root" >&2; exit 1; }
RUN=$RM_VM_RUN_DIR

# The QEMU of a VM is the process whose arguments hold our pid file path: found through the
# pid file, or (if that is gone) by that exact argument. Nothing else is signalled.
is_ours() { # pid vm
	[ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$RUN/$2.pid"
}
qemu_pids() { # vm
	local pid p
	pid=$(cat "$RUN/$1.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && is_ours "$pid" "$1"; then
		echo "$pid"
		return 0
	fi
	for p in /proc/[0-9]*; do
		if is_ours "${p#/proc/}" "$1"; then echo "${p#/proc/}"; fi
	done
	return 0
}

# Multiplexed ssh masters (ssh.sh with RM_VM_SSH_MUX=1).
for sock in "$RUN"/ssh-*.sock; do
	[ -S "$sock" ] && ssh -o "ControlPath=$sock" -O exit placeholder >/dev/null 2>&1 || true
done

declare -A pids=()
for vm in vm1 vm2; do
	p=$(qemu_pids "$vm" | tr '\n' ' ')
	if [ -n "${p// /}" ]; then
		pids[$vm]=$p
		kill -TERM $p 2>/dev/null || true
	fi
done
for vm in "${!pids[@]}"; do
	for _ in $(seq 1 50); do
		left=
		for p in ${pids[$vm]}; do [ -d "/proc/$p" ] && left+="$p "; done
		[ -z "$left" ] && break
		sleep 0.1
	done
	if [ -n "$left" ]; then
		log "$vm (pid $left) ignored SIGTERM: SIGKILL"
		kill -KILL $left 2>/dev/null || true
		sleep 0.2
	fi
	log "$vm stopped"
done
[ ${#pids[@]} -gt 0 ] || log "no VM was running"
rm -rf "$RUN"
