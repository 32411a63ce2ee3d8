#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine, as root, with no
# questions: Debian packages, CRIU 4.2 (test/hosts/install-criu.sh) and the npm packages.
# Quick when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (it installs Debian packages)" >&2; exit 1; }
. "$here/apt.sh"

# gnuplot-nox draws the benchmark plots (bench/); nothing in the tests needs it.
# shellcheck checks the shell the hosts run (the guard and the hold, generated: test/unit/shell.test.ts).
# attr and acl: the file tests set xattrs and ACLs (test/e2e/files-random.test.ts); perl runs the change log (changelog.ts).
# man-db renders migrate(1) (test/unit/cli.test.ts); bsdutils has script(1), the tests' terminal.
PKGS=(runc rsync openssl iptables iproute2 openssh-server openssh-client busybox-static procps psmisc tar coreutils sudo redis-server redis-tools gnuplot-nox shellcheck attr acl perl-base man-db bsdutils)
apt_install_missing "${PKGS[@]}"

bash "$here/install-criu.sh"

if [ ! -d "$top/node_modules/ssh2" ] || [ "$top/package-lock.json" -nt "$top/node_modules/.package-lock.json" ]; then
	echo "install-deps: npm ci"
	(cd "$top" && npm ci --no-audit --no-fund --loglevel=error)
fi
