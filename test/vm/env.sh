# Settings of the QEMU test VMs, sourced by every script in test/vm/. One plain
# RM_...=value per line (a Node test can read them the way test/e2e/hosts.ts reads
# test/hosts/env.sh). Override RM_VM_DIR in the environment to keep everything elsewhere.
RM_VM_DIR=${RM_VM_DIR:-/var/tmp/runc-migrate-vm}
# Built once, reused while the build inputs are unchanged.
RM_VM_IMAGE_DIR=$RM_VM_DIR/image
# Generated once: the root key pair the host and the VMs use, and the VMs' host keys.
RM_VM_KEYS_DIR=$RM_VM_DIR/keys
RM_VM_KEY=$RM_VM_KEYS_DIR/id_ed25519
RM_VM_KNOWN_HOSTS=$RM_VM_KEYS_DIR/known_hosts
# Pid files, serial console logs, overlays of the running VMs; removed by stop.sh.
RM_VM_RUN_DIR=$RM_VM_DIR/run
# The host reaches each VM's sshd through QEMU user networking on these local ports.
RM_VM_SSH_HOST=127.0.0.1
RM_VM1_SSH_PORT=2221
RM_VM2_SSH_PORT=2222
# The VM-to-VM link (QEMU socket netdev: vm1 listens on this local TCP port, vm2 connects).
RM_VM_LINK_PORT=10772
RM_VM_LINK_DEV=eth0
RM_VM1_ADDR=10.77.2.1
RM_VM2_ADDR=10.77.2.2
RM_VM_LINK_PREFIX=24
# An address on the link that nobody answers (the "host unreachable" case).
RM_VM_DEAD_ADDR=10.77.2.99
# The project directory, shared into both VMs at /project (virtio-9p, cache=loose).
RM_VM_PROJECT_SRC=${RM_VM_PROJECT_SRC:-/work/main}
RM_VM_PROJECT=/project
RM_VM_MEM_MB=${RM_VM_MEM_MB:-1024}
# QEMU CPU model (both VMs alike, so CRIU's CPU check passes between them). qemu64 ran
# node, ssh and sha256sum 10-30 % faster under TCG than max (which adds AVX2, AES-NI).
RM_VM_CPU=${RM_VM_CPU:-qemu64}
RM_VM_BOOT_TIMEOUT=${RM_VM_BOOT_TIMEOUT:-180}
