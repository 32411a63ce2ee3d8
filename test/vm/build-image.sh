#!/usr/bin/env bash
# Builds the base image of the QEMU test VMs (test/vm/start.sh boots two of them from it):
#   $RM_VM_IMAGE_DIR/rootfs.ext4   Debian 12 minbase + runc, sshd, iptables, the host's node
#                                  and CRIU 4.2 install, only the kernel modules needed
#   $RM_VM_IMAGE_DIR/vmlinux       Debian 12's stock kernel, uncompressed (PVH boot: no
#                                  in-guest decompression under TCG); vmlinuz kept as well
#   $RM_VM_IMAGE_DIR/initrd.img    static busybox + virtio/ext4 modules; mounts /dev/vda
#                                  and switch_roots to its /sbin/init
# and, once, the key pairs under $RM_VM_KEYS_DIR (root's client key, one host key per VM).
#
# Everything comes from Debian packages (debootstrap, the linux-image .deb unpacked with
# dpkg-deb) and from this host (/usr/bin/node, CRIU from test/hosts/install-criu.sh).
# The build is skipped when the image was made from the same inputs (this script,
# the link addresses, the package list, the kernel package version, node's and criu's versions,
# the keys). RM_VM_REBUILD=1 forces a build. Run as root; no questions asked.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
RM_VM_PROJECT_SRC=${RM_VM_PROJECT_SRC:-$top}
. "$here/env.sh"

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, device nodes and file ownership in the image need it)"

MIRROR=${RM_VM_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# What the guest needs: runc and its libraries, sshd (with sftp for the tool), the network
# tools CRIU and the tool run (ip, iptables/ip6tables-restore, nft), openssl (the TLS
# transport's certificates), busybox (the init, the
# bundles' rootfs), kmod (modprobe), and the libraries the host's node and CRIU load from
# the system (libstdc++6, libgcc-s1; libnftables1, libmd0, libffi8).
PACKAGES=(runc rsync openssh-server openssh-client openssh-sftp-server iproute2 busybox-static
	kmod iptables nftables openssl procps psmisc tar coreutils util-linux sudo
	libstdc++6 libgcc-s1 libseccomp2 libnftables1 libmd0 libffi8)
# Modules loaded by the initramfs (in dependency order) to mount the root disk.
INITRD_MODULES=(virtio_pci virtio_blk crc32c_generic ext4)
# Modules installed in the root filesystem (with their dependencies) and loaded at boot.
# The diag modules serve CRIU's socket dumps; nft_compat/xt_*/ip*_tables serve iptables
# (CRIU's network lock: iptables-restore with '-m mark'); nf_conntrack_netlink because CRIU
# dumps a network namespace's conntrack table (without it netlink answers EINVAL and the
# dump fails); xt_conntrack for rules that match state; xt_owner, xt_comment and xt_tcpudp for
# the tool's page-server port rules (portguard.ts); xfrm_user, esp4 and the AEAD ciphers
# (AES-GCM, ChaCha20-Poly1305, which the kernel loads by name) serve IPsec ESP in transport
# mode on the page connection (bench/vm.js encrypt); drbg and jitterentropy_rng are the
# kernel's stdrng, which ESP's IV generator (seqiv) needs (without them: ENOENT, which ip
# reports as "unable to initialize cryptographic operations").
ROOT_MODULES=(virtio_pci virtio_blk virtio_net virtio_rng crc32c_generic ext4
	9p 9pnet 9pnet_virtio veth bridge tun af_packet
	nfnetlink nf_tables nft_compat nft_ct nf_conntrack nf_conntrack_netlink x_tables xt_mark xt_conntrack xt_owner xt_comment xt_tcpudp
	ip_tables iptable_filter iptable_raw ip6_tables ip6table_filter ip6table_raw
	nf_reject_ipv4 nf_reject_ipv6 ipt_REJECT ip6t_REJECT
	inet_diag tcp_diag udp_diag raw_diag unix_diag netlink_diag af_packet_diag
	xfrm_user esp4 gcm ghash_generic ctr seqiv chacha20poly1305 chacha_generic poly1305_generic drbg jitterentropy_rng)

CRIU_PREFIX=/opt/runc-migrate/criu
CRIU_WRAPPER=/usr/local/sbin/criu
NODE=/usr/bin/node

# --- Preconditions ---------------------------------------------------------------------
missing=()
for c in debootstrap dpkg-deb depmod mkfs.ext4 cpio ssh-keygen xz sha256sum apt-get apt-cache flock; do
	command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ -x /bin/busybox ] || missing+=(/bin/busybox)
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run test/vm/install-deps.sh first"
if ldd /bin/busybox >/dev/null 2>&1; then die "/bin/busybox is not static: install busybox-static"; fi
[ -x "$NODE" ] || die "$NODE is missing: the VMs run the host's node (install nodejs >= 20)"
if [ ! -x "$CRIU_WRAPPER" ] || [ ! -x "$CRIU_PREFIX/usr/sbin/criu" ]; then
	log "CRIU 4.2 is not installed at $CRIU_PREFIX: running test/hosts/install-criu.sh"
	bash "$top/test/hosts/install-criu.sh" >&2
	[ -x "$CRIU_WRAPPER" ] && [ -x "$CRIU_PREFIX/usr/sbin/criu" ] ||
		die "test/hosts/install-criu.sh did not leave $CRIU_WRAPPER and $CRIU_PREFIX"
