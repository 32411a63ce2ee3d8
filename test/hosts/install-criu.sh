#!/usr/bin/env bash
# Installs CRIU 4.2.x from Debian unstable into a private prefix, without touching the
# system's packages or libc, and puts a `criu` wrapper on PATH.
#
# Why: Debian 12's criu 3.17 fails on kernels >= 6.x here (vDSO bounds) and 4.1.x
# cannot dump IPv4/IPv6 sockets on kernels from 6.16. 4.2 works (see shared/DESIGN.md).
# The sid packages need sid's libc, so the wrapper runs criu with the prefix's dynamic
# loader and library path; children criu execs (iptables, action scripts) use the
# system's libc as usual.
set -euo pipefail

PREFIX=${CRIU_PREFIX:-/opt/runc-migrate/criu}
WRAPPER=${CRIU_WRAPPER:-/usr/local/sbin/criu}
MIN_VERSION=4.2

have_version() {
	local v
	v=$("$WRAPPER" --version 2>/dev/null | sed -n 's/^Version: *//p') || return 1
	[ -n "$v" ] && [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$v" | sort -V | head -n1)" = "$MIN_VERSION" ]
}

if [ -x "$WRAPPER" ] && have_version; then
	echo "criu: $("$WRAPPER" --version | head -n1) already at $WRAPPER"
	exit 0
fi

work=$(mktemp -d /tmp/criu-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc/sources.list.d" "$work/etc/preferences.d" "$work/lists/partial" \
	"$work/cache/archives/partial" "$work/debs"
cat > "$work/etc/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
SRC

# A private apt configuration: the system's sources and package lists stay as they are.
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
echo "criu: reading Debian unstable's package lists"
apt-get "${APT_OPTS[@]}" -qq update

# criu and everything it links against, resolved recursively in sid.
mapfile -t pkgs < <(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
	--no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends=no criu 2>/dev/null |
	grep -v '^ ' | grep -v '^<' | sort -u |
	grep -v -E '^(python3.*|perl.*|debconf.*|dpkg|tar|coreutils|bash|base-files|gcc-.*-base|libcrypt1|libpython.*|media-types|tzdata|readline-common|netbase|install-info|mime-support|libselinux1|sensible-utils|init-system-helpers|iproute2|iptables|nftables|libxtables.*|libip[46]tc.*|libnftables.*|libjansson.*|libedit.*|libtirpc.*|libgssapi.*|libkrb5.*|libk5crypto.*|libcom-err.*|libkeyutils.*|libelf.*|libbpf.*|libmnl.*|libcap2-bin|libatm1.*|libnetfilter.*|libnfnetlink.*|libnftnl.*|libdb5.*|libbz2.*|liblzma.*|libtinfo.*|libncurses.*|libsqlite.*|libreadline.*|libexpat.*|libmd0|libxxhash.*|libzstd.*|libsystemd.*|libudev.*|libgcrypt.*|libgpg-error.*|liblz4.*|libaudit.*|libpam.*|libsemanage.*|libsepol.*|libacl.*|libattr.*|libpcre.*|zlib1g|libffi.*)$' || true)
echo "criu: downloading ${pkgs[*]}"
(cd "$work/debs" && apt-get "${APT_OPTS[@]}" -qq download "${pkgs[@]}")

rm -rf "$PREFIX.new"
mkdir -p "$PREFIX.new"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX.new"; done
[ -x "$PREFIX.new/usr/sbin/criu" ] || { echo "criu: no usr/sbin/criu in the downloaded packages" >&2; exit 1; }
loader=
for l in usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; do
	if [ -e "$PREFIX.new/$l" ]; then loader=$PREFIX/$l; break; fi
done
[ -n "$loader" ] || { echo "criu: no dynamic loader in the downloaded libc6" >&2; exit 1; }
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"

mkdir -p "$(dirname "$WRAPPER")"
cat > "$WRAPPER" <<WRAP
#!/bin/sh
# criu from Debian unstable, run with its own libc (installed by runc-migrate's test/hosts/install-criu.sh)
exec "$loader" --library-path "$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu" "$PREFIX/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$WRAPPER"
"$WRAPPER" --version
have_version || { echo "criu: installed version is older than $MIN_VERSION" >&2; exit 1; }
