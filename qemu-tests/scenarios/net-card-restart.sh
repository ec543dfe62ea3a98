# timeout: 400
# The card dies while two containers talk over its ports and comes back:
# traffic stops (no hang, no oops), the driver's next command resets the
# card and recreates the ports with the same ids and MACs, the containers'
# eth0 keep their addresses, and traffic flows again.
. /scenarios/lib.sh
load_dia
start_diad
diaconfig network create blue --vlan 100 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200
diaconfig container create a
diaconfig container create b
diaconfig port attach --container a --network blue --ip 10.10.0.10
diaconfig port attach --container b --network blue --ip 10.10.0.11
pa=$(container_pid a); pb=$(container_pid b)
nsenter -t "$pa" -n ping -c 2 -W 2 10.10.0.11 || fail "no traffic before the crash"
mac_of() { nsenter -t "$1" -n ip link show eth0 | awk '$1 == "link/ether" { print $2 }'; }
mac_before=$(mac_of "$pa")
nsenter -t "$pa" -n ping -i 0.2 -W 1 10.10.0.11 > /tmp/ping.txt 2>&1 &
ping_pid=$!
sleep 1
host_request card-kill
sleep 2
host_request card-start
wait_card_back
dia-guest-check port-list | tee /tmp/ports
[ "$(cat /tmp/ports)" = "1 2" ] || fail "ports not recreated: $(cat /tmp/ports)"
dia-guest-check port-info 1 | grep -q "link=1 vlan=100 mtu=1500" || fail "port 1 not back on VLAN 100"
[ -n "$mac_before" ] && [ "$(mac_of "$pa")" = "$mac_before" ] || fail "MAC changed across the reset"
nsenter -t "$pa" -n ip addr show eth0 | grep -q "10.10.0.10/24" || fail "address lost"
ok=0
for _ in $(seq 1 10); do
    if nsenter -t "$pa" -n ping -c 1 -W 1 10.10.0.11 >/dev/null; then ok=1; break; fi
done
[ "$ok" = 1 ] || fail "no traffic after the card came back"
kill "$ping_pid" 2>/dev/null || true
log "ping during the crash: $(tail -3 /tmp/ping.txt | tr '\n' ' ')"
diaconfig port list | tee /tmp/list
grep -q "missing" /tmp/list && fail "diad sees a port missing after the recovery"
dmesg_clean
