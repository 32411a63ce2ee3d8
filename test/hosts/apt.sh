# Sourced by the install-deps scripts: apt_install_missing PKG... installs the Debian
# packages that are not installed yet, as root, with no questions, and checks each one
# arrived. Returns at once when all are there.
apt_install_missing() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	echo "install-deps: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# A source that cannot be reached (non-Debian repositories) must not stop us: apt-get
	# update still refreshes the reachable ones; the install fails loudly if a package
	# really cannot be found.
	apt-get update -qq || echo "install-deps: warning: apt-get update reported errors (continuing)" >&2
	# Services must not start on their own: the test hosts start their own sshd.
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { rm -f /usr/sbin/policy-rc.d; return 1; }
	rm -f /usr/sbin/policy-rc.d
	for p in "${missing[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			{ echo "install-deps: $p did not install" >&2; return 1; }
	done
}