fi

mkdir -p "$RM_VM_DIR" "$RM_VM_DIR/cache/debs" "$RM_VM_DIR/cache/kernel"
# One build at a time (start.sh calls this script too).
exec 9>"$RM_VM_DIR/.build.lock"
flock -w 900 9 || die "another build holds $RM_VM_DIR/.build.lock"

# --- Keys (made once; part of the image's inputs) ---------------------------------------
mkdir -p -m 0700 "$RM_VM_KEYS_DIR"
for k in id_ed25519 host_vm1_ed25519 host_vm2_ed25519; do
	if [ ! -s "$RM_VM_KEYS_DIR/$k" ] || [ ! -s "$RM_VM_KEYS_DIR/$k.pub" ]; then
		rm -f "$RM_VM_KEYS_DIR/$k" "$RM_VM_KEYS_DIR/$k.pub"
		ssh-keygen -q -t ed25519 -N '' -C "runc-migrate-vm-${k%_ed25519}" -f "$RM_VM_KEYS_DIR/$k"
		log "generated $RM_VM_KEYS_DIR/$k"
	fi
done

# --- The kernel package: the current linux-image-*-amd64 that linux-image-amd64 names --
resolve_kernel() {
	KPKG=${RM_VM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)}
	KVER=
	[ -n "$KPKG" ] || return 1
	KVER=$(apt-cache policy "$KPKG" 2>/dev/null | sed -n 's/^ *Candidate: //p')
	[ -n "$KVER" ] && [ "$KVER" != "(none)" ]
}
if ! resolve_kernel; then
	log "apt does not know linux-image-amd64 yet: apt-get update"
	apt-get update -qq >&2 || log "warning: apt-get update reported errors"
	resolve_kernel || die "cannot resolve Debian's linux-image-amd64 to a kernel package (is deb.debian.org in apt's sources?)"
fi

