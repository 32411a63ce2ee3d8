#!/usr/bin/env bash
# Builds the local test hosts: network namespaces joined by a bridge, each "host" with
# its own address, runc state root and directories, and an sshd on the destination.
#
#   rm-lan     holds the bridge br0
#   rm-src     10.77.0.1   the source: where `migrate` and the container start; sshd (failover --source)
#   rm-dst     10.77.0.2   the destination: sshd (own host key, own mount namespace)
#   rm-client  10.77.0.3   TCP peers of the container
#   rm-jump    10.77.0.4   a bastion (sshd) for ProxyJump
#
# Idempotent: running it again repairs what is missing and leaves the rest.
# Prints the settings as shell variables (source-able) on stdout when done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$RM_HOSTS_DIR

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (it creates network namespaces)" >&2; exit 1; }
for t in ip nsenter unshare sshd ssh-keygen runc criu busybox; do
	command -v "$t" >/dev/null || { echo "setup.sh: '$t' is missing: run test/hosts/install-deps.sh" >&2; exit 1; }
done

mkdir -p "$D"/{keys,src/runc,src/bundles,src/sshd,dst/runc,dst/bundles,dst/run,dst/home,dst/etc,jump}
chmod 0755 "$D" "$D/dst" "$D/dst/etc"
chmod 0700 "$D/keys" "$D/dst/home"

# --- network -------------------------------------------------------------------------
ns() { [ -e "/run/netns/$1" ] || ip netns add "$1"; ip -n "$1" link set lo up; }
ns "$RM_NS_LAN"; ns "$RM_NS_SRC"; ns "$RM_NS_DST"; ns "$RM_NS_CLIENT"; ns "$RM_NS_JUMP"
ip -n "$RM_NS_LAN" link show "$RM_BRIDGE" >/dev/null 2>&1 || ip -n "$RM_NS_LAN" link add "$RM_BRIDGE" type bridge
ip -n "$RM_NS_LAN" link set "$RM_BRIDGE" up

plug() { # plug NS ADDR [ADDR6]: a veth from NS (eth0) to the bridge
	local n=$1 addr=$2 addr6=${3:-} peer="v-$1"
	if ! ip -n "$n" link show eth0 >/dev/null 2>&1; then
		ip -n "$RM_NS_LAN" link del "$peer" >/dev/null 2>&1 || true
		ip link add "$peer" netns "$RM_NS_LAN" type veth peer name eth0 netns "$n"
	fi
	ip -n "$RM_NS_LAN" link set "$peer" master "$RM_BRIDGE" up
	ip -n "$n" link set eth0 up
	ip -n "$n" addr replace "$addr/24" dev eth0
	[ -z "$addr6" ] || ip -n "$n" addr replace "$addr6/64" dev eth0 nodad
}
plug "$RM_NS_SRC" "$RM_SRC_ADDR" "$RM_SRC_ADDR6"
plug "$RM_NS_DST" "$RM_DST_ADDR" "$RM_DST_ADDR6"
plug "$RM_NS_CLIENT" "$RM_CLIENT_ADDR" "$RM_CLIENT_ADDR6"
plug "$RM_NS_JUMP" "$RM_JUMP_ADDR"
# The service address lives on whichever host runs the service; peers find it by ARP.
for n in "$RM_NS_SRC" "$RM_NS_DST" "$RM_NS_CLIENT"; do
	ip -n "$n" route replace "${RM_SERVICE_ADDR%.*}.0/24" dev eth0
done
# A device named eth0.$RM_VLAN_ID, as VLAN devices are on operators' hosts, with its own
# subnet and service subnet. This kernel has no 802.1Q support (CONFIG_VLAN_8021Q unset):
# it is a macvlan device on eth0 (its own MAC on the same link). What matters to the tool is
# the dot in the name (a dotted sysctl key would take it apart).
vdev=eth0.$RM_VLAN_ID
i=1
for n in "$RM_NS_SRC" "$RM_NS_DST" "$RM_NS_CLIENT"; do
	ip -n "$n" link show "$vdev" >/dev/null 2>&1 || ip -n "$n" link add link eth0 name "$vdev" type macvlan mode bridge
	ip -n "$n" link set "$vdev" up
	ip -n "$n" addr replace "$RM_VLAN_PREFIX.$i/24" dev "$vdev"
	ip -n "$n" route replace "${RM_VLAN_SERVICE_ADDR%.*}.0/24" dev "$vdev"
	i=$((i + 1))
done

