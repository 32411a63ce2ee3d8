#!/usr/bin/env bash
# raw-direct with CRIU's own TLS, by hand: the certificates (a CA, a page-server and a
# dumper certificate for the destination's address, made with openssl) are ready before
# the freeze, as an operator's would be; the page server and the checkpoint use them
# (the checkpoint through CRIU_CONFIG_FILE: runc has no TLS flags). Nothing else differs.
. "$(dirname "$0")/common.sh"
L=/dev/shm/bench-rawtls.src R=/dev/shm/bench-rawtls.dst PORT=27198
open_master
rm -rf "$L"; mkdir -p -m 0700 "$L/img" "$L/work" "$L/tls"
T=$L/tls
san="subjectAltName=IP:$DST"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" -out "$T/ca.crt" -days 1 -subj /CN=bench-ca 2>/dev/null
for n in server client; do
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$n.key" -out "$T/$n.csr" -subj "/CN=$n" 2>/dev/null
	openssl x509 -req -in "$T/$n.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -set_serial "0x$(openssl rand -hex 8)" -days 1 -out "$T/$n.crt" -extfile <(echo "$san") 2>/dev/null
done
printf 'tls\ntls-cacert %s\ntls-cert %s\ntls-key %s\n' "$T/ca.crt" "$T/client.crt" "$T/client.key" > "$T/criu.conf"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R; mkdir -p -m 0700 $R/img $R/work $R/tls"
tar -C "$T" -cf - ca.crt server.crt server.key | ssh "${ssh_opts[@]}" "root@$DST" "tar -C $R/tls -xf -"
ssh "${ssh_opts[@]}" "root@$DST" "criu page-server --images-dir $R/img --address $DST --port $PORT --tls --tls-cacert $R/tls/ca.crt --tls-cert $R/tls/server.crt --tls-key $R/tls/server.key --daemon -o $R/work/page-server.log"
echo "T_FREEZE $(now)"
CRIU_CONFIG_FILE=$T/criu.conf runc --root "$SRC_ROOT" checkpoint --image-path "$L/img" --work-path "$L/work" --page-server "$DST:$PORT" $TCP "$NAME"
copy_and_restore "$L" "$R"
echo "BYTES $(( $(du -sb "$L/img" | cut -f1) + $(ssh "${ssh_opts[@]}" "root@$DST" "du -sb $R/img/pages-*.img | awk '{s+=\$1} END {print s+0}'") ))"
rm -rf "$L"
ssh "${ssh_opts[@]}" "root@$DST" "rm -rf $R"
