#!/usr/bin/env bash
# The fresh-machine check: runs the project's own dependency installation in a clean
# Debian 12 root, the way a new machine would, and then CRIU there.
#
#   1. a minimal Debian 12 root (debootstrap --variant=minbase, plus what every machine of
#      this project's kind has before the project touches it: make, ca-certificates, and
#      the host's Node.js and npm, bind-mounted read-only); built once and cached as a
#      tarball keyed on its inputs, unpacked anew for every run;
#   2. a copy of this work tree (tracked and new files; no node_modules, no dist) at /project;
#   3. in a chroot with /proc, /sys and /dev mounted: `make deps` (test/hosts/install-deps.sh:
#      Debian packages, CRIU, npm ci), then `criu --version` and `criu check`;
#   4. with FRESH_DEMO=1 (the default), `make demo` as well: two test hosts, a counter
#      migrated between them, all inside the fresh root.
#
# Exit status 0 when every step passed. Run as root; no questions asked. The root and its
# mounts are removed on every exit path (mounts are checked gone before anything is deleted).
# Settings: FRESH_DIR (default /var/tmp/runc-migrate-fresh), FRESH_REBUILD=1 (rebuild the
# cached root), FRESH_DEMO=0 (stop after criu check), FRESH_KEEP=1 (keep the root to look at).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

FRESH_DIR=${FRESH_DIR:-/var/tmp/runc-migrate-fresh}
FRESH_DEMO=${FRESH_DEMO:-1}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Beyond minbase, what a new machine of this kind has before anything of ours runs.
INCLUDE=make,ca-certificates

