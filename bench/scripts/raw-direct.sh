#!/usr/bin/env bash
# The runc/CRIU commands runc-migrate runs with --transport direct, written by hand: a
# criu page-server on the destination started before the freeze, the pages sent to it
# over plain TCP by the checkpoint, the other images by tar over the SSH connection
# opened before the freeze, the address moved. No preflight, no hold, no rollback.
. "$(dirname "$0")/common.sh"
L=/dev/shm/bench-raw.src R=/dev/shm/bench-raw.dst PORT=27199
open_master
rm -rf "$L"; mkdir -p "$L/img" "$L/work"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R; mkdir -p $R/img $R/work && criu page-server --images-dir $R/img --address $DST --port $PORT --daemon -o $R/work/page-server.log"
echo "T_FREEZE $(now)"
runc --root "$SRC_ROOT" checkpoint --image-path "$L/img" --work-path "$L/work" --page-server "$DST:$PORT" $TCP "$NAME"
copy_and_restore "$L" "$R"
echo "BYTES $(( $(du -sb "$L/img" | cut -f1) + $(ssh "${ssh_opts[@]}" "root@$DST" "du -sb $R/img/pages-*.img | awk '{s+=\$1} END {print s+0}'") ))"
rm -rf "$L"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R"
