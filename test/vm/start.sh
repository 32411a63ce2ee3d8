#!/usr/bin/env bash
# Boots the two test VMs from the base image (built or reused by build-image.sh):
#   vm1 (source)       link $RM_VM1_ADDR, ssh from the host on 127.0.0.1:$RM_VM1_SSH_PORT
#   vm2 (destination)  link $RM_VM2_ADDR, ssh from the host on 127.0.0.1:$RM_VM2_SSH_PORT
# QEMU TCG, copy-on-write overlays of one image (snapshot=on: nothing a VM writes survives
# stop.sh), the project directory shared at /project (read-write in vm1, read-only in vm2).
# Waits until both answer SSH, then prints the connection settings as shell variables on
# stdout (everything else goes to stderr), so that:   eval "$(bash test/vm/start.sh)"
# Does nothing but print them if both VMs are already up. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
RM_VM_PROJECT_SRC=${RM_VM_PROJECT_SRC:-$top}
. "$here/env.sh"

log() { echo "start: $*" >&2; }
die() { echo "start: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run test/vm/install-deps.sh"
[ -d "$RM_VM_PROJECT_SRC" ] || die "project directory $RM_VM_PROJECT_SRC does not exist"

RUN=$RM_VM_RUN_DIR
IMG=$RM_VM_IMAGE_DIR
SSH_OPTS=(-i "$RM_VM_KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes
	-o "UserKnownHostsFile=$RM_VM_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
	-o ConnectTimeout=5 -o LogLevel=ERROR)

settings() {
	cat <<VARS
RM_VM_DIR=$RM_VM_DIR
RM_VM_KEY=$RM_VM_KEY
RM_VM_KNOWN_HOSTS=$RM_VM_KNOWN_HOSTS
RM_VM_SSH_HOST=$RM_VM_SSH_HOST
RM_VM1_SSH_PORT=$RM_VM1_SSH_PORT
RM_VM2_SSH_PORT=$RM_VM2_SSH_PORT
RM_VM1_ADDR=$RM_VM1_ADDR
RM_VM2_ADDR=$RM_VM2_ADDR
RM_VM_LINK_DEV=$RM_VM_LINK_DEV
RM_VM_DEAD_ADDR=$RM_VM_DEAD_ADDR
RM_VM_PROJECT=$RM_VM_PROJECT
RM_VM_SSH='ssh ${SSH_OPTS[*]} -l root'
VARS
}
alive() { # vm -> 0 if its QEMU (the one started with our pid file) runs
	local pid
	pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$RUN/$1.pid"
}
port_of() { if [ "$1" = vm1 ]; then echo "$RM_VM1_SSH_PORT"; else echo "$RM_VM2_SSH_PORT"; fi; }
ssh_ok() { ssh "${SSH_OPTS[@]}" -p "$(port_of "$1")" "root@$RM_VM_SSH_HOST" true </dev/null >/dev/null 2>&1; }

# Both up already: just the settings.
if alive vm1 && alive vm2 && ssh_ok vm1 && ssh_ok vm2; then
	log "vm1 and vm2 are already running"
	settings
	exit 0
fi
if alive vm1 || alive vm2 || [ -d "$RUN" ]; then
	log "leftovers of an earlier start: stopping them first"
	bash "$here/stop.sh" >&2
fi

if [ "${RM_VM_NO_BUILD:-0}" != 1 ]; then
	bash "$here/build-image.sh"
fi
for f in rootfs.ext4 vmlinux initrd.img; do
	[ -s "$IMG/$f" ] || die "$IMG/$f is missing: run test/vm/build-image.sh"
done

for p in "$RM_VM1_SSH_PORT" "$RM_VM2_SSH_PORT" "$RM_VM_LINK_PORT"; do
	if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
		die "TCP port $p is in use on this host (set RM_VM1_SSH_PORT/RM_VM2_SSH_PORT/RM_VM_LINK_PORT in test/vm/env.sh)"
	fi
done

mkdir -p "$RUN"
# Host side known_hosts: each VM's host key under the forwarded port.
{
	echo "[$RM_VM_SSH_HOST]:$RM_VM1_SSH_PORT $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm1_ed25519.pub")"
	echo "[$RM_VM_SSH_HOST]:$RM_VM2_SSH_PORT $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm2_ed25519.pub")"
} >"$RM_VM_KNOWN_HOSTS"

