#!/usr/bin/env bash
# Installs the Debian packages the VM test bed (test/vm/*.sh) needs on a Debian 12 host,
# as root, with no questions. Does nothing when everything is already there.
# CRIU 4.2 itself is installed by test/hosts/install-criu.sh (build-image.sh runs it when
# its private install is missing).
set -euo pipefail
. "$(cd "$(dirname "$0")/../hosts" && pwd)/apt.sh"
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
	gcc libc6-dev     # the static test workloads (examples/memwriter.c, examples/filewriter.c)
)
apt_install_missing "${PKGS[@]}"
echo "install-deps: VM packages present"
