#!/usr/bin/env bash
# Makes an OCI bundle (config.json + rootfs) that runc can run and runc-migrate can move.
#
#   examples/make-bundle.sh KIND DIR [CGROUP]
#
# KIND:
#   counter  a shell loop that counts, writing the count to /dev/shm/count every 0.2 s; its
#            state is the shell variable, so a restart would begin at 1 again. Fork-free
#            (no `sleep`), so dirty-memory tracking sees only its own pages.
#            Read it from the host: cat /proc/<pid from runc state>/root/dev/shm/count.
# The examples write only to their own /dev/shm, a tmpfs CRIU moves with the container: a
# file of the rootfs caught open by the dump would have to exist, with the same size, in
# the destination's copy of the rootfs.
#   echo     a TCP echo server on port 7777 (busybox nc), in the host's network namespace
#            so its address can move with --move-ip.
#   redis    Debian's redis-server on port 6379 (no persistence), host network namespace.
#   memwriter  keeps MEM_MIB (default 64) MiB and rewrites RATE_KIB (default 256) KiB of it
#            per second; checks all of it every 0.1 s: /dev/shm/count ticks, /dev/shm/status
#            says "ok" (the pre-copy workload). WHOLE_PAGES=1: each rewrite writes the whole
#            page (dirtying then costs CPU, as in an application: auto-converge's case).
#   files    state in files of the rootfs (examples/filewriter.c): appends to /var/app.log,
#            rewrites a file it created and holds under flock, writes through a shared
#            mapping; checks each tick that no write was lost: /dev/shm/count ticks every
#            50 ms, /dev/shm/status says "ok" (the rootfs-sync workload).
# TRIGGER_DIR (environment): a host directory bind-mounted at /run/migrate in the
#          container, with /bin/trigger (examples/trigger.c) in its rootfs: run
#          `migrate replicate --trigger-socket TRIGGER_DIR/trigger.sock ...`, and the
#          container asks for a checkpoint with `trigger /run/migrate/trigger.sock CHECKPOINT`
#          (or MIGRATE). A directory, not the socket itself: replicate makes the socket,
#          after the container started, and again each time it starts.
# DIR     the bundle directory to create (replaced if it exists).
# CGROUP  the cgroupsPath (default /runc-migrate/<basename of DIR>). Two "hosts" on one
#         machine share one cgroup tree, so their bundles need different values.
#
# Start a bundle so that CRIU can checkpoint it (stdio not on a host file):
#   runc run -d --bundle DIR NAME </dev/null >/dev/null 2>&1
set -euo pipefail
kind=${1:?usage: make-bundle.sh counter|echo|redis|memwriter|files DIR [CGROUP]}
dir=${2:?usage: make-bundle.sh counter|echo|redis DIR [CGROUP]}
cgroup=${3:-/runc-migrate/$(basename "$dir")}
busybox=$(command -v busybox) || { echo "make-bundle.sh: busybox (busybox-static) is needed" >&2; exit 1; }
ldd "$busybox" >/dev/null 2>&1 && { echo "make-bundle.sh: $busybox is not static: install busybox-static" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir/rootfs"/{bin,proc,sys,dev,tmp,run,etc,var}
cp "$busybox" "$dir/rootfs/bin/busybox"
for a in sh cat echo nc ls ps sleep mkfifo; do ln -s busybox "$dir/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$dir/rootfs/etc/passwd"
echo 'root:x:0:' > "$dir/rootfs/etc/group"

share_host_net=false
case "$kind" in
counter)
	cat > "$dir/rootfs/counter.sh" <<'SH'
#!/bin/sh
# Counts in a shell variable; /dev/shm/count shows it. The read on a FIFO that nobody
# writes is a fork-free 0.2 s pause. The FIFO is part of the bundle, so the destination's
# copy has it.
i=0
# A tmpfs on /tmp (a bundle may mount one) hides the bundle's FIFO: make it there.
[ -p /tmp/tick ] || mkfifo /tmp/tick
while :; do
	i=$((i + 1))
	echo "$i" > /dev/shm/count
	read -t 0.2 _ <> /tmp/tick
done
SH
	chmod +x "$dir/rootfs/counter.sh"
	mkfifo "$dir/rootfs/tmp/tick"
	args='["/bin/sh", "/counter.sh"]'
	;;
