#!/usr/bin/env bash
# raw-direct with the source held as the tool holds it: frozen, its memory kept, until the
# destination's restore returned. An action script at CRIU's post-dump (through
# CRIU_CONFIG_FILE, as the tool's hold) says the images are written, then waits for the
# word to let CRIU end the source. What this adds to raw-direct is what restoring beside a
# source that still holds its memory costs, on test hosts that share one machine's memory.
. "$(dirname "$0")/common.sh"
L=/dev/shm/bench-raw.src R=/dev/shm/bench-raw.dst PORT=27199
open_master
rm -rf "$L"; mkdir -p "$L/img" "$L/work" "$L/hold"
mkfifo "$L/hold/dumped" "$L/hold/go"
cat > "$L/hold/hold.sh" <<HOLD
#!/bin/sh
[ "\$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
echo dumped > "$L/hold/dumped"
read -r _ < "$L/hold/go"
HOLD
chmod +x "$L/hold/hold.sh"
echo "action-script $L/hold/hold.sh" > "$L/hold/criu.conf"
# On every exit, a failed copy or restore included: the hold gets its word (opened
# read-write, so the open never blocks, even with the hold gone; not once the work
# directory is removed) and CRIU ends the source;
# then the master connection closes (open_master's own trap, replaced by this one).
trap '{ [ ! -p "$L/hold/go" ] || echo go 1<>"$L/hold/go"; } 2>/dev/null || true; ssh "${ssh_opts[@]}" -O exit "root@$DST" 2>/dev/null || true' EXIT
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R; mkdir -p $R/img $R/work && criu page-server --images-dir $R/img --address $DST --port $PORT --daemon -o $R/work/page-server.log"
echo "T_FREEZE $(now)"
CRIU_CONFIG_FILE="$L/hold/criu.conf" runc --root "$SRC_ROOT" checkpoint --image-path "$L/img" --work-path "$L/work" --page-server "$DST:$PORT" $TCP "$NAME" &
cp=$!
# Opened read-write: no block on the open; the read waits for the hold's word (a failed
# checkpoint never says it: the read gives up).
read -r -t 120 _ <> "$L/hold/dumped" || { kill $cp 2>/dev/null; wait $cp; exit 1; }
copy_and_restore "$L" "$R"
echo go 1<>"$L/hold/go"
wait $cp
echo "BYTES $(( $(du -sb "$L/img" | cut -f1) + $(ssh "${ssh_opts[@]}" "root@$DST" "du -sb $R/img/pages-*.img | awk '{s+=\$1} END {print s+0}'") ))"
rm -rf "$L"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R"