# --- Cache key ----------------------------------------------------------------------------
inputs() {
	echo "script $(sha256sum <"$here/build-image.sh" | cut -d' ' -f1)"
	echo "addresses vm1=$RM_VM1_ADDR vm2=$RM_VM2_ADDR" # baked into the guests' /etc/hosts, known_hosts
	echo "suite $SUITE mirror $MIRROR"
	echo "packages ${PACKAGES[*]}"
	echo "initrd-modules ${INITRD_MODULES[*]}"
	echo "root-modules ${ROOT_MODULES[*]}"
	echo "kernel $KPKG $KVER"
	echo "node $("$NODE" --version) $(stat -c '%s %Y' "$NODE")"
	echo "criu $("$CRIU_WRAPPER" --version | tr '\n' ' ') $(stat -c '%s %Y' "$CRIU_PREFIX/usr/sbin/criu") $(sha256sum <"$CRIU_WRAPPER" | cut -d' ' -f1)"
	echo "busybox $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || /bin/busybox | head -n1)"
	for k in id_ed25519 host_vm1_ed25519 host_vm2_ed25519; do echo "key $k $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/$k.pub")"; done
}
INPUTS=$(inputs)
HASH=$(printf '%s\n' "$INPUTS" | sha256sum | cut -d' ' -f1)
IMG=$RM_VM_IMAGE_DIR
if [ "${RM_VM_REBUILD:-0}" != 1 ] && [ -f "$IMG/inputs.sha256" ] &&
	[ "$(cat "$IMG/inputs.sha256")" = "$HASH" ] &&
	[ -s "$IMG/rootfs.ext4" ] && [ -s "$IMG/vmlinux" ] && [ -s "$IMG/initrd.img" ]; then
	log "image is up to date ($IMG, kernel $(cat "$IMG/kernel.release"), inputs ${HASH:0:12})"
	exit 0
fi
log "building the image (inputs ${HASH:0:12}; kernel $KPKG $KVER)"
t0=$(date +%s%N)
elapsed() { local d=$((($(date +%s%N) - t0) / 100000000)); echo "$((d / 10)).$((d % 10)) s"; }

# --- Work area (unmounted and removed on every exit) ------------------------------------
BUILD=$RM_VM_DIR/build
cleanup_build() {
	[ -d "$BUILD" ] || return 0
	# debootstrap mounts proc/sys (and sometimes /dev) in the target; never rm through them.
	local m
	awk -v b="$BUILD/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	if awk -v b="$BUILD/" 'index($2, b) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "build-image: warning: mounts remain under $BUILD; not removing it" >&2
		return 0
	fi
	rm -rf --one-file-system "$BUILD"
}
trap cleanup_build EXIT
cleanup_build
mkdir -p "$BUILD/out"
ROOT=$BUILD/root

