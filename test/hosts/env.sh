# Names and addresses of the local test hosts, sourced by setup.sh, teardown.sh, the
# demo and the end-to-end tests. Override RM_HOSTS_DIR to build them elsewhere.
RM_HOSTS_DIR=${RM_HOSTS_DIR:-/var/tmp/runc-migrate-hosts}
RM_NS_LAN=rm-lan
RM_NS_SRC=rm-src
RM_NS_DST=rm-dst
RM_NS_CLIENT=rm-client
# A bastion: the jump host for the ProxyJump tests (its own sshd).
RM_NS_JUMP=rm-jump
RM_BRIDGE=br0
RM_NET_PREFIX=10.77.0
RM_SRC_ADDR=$RM_NET_PREFIX.1
RM_DST_ADDR=$RM_NET_PREFIX.2
RM_CLIENT_ADDR=$RM_NET_PREFIX.3
RM_JUMP_ADDR=$RM_NET_PREFIX.4
# IPv6 on the same link (unique local addresses; no DAD delay: added nodad).
RM_NET6_PREFIX=fd77::
RM_SRC_ADDR6=${RM_NET6_PREFIX}1
RM_DST_ADDR6=${RM_NET6_PREFIX}2
RM_CLIENT_ADDR6=${RM_NET6_PREFIX}3
# An address no host answers on: the "host unreachable" case.
RM_DEAD_ADDR=$RM_NET_PREFIX.99
# The service address a TCP container's peers use; it starts on the source.
RM_SERVICE_ADDR=10.77.1.10
# A second device on the link named as a VLAN device is (eth0.100 on the source,
# destination and client) and a service address reached through it: --move-ip onto a
# device whose name has a dot. This kernel has no 802.1Q (CONFIG_VLAN_8021Q unset), so
# it is a macvlan device under that name.
RM_VLAN_ID=100
RM_VLAN_PREFIX=10.77.100
RM_VLAN_SERVICE_ADDR=10.77.101.10
RM_SSH_PORT=22
# The destination's second sshd, with an RSA host key only.
RM_SSH_RSA_PORT=2222
# A non-root user with passwordless sudo on the destination (the --sudo case).
RM_SUDO_USER=rmsudo
