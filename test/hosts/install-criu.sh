#!/usr/bin/env bash
# Installs CRIU 4.2 from Debian (unstable or testing) into a self-contained private prefix,
# without touching the system's packages or libc, and puts a `criu` wrapper on PATH.
#
# Why: Debian 12's criu 3.17 fails on kernels >= 6.x here (vDSO bounds) and 4.1.x
# cannot dump IPv4/IPv6 sockets on kernels from 6.16. 4.2 works (see shared/DESIGN.md).
# The newer packages need a newer libc than Debian 12's, so the wrapper runs criu with the
# prefix's own dynamic loader and library directory; children criu execs (iptables,
# action scripts) use the system's libc as usual.
#
# What goes into the prefix is decided by the binary, not by a list kept by hand: every
# package of criu's dependency closure is downloaded and unpacked in a staging tree, the
# staged loader resolves criu's NEEDED entries (recursively) against that tree, and exactly
# the libraries it resolved are copied into $PREFIX/lib. A library that only the system
# could provide, or that nothing provides, stops the install with its name. What the prefix
# carries, from which package and for whom, is written to $PREFIX/LIBRARIES.
#
# Settings (environment):
#   CRIU_VERSION  the Debian version to install: KNOWN_GOOD below by default (falling back to
#                 the newest offered when Debian no longer serves it), "newest", or an exact
#                 version such as 4.2.1-1 (experimental's are offered too)
#   CRIU_PREFIX   where the private install goes (default /opt/runc-migrate/criu)
#   CRIU_WRAPPER  the wrapper put on PATH (default /usr/local/sbin/criu)
#   CRIU_MIRROR   the Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

PREFIX=${CRIU_PREFIX:-/opt/runc-migrate/criu}
WRAPPER=${CRIU_WRAPPER:-/usr/local/sbin/criu}
MIRROR=${CRIU_MIRROR:-http://deb.debian.org/debian}
MIN_VERSION=4.2
# The last version seen passing `make test` here (CRIU 4.2.1 on kernel 6.18, Debian 12 host).
KNOWN_GOOD=4.2.1-1
WANT=${CRIU_VERSION:-}
LOADER_NAME=ld-linux-x86-64.so.2

log() { echo "criu: $*" >&2; }
die() { echo "criu: error: $*" >&2; exit 1; }

# How many libraries the prefix carries besides its loader (from its manifest).
carried() { grep -v -e '^#' -e "^$LOADER_NAME" "$PREFIX/LIBRARIES" | grep -c .; }
# The wrapper's criu version ("4.2.1"), empty if it does not run.
wrapper_version() { "$WRAPPER" --version 2>/dev/null | sed -n 's/^Version: *//p'; }
at_least() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }

# Lists what the loader at $1 resolves for binary $2 with library directory $3, one
# "soname path" per line ("soname not-found" when nothing provides it). The loader itself
# (libc's NEEDED by absolute path) is left out: it is the one doing the resolving.
resolve() {
	"$1" --inhibit-cache --library-path "$3" --list "$2" 2>&1 | grep -v '^[[:space:]]*/' |
		sed -n -e 's/^[[:space:]]*\([^[:space:]]*\) => not found.*/\1 not-found/p' \
			-e 's/^[[:space:]]*\([^[:space:]]*\) => \([^[:space:]]*\) (0x.*/\1 \2/p'
}

# An installed prefix is kept when it is complete (its manifest exists and every library
# resolves inside it) and its version is the one asked for.
installed_ok() {
	[ -x "$WRAPPER" ] && [ -s "$PREFIX/LIBRARIES" ] && [ -x "$PREFIX/lib/$LOADER_NAME" ] || return 1
	local v outside
	v=$(wrapper_version) || return 1
	[ -n "$v" ] || return 1
	case "$WANT" in
		'' | newest) at_least "$MIN_VERSION" "$v" || return 1 ;;
		*) [ "$(cat "$PREFIX/VERSION" 2>/dev/null)" = "$WANT" ] || return 1 ;;
	esac
	outside=$(resolve "$PREFIX/lib/$LOADER_NAME" "$PREFIX/usr/sbin/criu" "$PREFIX/lib" | awk -v p="$PREFIX/lib/" 'index($2, p) != 1')
	[ -z "$outside" ]
}

if installed_ok; then
	log "$("$WRAPPER" --version | head -n1) already at $WRAPPER ($(cat "$PREFIX/VERSION"), its loader and $(carried) libraries in $PREFIX/lib)"
	exit 0