# --- Kernel: download, unpack, uncompressed vmlinux (in the background) ------------------
KDEB_DIR=$RM_VM_DIR/cache/kernel
# bzImage -> the ELF vmlinux inside it (boot protocol >= 2.08: payload_offset/length in the
# setup header). QEMU boots that ELF directly through its PVH entry note.
extract_vmlinux() {
	local bz=$1 out=$2 sects off len start magic
	[ "$(dd if="$bz" bs=1 skip=$((0x202)) count=4 status=none)" = HdrS ] || { echo "not a bzImage: $bz" >&2; return 1; }
	sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
	[ "$sects" = 0 ] && sects=4
	off=$(od -An -tu4 -j $((0x248)) -N4 "$bz" | tr -d ' ')
	len=$(od -An -tu4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
	start=$(((sects + 1) * 512 + off))
	magic=$(od -An -tx1 -j "$start" -N4 "$bz" | tr -d ' ')
	case $magic in
	fd377a58) dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$len" bs=1M status=none | xz -dc --single-stream >"$out" ;;
	1f8b*) dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$len" bs=1M status=none | gzip -dc >"$out" 2>/dev/null || true ;;
	28b52ffd) dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$len" bs=1M status=none | zstd -dcq >"$out" 2>/dev/null || true ;;
	*) echo "unknown kernel payload compression (magic $magic)" >&2; return 1 ;;
	esac
	[ "$(od -An -tx1 -N4 "$out" | tr -d ' ')" = 7f454c46 ] || { echo "the kernel payload is not an ELF file" >&2; return 1; }
}
prepare_kernel() {
	local deb
	deb=$(ls "$KDEB_DIR/${KPKG}_"*"_amd64.deb" 2>/dev/null | grep -F "_$(echo "$KVER" | sed 's/:/%3a/')_" | head -n1 || true)
	if [ -z "$deb" ]; then
		rm -f "$KDEB_DIR"/*.deb
		(cd "$KDEB_DIR" && apt-get download -qq "$KPKG=$KVER" 2>&1 | grep -v 'unsandboxed' >&2) || true
		deb=$(ls "$KDEB_DIR/${KPKG}_"*"_amd64.deb" 2>/dev/null | head -n1 || true)
		if [ -z "$deb" ]; then
			echo "apt-get download $KPKG=$KVER failed; refreshing apt's lists" >&2
			apt-get update -qq >&2 || true
			(cd "$KDEB_DIR" && apt-get download -qq "$KPKG=$KVER" 2>&1 | grep -v 'unsandboxed' >&2) || true
			deb=$(ls "$KDEB_DIR/${KPKG}_"*"_amd64.deb" 2>/dev/null | head -n1 || true)
		fi
		[ -n "$deb" ] || { echo "cannot download $KPKG $KVER (apt-get download)" >&2; return 1; }
	fi
	mkdir -p "$BUILD/kernel"
	dpkg-deb -x "$deb" "$BUILD/kernel"
	local rel
	rel=$(ls "$BUILD/kernel/lib/modules")
	[ -n "$rel" ] && [ -f "$BUILD/kernel/boot/vmlinuz-$rel" ] || { echo "unexpected layout in $deb" >&2; return 1; }
	grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$BUILD/kernel/boot/config-$rel" ||
		{ echo "$KPKG has no CONFIG_MEM_SOFT_DIRTY: pre-dump could not be tested with it" >&2; return 1; }
	depmod -b "$BUILD/kernel" "$rel"
	cp "$BUILD/kernel/boot/vmlinuz-$rel" "$BUILD/out/vmlinuz"
	extract_vmlinux "$BUILD/out/vmlinuz" "$BUILD/out/vmlinux"
	echo "$rel" >"$BUILD/out/kernel.release"
}
prepare_kernel >"$BUILD/kernel.log" 2>&1 &
kernel_job=$!

# --- Root filesystem --------------------------------------------------------------------
log "debootstrap $SUITE (minbase + ${#PACKAGES[@]} packages; log in $BUILD/debootstrap.log)"
include=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --include="$include" --cache-dir="$RM_VM_DIR/cache/debs" \
	"$SUITE" "$ROOT" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1; then
	tail -n 30 "$BUILD/debootstrap.log" >&2
	[ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
	die "debootstrap failed (mirror $MIRROR; set RM_VM_MIRROR to use another)"
fi
log "debootstrap done after $(elapsed)"

if ! wait "$kernel_job"; then
	cat "$BUILD/kernel.log" >&2
	die "preparing the kernel failed"
fi
KREL=$(cat "$BUILD/out/kernel.release")
log "kernel $KREL unpacked"

# Modules: a name -> file map of the unpacked kernel, then each wanted module with its
# dependencies, dependencies first.
KMOD_DIR=$BUILD/kernel/lib/modules/$KREL
declare -A MOD_FILE MOD_DEPS
while IFS= read -r line; do
	file=${line%%:*}
	name=$(basename "$file"); name=${name%%.ko*}; name=${name//-/_}
	MOD_FILE[$name]=$file
	MOD_DEPS[$name]=${line#*:}
done <"$KMOD_DIR/modules.dep"
declare -A SEEN
ORDER=()
visit() {
	local name=${1//-/_} d dn
	[ -n "${SEEN[$name]:-}" ] && return 0
	SEEN[$name]=1
	for d in ${MOD_DEPS[$name]}; do
		dn=$(basename "$d"); dn=${dn%%.ko*}
		visit "$dn"
	done
	ORDER+=("$name")
}
modules_closure() { # names... -> ORDER (files relative to the modules dir)
	SEEN=(); ORDER=()
	local m
	for m in "$@"; do
		m=${m//-/_}
		if [ -z "${MOD_FILE[$m]:-}" ]; then
			grep -q "/$m.ko" "$KMOD_DIR/modules.builtin" 2>/dev/null ||
				grep -q "/${m//_/-}.ko" "$KMOD_DIR/modules.builtin" 2>/dev/null ||
				die "kernel module $m is neither a module nor built into $KREL"
			continue # built in
		fi
		visit "$m"
	done
}

# Root filesystem: modules + depmod, so that modprobe (kmod) works, also on demand.
modules_closure "${ROOT_MODULES[@]}"
for m in "${ORDER[@]}"; do
	f=${MOD_FILE[$m]}
	mkdir -p "$ROOT/lib/modules/$KREL/$(dirname "$f")"
	cp "$KMOD_DIR/$f" "$ROOT/lib/modules/$KREL/$f"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[ -f "$KMOD_DIR/$f" ] && cp "$KMOD_DIR/$f" "$ROOT/lib/modules/$KREL/"
done
depmod -b "$ROOT" "$KREL"
log "${#ORDER[@]} kernel modules installed in the image"

# The host's node (same libc: Debian 12) and CRIU 4.2 (its own libc, behind the wrapper).
cp "$NODE" "$ROOT/usr/bin/node"
mkdir -p "$ROOT$(dirname "$CRIU_PREFIX")" "$ROOT$(dirname "$CRIU_WRAPPER")"
cp -a "$CRIU_PREFIX" "$ROOT$CRIU_PREFIX"
cp "$CRIU_WRAPPER" "$ROOT$CRIU_WRAPPER"
chmod 0755 "$ROOT$CRIU_WRAPPER"

# SSH: one host key per VM (the init picks by hostname), root logs in with the generated key,
# and each VM knows the other's host key under its link address and name.
rm -f "$ROOT"/etc/ssh/ssh_host_*
for vm in vm1 vm2; do
	install -d -m 0700 "$ROOT/etc/ssh/rm-vm/$vm"
	install -m 0600 "$RM_VM_KEYS_DIR/host_${vm}_ed25519" "$ROOT/etc/ssh/rm-vm/$vm/ssh_host_ed25519_key"
	install -m 0644 "$RM_VM_KEYS_DIR/host_${vm}_ed25519.pub" "$ROOT/etc/ssh/rm-vm/$vm/ssh_host_ed25519_key.pub"
done
cat >"$ROOT/etc/ssh/sshd_config.d/rm-vm.conf" <<'CONF'
# runc-migrate test VM (test/vm/build-image.sh). First value wins: these override sshd_config.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 30
CONF
grep -q '^Subsystem' "$ROOT/etc/ssh/sshd_config" ||
	echo 'Subsystem sftp /usr/lib/openssh/sftp-server' >>"$ROOT/etc/ssh/sshd_config"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$RM_VM_KEYS_DIR/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
install -m 0600 "$RM_VM_KEYS_DIR/id_ed25519" "$ROOT/root/.ssh/id_ed25519"
install -m 0644 "$RM_VM_KEYS_DIR/id_ed25519.pub" "$ROOT/root/.ssh/id_ed25519.pub"
{
	echo "$RM_VM1_ADDR $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm1_ed25519.pub")"
	echo "vm1 $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm1_ed25519.pub")"
	echo "$RM_VM2_ADDR $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm2_ed25519.pub")"
	echo "vm2 $(cut -d' ' -f1,2 "$RM_VM_KEYS_DIR/host_vm2_ed25519.pub")"
} >"$ROOT/root/.ssh/known_hosts"
chmod 0644 "$ROOT/root/.ssh/known_hosts"

# Names, resolver (QEMU user networking's DNS), a quiet root shell.
echo vm >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<HOSTS
127.0.0.1 localhost
$RM_VM1_ADDR vm1
$RM_VM2_ADDR vm2
HOSTS
echo 'nameserver 10.0.2.3' >"$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/project"

# PID 1: a busybox script that prepares the system, then hands over to busybox init
# (which reaps orphans, e.g. containers that runc or criu restore leave to it, and
# respawns sshd).
mkdir -p "$ROOT/etc/rm-vm"
cat >"$ROOT/sbin/init" <<'INIT'
#!/bin/busybox sh
# runc-migrate test VM init (written by test/vm/build-image.sh). Kernel command line:
#   rm.host=NAME         hostname; also picks /etc/ssh/rm-vm/NAME's host key
#   rm.link=ADDR/PREFIX  address on the VM-to-VM link (NIC with MAC 52:54:00:77:02:*) -> eth0
#   rm.mgmt=ADDR/PREFIX  address on the management NIC (MAC 52:54:00:77:01:*) -> mgmt0
#   rm.gw=ADDR           default route (via the management NIC)
#   rm.9p=TAG:PATH       mount a virtio-9p share (cache=loose)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
bb=/bin/busybox
say() { echo "rm-init [$($bb cut -d' ' -f1 /proc/uptime)]: $*"; }

$bb mount -t proc -o nosuid,nodev,noexec proc /proc
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
$bb grep -q '^[^ ]* /dev ' /proc/mounts || $bb mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm /dev/mqueue
$bb mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
$bb mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
$bb mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue 2>/dev/null || true
[ -e /dev/fd ] || $bb ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || $bb ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || $bb ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || $bb ln -s /proc/self/fd/2 /dev/stderr
$bb mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
$bb mkdir -p /run/sshd /run/lock
$bb mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup
$bb mount -o remount,rw,noatime / 2>/dev/null || true
$bb rm -f /var/run/*.pid 2>/dev/null || true

host=vm link= mgmt= gw= share=
for arg in $($bb cat /proc/cmdline); do
	case $arg in
	rm.host=*) host=${arg#*=} ;;
	rm.link=*) link=${arg#*=} ;;
	rm.mgmt=*) mgmt=${arg#*=} ;;
	rm.gw=*) gw=${arg#*=} ;;
	rm.9p=*) share=${arg#*=} ;;
	esac
done
$bb hostname "$host"
echo "$host" >/etc/hostname

# CRIU's lazy pages ask for 4 MiB pipes.
echo 4194304 >/proc/sys/fs/pipe-max-size
echo 1 >/proc/sys/net/ipv4/conf/all/arp_notify 2>/dev/null || true

say "loading modules"
modprobe -a -q $($bb cat /etc/rm-vm/modules) || say "warning: some modules did not load"

# Interfaces by MAC address: the link NIC becomes eth0, the management NIC mgmt0.
$bb ip link set lo up
for d in /sys/class/net/*; do
	n=${d##*/}
	case $($bb cat "$d/address") in
	52:54:00:77:02:*) $bb ip link set "$n" name rmlink ;;
	52:54:00:77:01:*) $bb ip link set "$n" name rmmgmt ;;
	esac