# The overlays QEMU makes for snapshot=on live in TMPDIR (and are deleted on open).
export TMPDIR=$RUN
start_vm() { # vm n link-role
	local vm=$1 n=$2 role=$3 addr port project_ro
	if [ "$vm" = vm1 ]; then addr=$RM_VM1_ADDR; else addr=$RM_VM2_ADDR; fi
	port=$(port_of "$vm")
	if [ "$vm" = vm1 ]; then project_ro=off; else project_ro=on; fi
	local cmdline="console=ttyS0 loglevel=4 panic=1 mitigations=off tsc=reliable i8042.noaux=1 i8042.nomux=1 i8042.nopnp=1 8250.nr_uarts=1"
	cmdline+=" rm.host=$vm rm.link=$addr/$RM_VM_LINK_PREFIX rm.mgmt=10.0.2.15/24 rm.gw=10.0.2.2 rm.9p=project:$RM_VM_PROJECT"
	local args=(
		-name "$vm,process=rm-$vm"
		-machine pc -accel tcg,tb-size=256 -cpu "$RM_VM_CPU" -smp 1 -m "$RM_VM_MEM_MB"
		-nodefaults -no-user-config -display none -no-reboot
		-serial "file:$RUN/$vm.console"
		-kernel "$IMG/vmlinux" -initrd "$IMG/initrd.img" -append "$cmdline"
		-drive "file=$IMG/rootfs.ext4,format=raw,if=virtio,snapshot=on,cache=unsafe"
		-netdev "user,id=mgmt,net=10.0.2.0/24,hostfwd=tcp:$RM_VM_SSH_HOST:$port-:22"
		-device "virtio-net-pci,netdev=mgmt,mac=52:54:00:77:01:0$n"
		-netdev "socket,id=link,$role=127.0.0.1:$RM_VM_LINK_PORT"
		-device "virtio-net-pci,netdev=link,mac=52:54:00:77:02:0$n"
		-fsdev "local,id=project,path=$RM_VM_PROJECT_SRC,security_model=passthrough,readonly=$project_ro"
		-device "virtio-9p-pci,fsdev=project,mount_tag=project"
		-device virtio-rng-pci
		-daemonize -pidfile "$RUN/$vm.pid"
	)
	if ! qemu-system-x86_64 "${args[@]}" >"$RUN/$vm.qemu.log" 2>&1; then
		cat "$RUN/$vm.qemu.log" >&2
		die "QEMU did not start $vm (see above)"
	fi
	alive "$vm" || die "QEMU for $vm exited right away: $(cat "$RUN/$vm.qemu.log")"
}

t0=$(date +%s%N)
secs() { local d=$((($(date +%s%N) - t0) / 100000000)); echo "$((d / 10)).$((d % 10))"; }
# vm1 listens on the link socket, so it comes first (daemonize returns once it listens).
start_vm vm1 1 listen
start_vm vm2 2 connect
log "QEMU started (vm1 pid $(cat "$RUN/vm1.pid"), vm2 pid $(cat "$RUN/vm2.pid")); waiting for SSH"

declare -A ready=()
deadline=$(($(date +%s) + RM_VM_BOOT_TIMEOUT))
while [ ${#ready[@]} -lt 2 ]; do
	for vm in vm1 vm2; do
		[ -n "${ready[$vm]:-}" ] && continue
		if ! alive "$vm"; then
			tail -n 40 "$RUN/$vm.console" >&2 2>/dev/null || true
			cat "$RUN/$vm.qemu.log" >&2 2>/dev/null || true
			bash "$here/stop.sh" >&2 || true
			die "$vm stopped while booting (its console is above)"
		fi
		if ssh_ok "$vm"; then
			ready[$vm]=$(secs)
			log "$vm answers SSH after ${ready[$vm]} s"
		fi
	done
	[ ${#ready[@]} -lt 2 ] || break
	if [ "$(date +%s)" -ge "$deadline" ]; then
		for vm in vm1 vm2; do
			echo "--- $vm console (last lines) ---" >&2
			tail -n 30 "$RUN/$vm.console" >&2 2>/dev/null || true
		done
		bash "$here/stop.sh" >&2 || true
		die "the VMs did not answer SSH within $RM_VM_BOOT_TIMEOUT s"
	fi
	sleep 0.5
done
log "both VMs up in $(secs) s"
settings | tee "$RUN/env.sh"
