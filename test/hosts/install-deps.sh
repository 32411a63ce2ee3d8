#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine, as root, with no
# questions: Debian packages, CRIU 4.2 (test/hosts/install-criu.sh) and the npm packages.
# Quick when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (it installs Debian packages)" >&2; exit 1; }

# gnuplot-nox draws the benchmark plots (bench/); nothing in the tests needs it.
PKGS=(runc iptables iproute2 openssh-server openssh-client busybox-static procps psmisc tar coreutils sudo redis-server redis-tools gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || echo "install-deps: apt-get update reported errors (unreachable extra sources?); going on" >&2
	# Services must not start on their own: the test hosts start their own sshd.
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	rm -f /usr/sbin/policy-rc.d
fi

bash "$here/install-criu.sh"

if [ ! -d "$top/node_modules/ssh2" ] || [ "$top/package-lock.json" -nt "$top/node_modules/.package-lock.json" ]; then
	echo "install-deps: npm ci"
	(cd "$top" && npm ci --no-audit --no-fund --loglevel=error)
fi
