# appliances: 2
# timeout: 1800
# Two appliances of one cluster race: both create the same 120 volume names at the same moment (each on its own card), then both give ports on one network of 30 addresses to 24 containers each; every name ends up created exactly once (with no namespace left behind on the losing card), no address is leased twice, exactly 30 ports exist, and every refusal says why.
. /scenarios/lib.sh
load_dia
start_diad
seed=$(mgmt_addr_of 0)
if [ "$DIA_NODE" = 0 ]; then
    diaconfig cluster create race
    diaconfig network create net --vlan 300 --subnet 10.30.0.0/24 --gateway 10.30.0.1 --range 10.30.0.10-10.30.0.39
fi
barrier created || fail "barrier created"
[ "$DIA_NODE" = 1 ] && diaconfig cluster join "$seed"
barrier joined || fail "barrier joined"
me=$(hostname)

# The same names from both appliances at once.
won=0; lost=0
for i in $(seq 1 120); do
    if diaconfig volume create "r$i" --size 4M >/tmp/out 2>&1; then
        won=$((won + 1))
    else
        grep -q "already exists" /tmp/out || { cat /tmp/out; fail "r$i refused for another reason"; }
        lost=$((lost + 1))
    fi
done
log "volumes: $won created here, $lost refused as taken; races lost in etcd and rerun: $(grep -c 'lost a race' /var/log/diad.log)"
barrier volumes-done || fail "barrier volumes-done"
diaconfig -o json volume list >/tmp/vols.json
total=$(jq '[.volumes[] | select(.name | test("^r[0-9]+$"))] | length' /tmp/vols.json)
unique=$(jq '[.volumes[] | select(.name | test("^r[0-9]+$")) | .name] | unique | length' /tmp/vols.json)
[ "$total" = 120 ] && [ "$unique" = 120 ] || fail "expected 120 distinct volumes, got $total ($unique distinct)"
mine=$(jq --arg me "$me" '[.volumes[] | select(.node == $me)] | length' /tmp/vols.json)
[ "$mine" = "$won" ] || fail "this appliance created $won volumes but $mine are recorded on it"
[ "$(jq '.orphans | length' /tmp/vols.json)" = 0 ] || { jq .orphans /tmp/vols.json; fail "a lost race left a namespace on this card"; }
[ "$(diaconfig -o value=namespaces pool info)" = "$won" ] ||
    fail "the card holds other than the $won namespaces of the volumes it won"

# Ports on one network of 30 addresses, 24 containers on each appliance.
ok=0; full=0
for i in $(seq 1 24); do
    c="c$DIA_NODE-$i"
    diaconfig container create "$c" >/dev/null
    if diaconfig port attach --container "$c" --network net >/tmp/out 2>&1; then
        ok=$((ok + 1))
    else
        grep -q "no free address" /tmp/out || { cat /tmp/out; fail "port for $c refused for another reason"; }
        full=$((full + 1))
    fi
done
log "ports: $ok attached here, $full refused (no free address)"
barrier ports-done || fail "barrier ports-done"
diaconfig -o value=name,address port list >/tmp/ports
cat /tmp/ports
n=$(wc -l </tmp/ports)
u=$(awk '{ print $2 }' /tmp/ports | sort -u | wc -l)
[ "$n" = 30 ] && [ "$u" = 30 ] || fail "expected 30 ports with 30 distinct addresses, got $n ($u distinct)"
here=$(grep -c "^c$DIA_NODE-" /tmp/ports)
[ "$here" = "$ok" ] || fail "$ok ports attached here but $here recorded"
barrier checked || fail "barrier checked"
dmesg_clean
