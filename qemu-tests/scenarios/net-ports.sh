# timeout: 300
# Raw port ioctls: a port becomes a net device dia0pN with the card's MAC
# and the link the card reports; bad VLANs, MTUs and unknown ports get
# EINVAL/ENOENT and change nothing; the module unloads with ports present
# and a new load starts with none.
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
dmesg_clean
