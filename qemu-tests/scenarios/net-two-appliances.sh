# appliances: 2
# timeout: 600
# Two appliances (two guests, two cards) share network blue (VLAN 100)
# through their cards' uplinks: containers on either side ping each other
# and pass TCP; a container on red (VLAN 200, the same subnet) on the other
# appliance reaches nothing on blue.
. /scenarios/lib.sh
case "$DIA_NODE" in
    0) me=10.10.0.10; peer=10.10.0.20 ;;
    1) me=10.10.0.20; peer=10.10.0.10 ;;
    *) fail "unexpected DIA_NODE '$DIA_NODE'" ;;
esac
load_dia
start_diad
diaconfig network create blue --vlan 100 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200
diaconfig network create red --vlan 200 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200 --allow-overlap
diaconfig container create web
diaconfig port attach --container web --network blue --ip "$me"
pw=$(container_pid web)
barrier ports-up || fail "the other appliance never got its port up"
# The first frames also teach both switches where the MACs are.
ok=0
for _ in $(seq 1 10); do
    if nsenter -t "$pw" -n ping -c 1 -W 1 "$peer" >/dev/null; then ok=1; break; fi
done
[ "$ok" = 1 ] || fail "node $DIA_NODE cannot reach $peer on the other appliance"
nsenter -t "$pw" -n ping -c 3 -W 2 "$peer" || fail "pings to the other appliance lost"
if [ "$DIA_NODE" = 1 ]; then
    nsenter -t "$pw" -n iperf3 -s -D -1
fi
barrier tcp-ready || fail "no TCP barrier"
if [ "$DIA_NODE" = 0 ]; then
    nsenter -t "$pw" -n iperf3 -c "$peer" -t 3 -J > /tmp/iperf.json || { cat /tmp/iperf.json; fail "TCP across the uplink failed"; }
    bps=$(iperf_received_bps /tmp/iperf.json)
    log "TCP between the appliances: $bps bit/s"
    [ "${bps:-0}" -gt 1000000 ] || fail "TCP throughput across the uplink ${bps} bit/s"
fi
barrier tcp-done || fail "no TCP-done barrier"
# Node 1 puts a container on red with the same subnet: it must not reach
# node 0's web on blue, across the uplink or otherwise.
if [ "$DIA_NODE" = 1 ]; then
    diaconfig container create spy
    diaconfig port attach --container spy --network red --ip 10.10.0.30
    ps=$(container_pid spy)
    nsenter -t "$ps" -n ping -c 3 -W 1 10.10.0.10 && fail "red reached blue on the other appliance"
    diaconfig port stats spy
fi
barrier done || fail "no final barrier"
dmesg_clean
