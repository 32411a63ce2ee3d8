#!/usr/bin/env bash
# The naive migration seed scripts of the field do by hand: checkpoint to disk, copy the
# images with scp, restore. Each ssh/scp makes its own connection.
. "$(dirname "$0")/common.sh"
D=/var/tmp/bench-naive
rm -rf "$D.src"; mkdir -p "$D.src"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $D.dst; mkdir -p $D.dst"
echo "T_FREEZE $(now)"
runc --root "$SRC_ROOT" checkpoint --image-path "$D.src/img" --work-path "$D.src/work" $TCP "$NAME"
echo "T_DUMPED $(now)"
release_addr
scp -q -r "${ssh_opts[@]}" "$D.src/img" "root@$DST:$D.dst/img"
ssh "${ssh_opts[@]}" "root@$DST" "$(claim_addr)runc --root $DST_ROOT restore --detach --bundle $BUNDLE --image-path $D.dst/img --work-path $D.dst/work $TCP $NAME$(announce_addr)"
echo "T_RUNNING $(now)"
echo "BYTES $(du -sb "$D.src/img" | cut -f1)"
rm -rf "$D.src"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $D.dst"