echo)
	args='["/bin/busybox", "nc", "-ll", "-p", "7777", "-e", "/bin/cat"]'
	share_host_net=true
	;;
redis)
	bin=$(command -v redis-server) || { echo "make-bundle.sh: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
	mkdir -p "$dir/rootfs/usr/bin" "$dir/rootfs/data"
	cp "$bin" "$dir/rootfs/usr/bin/redis-server"
	# Its shared libraries, at the same paths.
	for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
		mkdir -p "$dir/rootfs$(dirname "$lib")"
		cp -L "$lib" "$dir/rootfs$lib"
	done
	args='["/usr/bin/redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/data", "--daemonize", "no", "--enable-debug-command", "local"]'
	share_host_net=true
	;;
memwriter)
	# MEM_MIB and RATE_KIB (environment) size the workload: memory kept, KiB rewritten per second.
	src_c=$(cd "$(dirname "$0")" && pwd)/memwriter.c
	bin=${MEMWRITER_BIN:-}
	if [ -z "$bin" ]; then
		command -v gcc >/dev/null || { echo "make-bundle.sh: gcc is needed to build memwriter (or set MEMWRITER_BIN)" >&2; exit 1; }
		bin=$(mktemp)
		gcc -static -O2 -o "$bin" "$src_c"
	fi
	cp "$bin" "$dir/rootfs/bin/memwriter"
	chmod 0755 "$dir/rootfs/bin/memwriter"
	args="[\"/bin/memwriter\", \"${MEM_MIB:-64}\", \"${RATE_KIB:-256}\"${WHOLE_PAGES:+, \"whole\"}]"
	;;
files)
	bin=${FILEWRITER_BIN:-}
	if [ -z "$bin" ]; then
		command -v gcc >/dev/null || { echo "make-bundle.sh: gcc is needed to build filewriter (or set FILEWRITER_BIN)" >&2; exit 1; }
		bin=$(mktemp)
		gcc -static -O2 -o "$bin" "$(cd "$(dirname "$0")" && pwd)/filewriter.c"
	fi
	cp "$bin" "$dir/rootfs/bin/filewriter"
	chmod 0755 "$dir/rootfs/bin/filewriter"
	args='["/bin/filewriter"]'
	;;
*)
	echo "make-bundle.sh: unknown kind '$kind' (counter, echo, redis, memwriter or files)" >&2
	exit 2
	;;
esac

if [ -n "${TRIGGER_DIR:-}" ]; then
	bin=${TRIGGER_BIN:-}
	if [ -z "$bin" ]; then
		command -v gcc >/dev/null || { echo "make-bundle.sh: gcc is needed to build trigger (or set TRIGGER_BIN)" >&2; exit 1; }
		bin=$(mktemp)
		gcc -static -O2 -o "$bin" "$(cd "$(dirname "$0")" && pwd)/trigger.c"
	fi
	cp "$bin" "$dir/rootfs/bin/trigger"
	chmod 0755 "$dir/rootfs/bin/trigger"
	mkdir -p -m 0700 "$TRIGGER_DIR" "$dir/rootfs/run/migrate"
fi

(cd "$dir" && runc spec)
(cd "$dir" && KIND="$kind" ARGS="$args" CGROUP="$cgroup" SHARE_NET="$share_host_net" TRIGGER_DIR="${TRIGGER_DIR:-}" node -e '
const fs = require("fs");
const c = JSON.parse(fs.readFileSync("config.json", "utf8"));
c.process.terminal = false;
c.process.args = JSON.parse(process.env.ARGS);
c.process.cwd = "/";
c.root = { path: "rootfs", readonly: false };
c.hostname = process.env.KIND;
c.linux.cgroupsPath = process.env.CGROUP;
if (process.env.SHARE_NET === "true") {
  // In the host network namespace: reachable at the host'"'"'s (service) address.
  c.linux.namespaces = c.linux.namespaces.filter((n) => n.type !== "network");
}
if (process.env.TRIGGER_DIR) {
  // migrate replicate --trigger-socket: the directory its socket is made in.
  c.mounts.push({ destination: "/run/migrate", type: "bind", source: process.env.TRIGGER_DIR, options: ["rbind", "rw"] });
}
fs.writeFileSync("config.json", JSON.stringify(c, null, 2) + "\n");
')
echo "$dir"