fi

work=$(mktemp -d /tmp/criu-install.XXXXXX)
trap '[ -n "${CRIU_KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$work/etc/sources.list.d" "$work/etc/preferences.d" "$work/lists/partial" \
	"$work/cache/archives/partial" "$work/debs" "$work/stage"
# Unstable and testing carry 4.2; experimental (never chosen unless asked for by version)
# carries what comes next. The keyring is debian-archive-keyring's, on every Debian.
for suite in sid forky experimental; do
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main"
done >"$work/etc/sources.list"

# A private apt configuration: the system's sources, lists and status stay as they are.
APT_OPTS=(
	-o "Dir::Etc::SourceList=$work/etc/sources.list"
	-o "Dir::Etc::SourceParts=$work/etc/sources.list.d"
	-o "Dir::Etc::Preferences=$work/etc/preferences"
	-o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
	-o "Dir::State::Lists=$work/lists"
	-o "Dir::Cache=$work/cache"
	-o "Dir::State::status=/dev/null"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures::=amd64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)
log "reading Debian's package lists (unstable, testing, experimental)"
apt-get "${APT_OPTS[@]}" -qq update || die "could not read Debian's package lists from $MIRROR"

# --- Which version ---------------------------------------------------------------------
mapfile -t offered < <(apt-cache "${APT_OPTS[@]}" madison criu | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -V -r -u)
[ ${#offered[@]} -gt 0 ] || die "Debian offers no criu package at $MIRROR"
newest=
for v in "${offered[@]}"; do
	case "$v" in *~exp*) continue ;; esac # experimental only when asked for by version
	newest=$v
	break
done
case "$WANT" in
	'')
		if printf '%s\n' "${offered[@]}" | grep -qxF "$KNOWN_GOOD"; then
			version=$KNOWN_GOOD
		else
			[ -n "$newest" ] || die "Debian offers only ${offered[*]} of criu; none outside experimental"
			log "warning: Debian no longer offers the known-good criu $KNOWN_GOOD; trying the newest, $newest"
			version=$newest
		fi
		;;
	newest) version=$newest ;;
	*)
		printf '%s\n' "${offered[@]}" | grep -qxF "$WANT" ||
			die "CRIU_VERSION=$WANT is not offered by Debian; offered: ${offered[*]}"
		version=$WANT
		;;
esac
at_least "$MIN_VERSION" "${version%%-*}" ||
	die "criu $version is older than $MIN_VERSION, which this project needs (offered: ${offered[*]})"
log "installing criu $version"

# --- Download criu's whole dependency closure --------------------------------------------
mapfile -t pkgs < <(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
	--no-conflicts --no-breaks --no-replaces --no-enhances "criu=$version" 2>/dev/null |
	grep -v -e '^ ' -e '^<' | sort -u)
