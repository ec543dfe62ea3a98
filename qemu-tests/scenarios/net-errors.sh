# timeout: 300
# diaconfig's network and port errors: usage mistakes exit 2 and say what
# is allowed; refused requests exit 1 with the reason and change nothing:
# duplicate VLAN, bad CIDR, a range outside the subnet, overlapping
# ranges, unknown networks, deleting a network in use, an exhausted range.
# Detach frees the lease.
. /scenarios/lib.sh
load_dia
start_diad
expect_fail 2 "4095 is not in 1..=4094" diaconfig network create x --vlan 4095 --subnet 10.1.0.0/24 --gateway 10.1.0.1
expect_fail 2 "required" diaconfig network create x --subnet 10.1.0.0/24 --gateway 10.1.0.1
expect_fail 1 "prefix /33 is out of range (allowed: /1 to /30)" diaconfig network create x --vlan 10 --subnet 10.1.0.0/33 --gateway 10.1.0.1
expect_fail 1 "not an IPv4 CIDR" diaconfig network create x --vlan 10 --subnet 10.1.0/24 --gateway 10.1.0.1
expect_fail 1 "has host bits set: did you mean 10.1.0.0/24" diaconfig network create x --vlan 10 --subnet 10.1.0.5/24 --gateway 10.1.0.1
expect_fail 1 "not an IPv4 address" diaconfig network create x --vlan 10 --subnet 10.1.0.0/24 --gateway 10.1.0.300
expect_fail 1 "not a host address" diaconfig network create x --vlan 10 --subnet 10.1.0.0/24 --gateway 10.2.0.1
expect_fail 1 "is not inside" diaconfig network create x --vlan 10 --subnet 10.1.0.0/24 --gateway 10.1.0.1 --range 10.1.0.10-10.1.1.5
diaconfig network create tiny --vlan 10 --subnet 10.1.0.0/29 --gateway 10.1.0.1 --range 10.1.0.2-10.1.0.3
expect_fail 1 "already used by network 'tiny'" diaconfig network create y --vlan 10 --subnet 10.9.0.0/24 --gateway 10.9.0.1
expect_fail 1 "overlaps network 'tiny'" diaconfig network create y --vlan 11 --subnet 10.1.0.0/24 --gateway 10.1.0.1
expect_fail 1 "already exists" diaconfig network create tiny --vlan 12 --subnet 10.3.0.0/24 --gateway 10.3.0.1
diaconfig network list | tee /tmp/nets
[ "$(grep -c tiny /tmp/nets)" = 1 ] || fail "refused networks were created"
for c in a b c; do diaconfig container create $c; done
expect_fail 1 "no network 'nowhere' (networks: tiny)" diaconfig port attach --container a --network nowhere
expect_fail 1 "no container 'ghost'" diaconfig port attach --container ghost --network tiny
expect_fail 1 "is not a host address of network 'tiny'" diaconfig port attach --container a --network tiny --ip 10.5.0.2
diaconfig port attach --container a --network tiny
diaconfig port attach --container b --network tiny
expect_fail 1 "has no free address: all 2 of 10.1.0.2-10.1.0.3 are leased" diaconfig port attach --container c --network tiny
expect_fail 1 "already has a port 'eth0'" diaconfig port attach --container a --network tiny
expect_fail 1 "in use by ports" diaconfig network delete tiny
expect_fail 1 "no port 'c:eth0'" diaconfig port detach c
dia-guest-check port-list | tee /tmp/cardports
[ "$(wc -w < /tmp/cardports)" = 2 ] || fail "the card has ports the refused requests left behind: $(cat /tmp/cardports)"
# Detach frees the lease: c gets b's address.
ipb=$(diaconfig -o value=address port show b)
diaconfig port detach b
diaconfig port attach --container c --network tiny | tee /tmp/c
expect_contains /tmp/c "$ipb"
# Leases survive a diad restart; deleting a container releases its port.
stop_diad
start_diad
diaconfig port list | tee /tmp/ports
expect_contains /tmp/ports "$ipb"
diaconfig container delete c
diaconfig port list | grep -q "$ipb" && fail "lease kept after its container was deleted"
diaconfig port detach a
diaconfig network delete tiny
dia-guest-check port-list | tee /tmp/cardports2
[ -z "$(cat /tmp/cardports2)" ] || fail "ports left on the card: $(cat /tmp/cardports2)"
dmesg_clean
