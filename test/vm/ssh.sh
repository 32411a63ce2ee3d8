#!/usr/bin/env bash
# Runs a command as root in a test VM, from the host:   test/vm/ssh.sh vm1|vm2 [CMD...]
# The words of CMD are joined with spaces and run by the VM's shell (as ssh does), so
# quote what the remote shell must see as one word: ssh.sh vm1 'echo "$HOSTNAME"'.
# No CMD: an interactive shell (with a terminal when stdin is one). Non-interactive
# (BatchMode), host key checked against $RM_VM_KNOWN_HOSTS. The exit status is the
# command's (255: ssh itself failed).
# RM_VM_SSH_MUX=1 reuses one connection per VM (ControlMaster; ~3x faster per command under
# TCG); stop.sh closes the masters.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
usage() { echo "usage: ssh.sh vm1|vm2 [CMD...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case $1 in
vm1) port=$RM_VM1_SSH_PORT ;;
vm2) port=$RM_VM2_SSH_PORT ;;
*) usage ;;
esac
shift
[ -r "$RM_VM_KEY" ] || { echo "ssh.sh: no key at $RM_VM_KEY: run test/vm/build-image.sh (as root)" >&2; exit 255; }
[ -r "$RM_VM_KNOWN_HOSTS" ] || { echo "ssh.sh: no $RM_VM_KNOWN_HOSTS: start the VMs with test/vm/start.sh" >&2; exit 255; }
opts=(-i "$RM_VM_KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes
	-o "UserKnownHostsFile=$RM_VM_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
	-o ConnectTimeout=10 -o ServerAliveInterval=15 -o LogLevel=ERROR -p "$port")
if [ "${RM_VM_SSH_MUX:-0}" = 1 ] && [ -d "$RM_VM_RUN_DIR" ]; then
	opts+=(-o ControlMaster=auto -o "ControlPath=$RM_VM_RUN_DIR/ssh-%p.sock" -o ControlPersist=300)
fi
if [ $# -eq 0 ]; then
	if [ -t 0 ]; then opts+=(-t); fi
	exec ssh "${opts[@]}" "root@$RM_VM_SSH_HOST"
fi
exec ssh "${opts[@]}" -T "root@$RM_VM_SSH_HOST" -- "$@"
