# timeout: 400
# Container networks through the card's switch: two containers on network
# blue (VLAN 100) ping each other and pass TCP (iperf3) through their ports;
# a container on red (VLAN 200) with an overlapping subnet and the same
# address as one on blue reaches nobody on blue; jumbo frames pass on a
# 9000-byte network; counters move; detach frees the address.
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
# Detach releases the address; the next port gets it again.
diaconfig port detach db
diaconfig port list | grep -q "10.10.0.11" && fail "lease kept after detach"
diaconfig container create db2
diaconfig port attach --container db2 --network blue | tee /tmp/a2
expect_contains /tmp/a2 "10.10.0.11"
dmesg_clean
