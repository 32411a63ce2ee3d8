#!/usr/bin/env bash
# The runc/CRIU commands runc-migrate runs with --transport stream, written by hand:
# images in tmpfs, tar over one SSH connection opened before the freeze (ControlMaster),
# the address moved. No preflight, no hold, no rollback, no checks.
. "$(dirname "$0")/common.sh"
L=/dev/shm/bench-raw.src R=/dev/shm/bench-raw.dst
open_master
rm -rf "$L"; mkdir -p "$L/img" "$L/work"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R; mkdir -p $R/img $R/work"
echo "T_FREEZE $(now)"
runc --root "$SRC_ROOT" checkpoint --image-path "$L/img" --work-path "$L/work" $TCP "$NAME"
copy_and_restore "$L" "$R"
echo "BYTES $(du -sb "$L/img" | cut -f1)"
rm -rf "$L"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R"
