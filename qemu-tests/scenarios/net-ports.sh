# timeout: 300
# Raw port ioctls: a port becomes a net device dia0pN with the card's MAC
# and the link the card reports; bad VLANs, MTUs and unknown ports get
# EINVAL/ENOENT and change nothing; the module unloads with ports present
# and a new load starts with none; all max_ports ports at once work.
. /scenarios/lib.sh
load_dia
dia-guest-check port-create 100 1500 | tee /tmp/p1
expect_contains /tmp/p1 "port=1 ifname=dia0p1 mac=02:d1:"
ip link show dia0p1 | tee /tmp/l1
mac=$(sed -n 's/.*mac=\([0-9a-f:]*\).*/\1/p' /tmp/p1)
expect_contains /tmp/l1 "$mac"
expect_contains /tmp/l1 "mtu 1500"
dia-guest-check port-create 200 9000 | tee /tmp/p2
expect_contains /tmp/p2 "port=2 ifname=dia0p2"
ip link show dia0p2 | grep -q "mtu 9000" || fail "jumbo MTU not on the net device"
ip link set dia0p1 up
for _ in $(seq 1 20); do ip link show dia0p1 | grep -q "LOWER_UP" && break; sleep 0.1; done
ip link show dia0p1 | grep -q "LOWER_UP" || fail "no carrier on an up port"
dia-guest-check port-info 1 | tee /tmp/i1
expect_contains /tmp/i1 "link=1 vlan=100 mtu=1500"
# Bad arguments: an errno each, nothing created.
expect_fail 1 "EINVAL" dia-guest-check port-create 0 1500
expect_fail 1 "EINVAL" dia-guest-check port-create 4095 1500
expect_fail 1 "EINVAL" dia-guest-check port-create 100 67
expect_fail 1 "EINVAL" dia-guest-check port-create 100 9001
expect_fail 1 "ENOENT" dia-guest-check port-delete 9
expect_fail 1 "ENOENT" dia-guest-check port-info 9
expect_fail 1 "EINVAL" dia-guest-check port-set 1 100 9001
dia-guest-check port-list | tee /tmp/list
[ "$(cat /tmp/list)" = "1 2" ] || fail "ports after bad requests: $(cat /tmp/list)"
# A live port's MTU follows Set Port; the VLAN changes on the card.
dia-guest-check port-set 2 300 4000
ip link show dia0p2 | grep -q "mtu 4000" || fail "MTU not applied to the net device"
dia-guest-check port-info 2 | grep -q "vlan=300 mtu=4000" || fail "card config not changed"
# Moved into another network namespace, the port is still deletable.
unshare -n sleep 600 &
ns=$!
sleep 0.5
ip link set dia0p2 netns "$ns"
ip link show dia0p2 2>/dev/null && fail "port still in the appliance namespace"
nsenter -t "$ns" -n ip link show dia0p2 >/dev/null || fail "port not in the namespace"
dia-guest-check port-delete 2
nsenter -t "$ns" -n ip link show dia0p2 2>/dev/null && fail "net device survived Delete Port"
kill "$ns"
# Unload with a port present and up; reload starts clean.
rmmod dia
ip link show dia0p1 2>/dev/null && fail "net device survived rmmod"
load_dia
dia-guest-check port-list | tee /tmp/list2
[ -z "$(cat /tmp/list2)" ] || fail "ports after reload: $(cat /tmp/list2)"
dia-guest-check port-create 100 1500 | grep -q "port=1 ifname=dia0p1 mac=$mac" || fail "port 1's MAC changed across reloads"
# Every port the card advertises at once, each on a vector of its own (the
# card refuses a vector another port has): with 32 vectors for 64 ports
# the 30th Create Port got ENOSPC. One more is ENOSPC and changes nothing;
# the last two (one VLAN) pass frames; the module unloads with them all.
max_ports=$(dia-guest-check identify | sed -n 's/^max_ports: //p')
[ "${max_ports:-0}" -gt 1 ] || fail "the card advertises '$max_ports' ports"
dia-guest-check port-delete 1
dia-guest-check port-create-many "$max_ports" 100 1500 > /tmp/many || { tail -3 /tmp/many; fail "creating $max_ports ports"; }
tail -1 /tmp/many
[ "$(dia-guest-check port-list | wc -w)" -eq "$max_ports" ] || fail "$(dia-guest-check port-list | wc -w) ports, expected $max_ports"
expect_fail 1 "ENOSPC" dia-guest-check port-create 100 1500
[ "$(dia-guest-check port-list | wc -w)" -eq "$max_ports" ] || fail "the refused port changed the list"
a=$((max_ports - 1)) b=$max_ports
grep -q "^port=$a .* vlan=$((100 + (a - 1) / 2)) " /tmp/many && grep -q "^port=$b .* vlan=$((100 + (a - 1) / 2)) " /tmp/many \
    || { cat /tmp/many; fail "ports $a and $b are not on one VLAN"; }
unshare -n sleep 600 </dev/null >/dev/null 2>&1 &
na=$!
unshare -n sleep 600 </dev/null >/dev/null 2>&1 &
nb=$!
sleep 0.5
ip link set "dia0p$a" netns "$na"
ip link set "dia0p$b" netns "$nb"
nsenter -t "$na" -n ip addr add 10.91.0.1/24 dev "dia0p$a"
nsenter -t "$nb" -n ip addr add 10.91.0.2/24 dev "dia0p$b"
nsenter -t "$na" -n ip link set "dia0p$a" up
nsenter -t "$nb" -n ip link set "dia0p$b" up
ok=0
for _ in $(seq 1 20); do
    nsenter -t "$na" -n ping -c 1 -W 1 10.91.0.2 >/dev/null 2>&1 && { ok=1; break; }
done
[ "$ok" = 1 ] || fail "ports $a and $b (vectors of the last ports) pass no frames"
kill "$na" "$nb"
rmmod dia
ls -d /sys/class/net/dia0p* 2>/dev/null && fail "net devices survived rmmod"
dmesg_clean