done
if [ -e /sys/class/net/rmlink ]; then
	ip link set rmlink name eth0
	ip link set eth0 up
	[ -n "$link" ] && ip addr add "$link" dev eth0
else
	say "warning: no link NIC (MAC 52:54:00:77:02:*)"
fi
if [ -e /sys/class/net/rmmgmt ]; then
	ip link set rmmgmt name mgmt0
	ip link set mgmt0 up
	[ -n "$mgmt" ] && ip addr add "$mgmt" dev mgmt0
	[ -n "$gw" ] && ip route add default via "$gw" dev mgmt0
else
	say "warning: no management NIC (MAC 52:54:00:77:01:*)"
fi

if [ -n "$share" ]; then
	$bb mkdir -p "${share#*:}"
	$bb mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=262144 "${share%%:*}" "${share#*:}" ||
		say "warning: cannot mount 9p share ${share%%:*} at ${share#*:}"
fi

# This VM's host key.
if [ -f "/etc/ssh/rm-vm/$host/ssh_host_ed25519_key" ]; then
	$bb ln -sf "/etc/ssh/rm-vm/$host/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
	$bb ln -sf "/etc/ssh/rm-vm/$host/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
elif [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
	ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
say "starting busybox init (sshd)"
exec $bb init
INIT
chmod 0755 "$ROOT/sbin/init"
cat >"$ROOT/etc/inittab" <<'TAB'
# busybox init (runc-migrate test VM)
::respawn:/usr/sbin/sshd -D -e
::ctrlaltdel:/bin/busybox poweroff
::shutdown:/bin/busybox sh -c 'echo rm-init: shutting down; /bin/busybox umount -a -r'
TAB
printf '%s\n' "${ROOT_MODULES[@]}" >"$ROOT/etc/rm-vm/modules"
# `poweroff`/`reboot` inside the VM: busybox's (signals busybox init).
for a in poweroff reboot halt; do
	[ -e "$ROOT/sbin/$a" ] || ln -s /bin/busybox "$ROOT/sbin/$a"
done

# Smaller image: no package lists, caches, docs.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/lib/apt/lists/* \
	"$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log \
	"$ROOT"/debootstrap
mkdir -p "$ROOT/var/lib/apt/lists/partial"

# --- initramfs: static busybox, the modules for /dev/vda, an init that switch_roots ------
IRD=$BUILD/initrd
mkdir -p "$IRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$IRD/bin/busybox"
for a in sh mount umount insmod sleep switch_root mkdir cat echo poweroff; do ln -s busybox "$IRD/bin/$a"; done
modules_closure "${INITRD_MODULES[@]}"
: >"$IRD/lib/modules/load.order"
for m in "${ORDER[@]}"; do
	f=${MOD_FILE[$m]}
	cp "$KMOD_DIR/$f" "$IRD/lib/modules/$(basename "$f")"
	basename "$f" >>"$IRD/lib/modules/load.order"
done
cat >"$IRD/init" <<'RDINIT'
#!/bin/busybox sh
# initramfs of the runc-migrate test VM: load virtio + ext4, mount /dev/vda, switch_root.
export PATH=/bin
die() { echo "initramfs: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
	insmod "/lib/modules/$m" 2>/dev/null || [ -d "/sys/module/${m%.ko}" ] || echo "initramfs: insmod $m failed"
done </lib/modules/load.order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -b /dev/vda ] || die "no /dev/vda"
mount -t ext4 -o rw,noatime /dev/vda /newroot || die "cannot mount /dev/vda"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
RDINIT
chmod 0755 "$IRD/init"
(cd "$IRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$BUILD/out/initrd.img"

# --- Pack the root filesystem ------------------------------------------------------------
used_mb=$(du -sm --apparent-size "$ROOT" | cut -f1)
size_mb=$((used_mb + ${RM_VM_DISK_FREE_MB:-2048}))
truncate -s "${size_mb}M" "$BUILD/out/rootfs.ext4"
# No journal: the VMs run on throwaway overlays (snapshot=on).
mkfs.ext4 -q -F -L rm-vm-root -O ^has_journal -E root_owner=0:0 -d "$ROOT" "$BUILD/out/rootfs.ext4" "${size_mb}M" ||
	die "mkfs.ext4 -d failed"
printf '%s\n' "$INPUTS" >"$BUILD/out/inputs.txt"
echo "$HASH" >"$BUILD/out/inputs.sha256"

# --- Publish: replace the image directory (running VMs keep their open files) -----------
rm -rf "$IMG.old"
[ -d "$IMG" ] && mv "$IMG" "$IMG.old"
mv "$BUILD/out" "$IMG"
rm -rf "$IMG.old"
log "image ready in $(elapsed): $IMG (rootfs ${used_mb} MB used of ${size_mb} MB, kernel $KREL)"