# --- keys ----------------------------------------------------------------------------
[ -f "$D/keys/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C runc-migrate-test -f "$D/keys/id_ed25519"
[ -f "$D/dst/etc/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C rm-dst -f "$D/dst/etc/ssh_host_ed25519_key"
# A second sshd of the destination with an RSA host key only (port $RM_SSH_RSA_PORT): OpenSSH
# refuses ssh-rsa (SHA-1) signatures, so a client must ask for rsa-sha2-256/512.
[ -f "$D/dst/etc/ssh_host_rsa_key" ] || ssh-keygen -q -t rsa -b 2048 -N '' -C rm-dst-rsa -f "$D/dst/etc/ssh_host_rsa_key"
# One authorized_keys for root and the sudo user; sshd reads it as the user logging in.
install -m 0644 "$D/keys/id_ed25519.pub" "$D/dst/etc/authorized_keys"
echo "$RM_DST_ADDR $(cut -d' ' -f1,2 "$D/dst/etc/ssh_host_ed25519_key.pub")" > "$D/keys/known_hosts"
echo "[$RM_DST_ADDR]:$RM_SSH_RSA_PORT $(cut -d' ' -f1,2 "$D/dst/etc/ssh_host_rsa_key.pub")" >> "$D/keys/known_hosts"
echo "$RM_DST_ADDR6 $(cut -d' ' -f1,2 "$D/dst/etc/ssh_host_ed25519_key.pub")" >> "$D/keys/known_hosts"
[ -f "$D/jump/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C rm-jump -f "$D/jump/ssh_host_ed25519_key"
echo "$RM_JUMP_ADDR $(cut -d' ' -f1,2 "$D/jump/ssh_host_ed25519_key.pub")" >> "$D/keys/known_hosts"
# The source answers SSH too (failover --source asks it whether the container still runs there).
[ -f "$D/src/sshd/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C rm-src -f "$D/src/sshd/ssh_host_ed25519_key"
echo "$RM_SRC_ADDR $(cut -d' ' -f1,2 "$D/src/sshd/ssh_host_ed25519_key.pub")" >> "$D/keys/known_hosts"
# A quiet HOME for remote commands: no rc files that slow every command down.
: > "$D/dst/home/.hushlogin"

cat > "$D/dst/etc/sshd_config" <<CFG
ListenAddress $RM_DST_ADDR:$RM_SSH_PORT
ListenAddress [$RM_DST_ADDR6]:$RM_SSH_PORT
HostKey $D/dst/etc/ssh_host_ed25519_key
PidFile $D/dst/run/sshd.pid
PermitRootLogin prohibit-password
AuthorizedKeysFile $D/dst/etc/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
CFG

sed -e "s/^ListenAddress .*/ListenAddress $RM_DST_ADDR:$RM_SSH_RSA_PORT/" -e '/^ListenAddress \[/d' \
	-e "s|^HostKey .*|HostKey $D/dst/etc/ssh_host_rsa_key|" \
	-e "s|^PidFile .*|PidFile $D/dst/run/sshd-rsa.pid|" "$D/dst/etc/sshd_config" > "$D/dst/etc/sshd_rsa_config"

# The bastion: forwards connections only (root's key, no shell needed).
sed -e "s/^ListenAddress .*/ListenAddress $RM_JUMP_ADDR:$RM_SSH_PORT/" -e '/^ListenAddress \[/d' \
	-e "s|^HostKey .*|HostKey $D/jump/ssh_host_ed25519_key|" \
	-e "s|^PidFile .*|PidFile $D/jump/sshd.pid|" "$D/dst/etc/sshd_config" > "$D/jump/sshd_config"
echo "AllowTcpForwarding yes" >> "$D/jump/sshd_config"
sed -e "s/^ListenAddress .*/ListenAddress $RM_SRC_ADDR:$RM_SSH_PORT/" -e '/^ListenAddress \[/d' \
	-e "s|^HostKey .*|HostKey $D/src/sshd/ssh_host_ed25519_key|" \
	-e "s|^PidFile .*|PidFile $D/src/sshd/sshd.pid|" "$D/dst/etc/sshd_config" > "$D/src/sshd/sshd_config"

# A non-root account on the destination for --sudo (passwordless sudo, the same key).
if ! id "$RM_SUDO_USER" >/dev/null 2>&1; then
	useradd --create-home --shell /bin/sh "$RM_SUDO_USER"
	# "*": no password, but not "locked" (sshd without PAM refuses locked accounts).
	usermod -p "*" "$RM_SUDO_USER"
fi
echo "$RM_SUDO_USER ALL=(root) NOPASSWD: ALL" > "/etc/sudoers.d/$RM_SUDO_USER"
chmod 0440 "/etc/sudoers.d/$RM_SUDO_USER"

# --- sshd on the destination, in its own mount namespace -----------------------------
sshd_up() { nsenter --net="/run/netns/$RM_NS_DST" timeout 1 bash -c "exec 3<>/dev/tcp/$RM_DST_ADDR/$RM_SSH_PORT 4<>/dev/tcp/$RM_DST_ADDR6/$RM_SSH_PORT" 2>/dev/null; }
if ! sshd_up; then
	# One listening on IPv4 only (set up before IPv6 was added) is replaced.
	[ -f "$D/dst/run/sshd.pid" ] && kill "$(cat "$D/dst/run/sshd.pid")" 2>/dev/null && sleep 0.3
	rm -f "$D/dst/run/sshd.pid"
	# The destination's /run is a tmpfs, as a real host's is: CRIU keeps its kernel probe
	# (criu.kdat) only on a tmpfs, and probes again on every run elsewhere.
	if ! mountpoint -q "$D/dst/run"; then
		[ -f "$D/dst/run/sshd-rsa.pid" ] && kill "$(cat "$D/dst/run/sshd-rsa.pid")" 2>/dev/null && sleep 0.3
		mount -t tmpfs -o mode=0755,size=64m rm-dst-run "$D/dst/run"
	fi
	nsenter --net="/run/netns/$RM_NS_DST" unshare --mount --propagation slave sh -c "
		mount --bind '$D/dst/run' /run && mkdir -p -m0755 /run/sshd &&
		mount --bind '$D/dst/home' /root &&
		exec /usr/sbin/sshd -f '$D/dst/etc/sshd_config' -E '$D/dst/sshd.log'"
	for _ in $(seq 50); do sshd_up && break; sleep 0.1; done
	sshd_up || { echo "setup.sh: sshd on $RM_NS_DST did not start; see $D/dst/sshd.log" >&2; exit 1; }
fi
src_up() { nsenter --net="/run/netns/$RM_NS_SRC" timeout 1 bash -c "exec 3<>/dev/tcp/$RM_SRC_ADDR/$RM_SSH_PORT" 2>/dev/null; }
if ! src_up; then
	mkdir -p -m 0755 /run/sshd
	nsenter --net="/run/netns/$RM_NS_SRC" /usr/sbin/sshd -f "$D/src/sshd/sshd_config" -E "$D/src/sshd/sshd.log"
	for _ in $(seq 50); do src_up && break; sleep 0.1; done
	src_up || { echo "setup.sh: the source's sshd on $RM_NS_SRC did not start; see $D/src/sshd/sshd.log" >&2; exit 1; }
fi
jump_up() { nsenter --net="/run/netns/$RM_NS_JUMP" timeout 1 bash -c "exec 3<>/dev/tcp/$RM_JUMP_ADDR/$RM_SSH_PORT" 2>/dev/null; }
if ! jump_up; then
	mkdir -p -m 0755 /run/sshd # sshd's privilege separation directory
	nsenter --net="/run/netns/$RM_NS_JUMP" /usr/sbin/sshd -f "$D/jump/sshd_config" -E "$D/jump/sshd.log"
	for _ in $(seq 50); do jump_up && break; sleep 0.1; done
	jump_up || { echo "setup.sh: the bastion's sshd on $RM_NS_JUMP did not start; see $D/jump/sshd.log" >&2; exit 1; }
fi
# The RSA-only sshd shares the first one's mount namespace: the same destination host.
rsa_up() { nsenter --net="/run/netns/$RM_NS_DST" timeout 1 bash -c "exec 3<>/dev/tcp/$RM_DST_ADDR/$RM_SSH_RSA_PORT" 2>/dev/null; }
if ! rsa_up; then
	nsenter --net="/run/netns/$RM_NS_DST" --mount="/proc/$(cat "$D/dst/run/sshd.pid")/ns/mnt" \
		/usr/sbin/sshd -f "$D/dst/etc/sshd_rsa_config" -E "$D/dst/sshd-rsa.log"
	for _ in $(seq 50); do rsa_up && break; sleep 0.1; done
	rsa_up || { echo "setup.sh: the RSA-only sshd on $RM_NS_DST did not start; see $D/dst/sshd-rsa.log" >&2; exit 1; }
fi

cat <<VARS
RM_HOSTS_DIR=$D
RM_SSH_KEY=$D/keys/id_ed25519
RM_KNOWN_HOSTS=$D/keys/known_hosts
RM_SRC_RUNC_ROOT=$D/src/runc
RM_DST_RUNC_ROOT=$D/dst/runc
RM_SRC_BUNDLES=$D/src/bundles
RM_DST_BUNDLES=$D/dst/bundles
VARS