[ ${#pkgs[@]} -gt 0 ] || die "apt could not resolve the dependencies of criu $version"
# Packages criu pins to its own version (libcompel1, built from the same source) come in
# that version; the rest in the version apt picks.
mapfile -t pinned < <(apt-cache "${APT_OPTS[@]}" show "criu=$version" | sed -n 's/^Depends: //p' | head -n1 |
	tr ',' '\n' | sed -n "s/^ *\([^ ]*\) (= ${version//./\\.})\$/\1/p")
want=()
for p in "${pkgs[@]}"; do
	if [ "$p" = criu ] || printf '%s\n' "${pinned[@]}" | grep -qxF "$p"; then want+=("$p=$version"); else want+=("$p"); fi
done
log "downloading ${want[*]}"
(cd "$work/debs" && apt-get "${APT_OPTS[@]}" -qq download "${want[@]}") ||
	die "downloading criu $version's packages failed (CRIU_VERSION=$KNOWN_GOOD selects the last known-good version)"

# Each package unpacked into the staging tree; each file remembered with its package.
for deb in "$work"/debs/*.deb; do
	pkg=$(dpkg-deb -f "$deb" Package)
	dpkg-deb -x "$deb" "$work/stage"
	dpkg-deb -c "$deb" | awk -v p="$pkg" '{ f = $6; sub(/^\./, "", f); print f, p }' >>"$work/owners"
done
S=$work/stage
[ -x "$S/usr/sbin/criu" ] || die "the criu package unpacked no usr/sbin/criu"
stage_loader=
for l in usr/lib/x86_64-linux-gnu lib64 lib/x86_64-linux-gnu; do
	[ -e "$S/$l/$LOADER_NAME" ] && { stage_loader=$S/$l/$LOADER_NAME; break; }
done
[ -n "$stage_loader" ] || die "no $LOADER_NAME in the downloaded libc6"
stage_libs="$S/usr/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu"

# --- What criu needs, resolved by the staged loader -----------------------------------
resolve "$stage_loader" "$S/usr/sbin/criu" "$stage_libs" >"$work/resolved"
problems=()
while read -r soname path; do
	if [ "$path" = not-found ]; then
		problems+=("$soname: needed by criu $version (or one of its libraries) but in none of its dependency packages")
	else
		case "$path" in "$S"/*) ;; *) problems+=("$soname: resolved only from this system's $path, which a new machine may lack") ;; esac
	fi
done <"$work/resolved"
if [ ${#problems[@]} -gt 0 ]; then
	printf 'criu: error: %s\n' "${problems[@]}" >&2
	die "criu $version cannot be made self-contained; CRIU_VERSION=$KNOWN_GOOD selects the last known-good version"
fi

# Who needs each library: the loader's own trace of its NEEDED walk.
LD_DEBUG=files "$stage_loader" --inhibit-cache --library-path "$stage_libs" --list "$S/usr/sbin/criu" 2>&1 >/dev/null |
	sed -n 's/.*file=\([^ ]*\) \[0\];  needed by \([^ ]*\) \[0\].*/\1 \2/p' >"$work/needed-by" || true

# --- The prefix ---------------------------------------------------------------------------
new=$PREFIX.new
rm -rf "$new"
mkdir -p "$new/lib"
dpkg-deb -x "$(ls "$work"/debs/criu_*.deb)" "$new"
cp -L "$stage_loader" "$new/lib/$LOADER_NAME"
{
	printf '# Libraries in lib/, resolved from criu %s NEEDED entries by its own loader.\n' "$version"
	printf '# soname\tDebian package\tneeded by\n'
	printf '%s\t%s\t%s\n' "$LOADER_NAME" "$(awk -v f="${stage_loader#"$S"}" '$1 == f { print $2 }' "$work/owners" | head -n1)" "the wrapper (runs criu)"
	while read -r soname path; do
		cp -L "$path" "$new/lib/$soname"
		# The owning package: the file, or the one its soname link points to.
		real=$(readlink -f "$path")
		owner=$(awk -v a="${path#"$S"}" -v b="${real#"$S"}" '$1 == a || $1 == b { print $2; exit }' "$work/owners")
		users=$(awk -v s="$soname" '$1 == s { n = $2; sub(/.*\//, "", n); print n }' "$work/needed-by" | sort -u | paste -sd, -)
		printf '%s\t%s\t%s\n' "$soname" "${owner:-?}" "${users:-?}"
	done <"$work/resolved"
} >"$new/LIBRARIES"
echo "$version" >"$new/VERSION"

# The new prefix must be self-contained before it replaces the old one.
outside=$(resolve "$new/lib/$LOADER_NAME" "$new/usr/sbin/criu" "$new/lib" | awk -v p="$new/lib/" 'index($2, p) != 1')
[ -z "$outside" ] || die "the new prefix does not resolve every library inside itself: $outside"
err=$("$new/lib/$LOADER_NAME" --library-path "$new/lib" "$new/usr/sbin/criu" --version 2>&1 >/dev/null) ||
	die "criu $version does not run from its prefix: $err (CRIU_VERSION=$KNOWN_GOOD selects the last known-good version)"

rm -rf "$PREFIX"
mv "$new" "$PREFIX"
mkdir -p "$(dirname "$WRAPPER")"
cat >"$WRAPPER" <<WRAP
#!/bin/sh
# criu $version from Debian, run with its own loader and libraries (installed by
# runc-migrate's test/hosts/install-criu.sh; $PREFIX/LIBRARIES lists them).
exec "$PREFIX/lib/$LOADER_NAME" --library-path "$PREFIX/lib" "$PREFIX/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$WRAPPER"
v=$(wrapper_version)
[ -n "$v" ] || die "$WRAPPER does not run: $("$WRAPPER" --version 2>&1 | head -n3)"
at_least "$MIN_VERSION" "$v" || die "installed criu $v is older than $MIN_VERSION"
log "criu $v ($version) at $WRAPPER; its loader and $(carried) libraries in $PREFIX/lib:"
sed -n '3,$p' "$PREFIX/LIBRARIES" | awk -F'\t' '{ printf "criu:   %-28s %-20s for %s\n", $1, $2, $3 }' >&2
