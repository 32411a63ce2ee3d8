#!/usr/bin/env bash
# Installs the Debian packages the VM test bed (test/vm/*.sh) needs on a Debian 12 host,
# as root, with no questions. Does nothing when everything is already there.
# CRIU 4.2 itself is installed by test/hosts/install-criu.sh (build-image.sh runs it when
# its private install is missing).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (it installs Debian packages)" >&2; exit 1; }

# One package per line, with why it is needed.
PKGS=(
	qemu-system-x86   # qemu-system-x86_64 (TCG)
	debootstrap       # the guest's root filesystem
	busybox-static    # the initramfs and the guest's init
	kmod              # depmod -b for the guest's module tree
	e2fsprogs         # mkfs.ext4 -d
	cpio              # the initramfs archive
	openssh-client    # ssh, ssh-keygen
	zstd xz-utils gzip # kernel payload decompression
	iproute2          # ss (port checks in start.sh)
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all VM packages present"
	exit 0
fi
echo "install-deps: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A source that cannot be reached (non-Debian repositories) must not stop us: apt-get
# update still refreshes the reachable ones. The install below fails loudly if a package
# really cannot be found.
apt-get update -qq || echo "install-deps: warning: apt-get update reported errors (continuing)" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		{ echo "install-deps: $p did not install" >&2; exit 1; }
done
echo "install-deps: done"