log() { echo "fresh: $*" >&2; }
die() { echo "fresh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it)"
for c in debootstrap chroot zstd tar findmnt mountpoint sha256sum; do
	command -v "$c" >/dev/null 2>&1 || die "$c is missing: run test/vm/install-deps.sh (it installs debootstrap and zstd)"
done
NODE=$(command -v node) || die "node is missing"
NPM_DIR=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
[ -f "$NPM_DIR/package.json" ] || die "cannot find npm's own directory (from $(command -v npm))"
NPM_GLOBALRC=$(npm config get globalconfig 2>/dev/null || true)

# --- The cached root -------------------------------------------------------------------
key=$(printf '%s\n' "$SUITE" minbase "$INCLUDE" "$MIRROR" | sha256sum | cut -c1-16)
cache=$FRESH_DIR/debian-$SUITE-minbase-$key.tar.zst
mkdir -p "$FRESH_DIR"
exec 9>"$FRESH_DIR/.lock"
flock -w 1200 9 || die "another fresh-machine check holds $FRESH_DIR/.lock"
if [ -n "${FRESH_REBUILD:-}" ] || [ ! -s "$cache" ]; then
	log "building the Debian 12 minbase root (debootstrap; cached as $cache)"
	b=$(mktemp -d "$FRESH_DIR/build.XXXXXX")
	t0=$SECONDS
	debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$b/root" "$MIRROR" >"$b/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$b/debootstrap.log" >&2; rm -rf --one-file-system "$b"; die "debootstrap failed"; }
	tar -C "$b/root" --numeric-owner -cf - . | zstd -q -T0 -o "$cache.new"
	mv "$cache.new" "$cache"
	rm -rf --one-file-system "$b"
	log "root built in $((SECONDS - t0)) s ($(du -h "$cache" | cut -f1))"
fi

# --- A fresh root for this run -----------------------------------------------------------
run=$(mktemp -d "$FRESH_DIR/run.XXXXXX")
R=$run/root
mounts=()
cleanup() {
	local rc=$? m
	# Whatever the chroot started (sshd, runc containers) must not keep its mounts busy.
	if [ -d "$R/proc" ]; then
		local root_id pid
		root_id=$(stat -L -c %d:%i "$R")
		for pid in $(ls /proc | grep -E '^[0-9]+$'); do
			[ "$pid" != $$ ] && [ "$(stat -L -c %d:%i "/proc/$pid/root" 2>/dev/null)" = "$root_id" ] && kill -9 "$pid" 2>/dev/null || true
		done
	fi
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount -R "${mounts[$i]}" 2>/dev/null || umount -R -l "${mounts[$i]}" 2>/dev/null || true
	done
	if [ -n "${FRESH_KEEP:-}" ]; then
		log "kept $R"
	elif findmnt -rn -o TARGET | grep -q "^$R"; then
		echo "fresh: error: mounts remain under $R; not deleting it" >&2
		rc=1
	else
		rm -rf --one-file-system "$run"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$R"
# The root is a mount point of its own, as a machine's root is: CRIU walks the mount tree
# from the process's root and refuses mounts with no parent.
mount --bind "$R" "$R" && mounts+=("$R")
zstd -q -d -c "$cache" | tar -C "$R" --numeric-owner -xf -
# The host's network settings, certificate authorities and Debian sources: a new machine of
# this kind has the same (the registries may be reached through a TLS-inspecting proxy
# whose authority only the machine's bundle holds).
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
rm -f "$R/etc/apt/sources.list"
if [ -d /etc/apt/sources.list.d ]; then cp -a /etc/apt/sources.list.d/. "$R/etc/apt/sources.list.d/"; fi
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$R/etc/apt/sources.list"
for f in /etc/apt/apt.conf.d/*; do
	# Only the settings that say how to reach the mirror, not other tools' hooks.
	grep -qiE '^(Acquire|Dir::|APT::Get::)' "$f" 2>/dev/null && cp "$f" "$R/etc/apt/apt.conf.d/" || true
done
# Node.js and npm as the machine has them.
mkdir -p "$R$NPM_DIR" "$R$(dirname "$NODE")"
touch "$R$NODE"
mount --bind "$NODE" "$R$NODE" && mounts+=("$R$NODE")
mount -o remount,bind,ro "$R$NODE"
mount --bind "$NPM_DIR" "$R$NPM_DIR" && mounts+=("$R$NPM_DIR")
mount -o remount,bind,ro "$R$NPM_DIR"
ln -sf "$(realpath --relative-to="$R/usr/bin" "$R$NPM_DIR/bin/npm-cli.js")" "$R/usr/bin/npm"
ln -sf "$(realpath --relative-to="$R/usr/bin" "$R$NPM_DIR/bin/npx-cli.js")" "$R/usr/bin/npx"
if [ -n "$NPM_GLOBALRC" ] && [ -f "$NPM_GLOBALRC" ]; then mkdir -p "$R$(dirname "$NPM_GLOBALRC")"; cp "$NPM_GLOBALRC" "$R$NPM_GLOBALRC"; fi
# The kernel's file systems.
mount -t proc proc "$R/proc" && mounts+=("$R/proc")
mount --rbind /sys "$R/sys" && mount --make-rslave "$R/sys" && mounts+=("$R/sys")
mount --rbind /dev "$R/dev" && mount --make-rslave "$R/dev" && mounts+=("$R/dev")
mount -t tmpfs -o mode=0755 tmpfs "$R/run" && mounts+=("$R/run")
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" && mounts+=("$R/dev/shm")

# This work tree as a fresh clone would have it (plus uncommitted changes, so a change can
# be checked before it is committed).
mkdir -p "$R/project"
(cd "$top" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar --null -T - -cf -) | tar -C "$R/project" -xf -

# A clean environment, but for what the machine's own says about reaching the registries.
passenv=()
for v in NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
	[ -n "${!v:-}" ] && passenv+=("$v=${!v}")
done
# Each step runs in a mount namespace of its own whose root is the fresh root (pivot_root,
# not a plain chroot: CRIU refuses to dump when its root is not its mount namespace's).
# Mounts a step makes (tmpfs work directories, network namespace handles) end with it.
cat >"$run/enter" <<'ENTER'
#!/bin/sh
# enter ROOT COMMAND...: run COMMAND with ROOT as / (called in a new mount namespace).
set -e
cd "$1"; shift
mkdir -p .oldroot
pivot_root . .oldroot
exec chroot . /bin/sh -c 'umount -l /.oldroot && rmdir /.oldroot && exec "$@"' sh "$@"
ENTER
chmod 0755 "$run/enter"
in_root() {
	unshare --mount --propagation private -- "$run/enter" "$R" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LANG=C.UTF-8 CI="${CI:-}" TERM=dumb "${passenv[@]}" /bin/bash -c "$1"
}
step() {
	local title=$1 cmd=$2 t0=$SECONDS
	log "$title: $cmd"
	if in_root "cd /project && $cmd" 2>&1 | sed -u 's/^/  | /' >&2; then
		log "$title: passed in $((SECONDS - t0)) s"
	else
		die "$title failed in the fresh Debian 12 root (after $((SECONDS - t0)) s): see the lines above"
	fi
}

step "dependencies" "make deps"
step "criu version" "criu --version"
step "criu check" "criu check"
if [ "$FRESH_DEMO" = 1 ]; then
	step "demo" "make demo"
fi
log "a fresh Debian 12 root ran the project's installation$([ "$FRESH_DEMO" = 1 ] && echo ' and the demo')"
