# timeout: 400
# Container networks through the card's switch: two containers on network
# blue (VLAN 100) ping each other and pass TCP (iperf3) through their ports;
# a container on red (VLAN 200) with an overlapping subnet and the same
# address as one on blue reaches nobody on blue; jumbo frames pass on a
# 9000-byte network; the ports offer TSO and the card cuts the frames (a
# file arrives byte for byte over IPv4 at MTU 1500 and 9000, iperf3 runs
# over IPv6); counters move; detach frees the address.
. /scenarios/lib.sh
load_dia
start_diad
diaconfig network create blue --vlan 100 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200
diaconfig network create red --vlan 200 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200 --allow-overlap
diaconfig network create jumbo --vlan 300 --subnet 10.30.0.0/24 --gateway 10.30.0.1 --mtu 9000
for c in web db spy; do diaconfig container create $c; done
diaconfig port attach --container web --network blue | tee /tmp/a
diaconfig port attach --container db --network blue
diaconfig port attach --container spy --network red
diaconfig port list | tee /tmp/ports
expect_contains /tmp/ports "10.10.0.10"
expect_contains /tmp/ports "10.10.0.11"
pw=$(container_pid web); pd=$(container_pid db); ps=$(container_pid spy)
nsenter -t "$pw" -n ip addr show eth0 | tee /tmp/ipw
expect_contains /tmp/ipw "10.10.0.10/24"
nsenter -t "$pw" -n ip route | grep -q "default via 10.10.0.1" || fail "no default route"
ip link show | grep -q "dia0p" && fail "a container's port is visible on the appliance"
nsenter -t "$pw" -n ping -c 3 -W 2 10.10.0.11 || fail "web cannot reach db on blue"
nsenter -t "$pd" -n ping -c 3 -W 2 10.10.0.10 || fail "db cannot reach web on blue"
# spy (red, 10.10.0.10 too) must not reach db, even by broadcast ARP.
nsenter -t "$ps" -n ping -c 3 -W 1 10.10.0.11 && fail "red reached blue across VLANs"
nsenter -t "$pd" -n ip neigh show | grep "10.10.0.10 " | tee /tmp/neigh
mac_web=$(diaconfig -o value=mac port show web)
grep -qi "$mac_web" /tmp/neigh || fail "db learned another MAC than web's for 10.10.0.10"
# TCP through the ports.
nsenter -t "$pd" -n iperf3 -s -D -1
sleep 0.5
nsenter -t "$pw" -n iperf3 -c 10.10.0.11 -t 3 -J > /tmp/iperf.json || { cat /tmp/iperf.json; fail "iperf3 web -> db failed"; }
bps=$(iperf_received_bps /tmp/iperf.json)
log "web -> db TCP: $bps bit/s"
[ "${bps:-0}" -gt 1000000 ] || fail "TCP throughput ${bps} bit/s"
diaconfig port stats web | tee /tmp/stats
tx=$(diaconfig -o value=counters.tx_packets port stats web)
[ "${tx:-0}" -gt 1000 ] || fail "card counted too few packets"
# TSO: the port offers it, the stack hands the card 64 KiB frames, the card
# cuts them (its counter) and what arrives is what was sent.
nsenter -t "$pw" -n dia-guest-check tso eth0 | tee /tmp/tso
expect_contains /tmp/tso "tcp-segmentation-offload: on"
tso=$(diaconfig -o value=counters.tx_tso_frames port stats web)
segs=$(diaconfig -o value=counters.tx_tso_segments port stats web)
log "web: card cut $tso TSO frames into $segs segments"
[ "${tso:-0}" -gt 100 ] || fail "card cut only ${tso} TSO frames"
[ "${segs:-0}" -gt $((tso * 2)) ] || fail "TSO frames were not cut into segments ($segs for $tso)"
head -c 30000000 /dev/urandom > /tmp/blob
want=$(sha256sum < /tmp/blob)
# send_file PID_FROM PID_TO ADDR PORT: the blob through one TCP connection.
send_file() {
    nsenter -t "$2" -n busybox nc -l -p "$4" > /tmp/blob.rx &
    local rx=$!
    sleep 0.5
    nsenter -t "$1" -n timeout 60 bash -c "cat /tmp/blob > /dev/tcp/$3/$4" || fail "sending the file to $3 failed"
    wait "$rx" || fail "receiving the file on $3 failed"
    got=$(sha256sum < /tmp/blob.rx)
    [ "$got" = "$want" ] || fail "the file arrived changed at $3 ($(stat -c %s /tmp/blob.rx) bytes)"
}
send_file "$pw" "$pd" 10.10.0.11 5001
tso2=$(diaconfig -o value=counters.tx_tso_frames port stats web)
log "web: $((tso2 - tso)) TSO frames for the 30 MB file"
[ "$tso2" -gt $((tso + 100)) ] || fail "the file went without TSO ($tso -> $tso2)"
# IPv6 (TSO6) between the same ports.
nsenter -t "$pw" -n ip -6 addr add fd00:10::10/64 dev eth0 nodad
nsenter -t "$pd" -n ip -6 addr add fd00:10::11/64 dev eth0 nodad
nsenter -t "$pd" -n iperf3 -s -D -1
sleep 0.5
nsenter -t "$pw" -n iperf3 -6 -c fd00:10::11 -t 2 -J > /tmp/iperf6.json || { cat /tmp/iperf6.json; fail "iperf3 over IPv6 failed"; }
bps6=$(iperf_received_bps /tmp/iperf6.json)
log "web -> db TCP over IPv6: $bps6 bit/s"
[ "${bps6:-0}" -gt 1000000 ] || fail "IPv6 TCP throughput ${bps6} bit/s"
tso3=$(diaconfig -o value=counters.tx_tso_frames port stats web)
[ "$tso3" -gt $((tso2 + 100)) ] || fail "IPv6 went without TSO ($tso2 -> $tso3)"
# Jumbo frames: an 8000-byte ping in one frame each way.
diaconfig container create big1
diaconfig container create big2
diaconfig port attach --container big1 --network jumbo
diaconfig port attach --container big2 --network jumbo
p1=$(container_pid big1)
nsenter -t "$p1" -n ip link show eth0 | grep -q "mtu 9000" || fail "jumbo network port MTU"
ip2=$(diaconfig -o value=address port show big2)
ip2=${ip2%%/*}
nsenter -t "$p1" -n ping -c 2 -W 2 -s 8000 "$ip2" || fail "jumbo ping to $ip2 failed"
# TSO at MTU 9000: the same file, cut into jumbo segments.
send_file "$p1" "$(container_pid big2)" "$ip2" 5003
jt=$(diaconfig -o value=counters.tx_tso_frames port stats big1)
js=$(diaconfig -o value=counters.tx_tso_segments port stats big1)
log "big1 (MTU 9000): $jt TSO frames, $js segments"
[ "${jt:-0}" -gt 50 ] || fail "jumbo port cut only ${jt} TSO frames"
# Detach releases the address; the next port gets it again.
diaconfig port detach db
diaconfig port list | grep -q "10.10.0.11" && fail "lease kept after detach"
diaconfig container create db2
diaconfig port attach --container db2 --network blue | tee /tmp/a2
expect_contains /tmp/a2 "10.10.0.11"
dmesg_clean
