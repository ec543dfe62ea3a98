# appliances: 4
# fabric: on
# timeout: 1500
# A fourth appliance joins a cluster of three as an etcd client (the first three run the members): status shows three etcd members and one client, all four up; from the fourth, a volume is placed by label on the one appliance with that label (an unknown label is refused), another is placed on a named appliance, attached on the fourth through the fabric with ext4, written, detached, attached again and read back byte for byte, and the first appliance sees where it is attached.
. /scenarios/lib.sh
load_dia
# Appliance 1 has fast flash: its operator labels it.
if [ "$DIA_NODE" = 1 ]; then echo 'DIAD_ARGS="--label ssd"' >/etc/default/dia; fi
start_diad
seed=$(mgmt_addr_of 0)
if [ "$DIA_NODE" = 0 ]; then diaconfig cluster create four; fi
barrier created || fail "barrier created"
for n in 1 2 3; do
    if [ "$DIA_NODE" = "$n" ]; then diaconfig cluster join "$seed"; fi
    barrier "joined-$n" || fail "barrier joined-$n"
done
diaconfig cluster status | tee /tmp/status
[ "$(grep -c ' member ' /tmp/status)" = 3 ] || fail "expected three etcd members"
grep -Eq "appliance-3 .* up .* client " /tmp/status || fail "appliance-3 is not an up etcd client"
for n in 0 1 2 3; do grep -Eq "appliance-$n .* up " /tmp/status || fail "appliance-$n is not up"; done
if [ "$DIA_NODE" = 3 ]; then
    # Only appliance 1 has the label ssd: placement goes there.
    diaconfig volume create labelled --size 64M --label ssd
    [ "$(diaconfig -o value=node volume show labelled)" = appliance-1 ] || fail "labelled is not on appliance-1"
    expect_fail 1 "no appliance matches label 'nvme'" diaconfig volume create nolabel --size 64M --label nvme
fi
barrier labels || fail "barrier labels"
if [ "$DIA_NODE" = 3 ]; then
    diaconfig volume create far --size 64M --node appliance-2
    diaconfig container create c
    pc=$(container_pid c)
    diaconfig volume attach far --container c --fs ext4 --mount /data
    nsenter -t "$pc" -m sh -c 'yes "from the fourth appliance" | head -c 8388608 >/data/blob && sync'
    want=$(yes "from the fourth appliance" | head -c 8388608 | sha256sum | cut -d' ' -f1)
    diaconfig volume detach far
    diaconfig volume attach far --container c --fs ext4 --mount /data
    got=$(nsenter -t "$pc" -m sha256sum /data/blob | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "the file read back differs ($got, $want)"
    diaconfig -o json volume show far | jq -e '.node == "appliance-2" and .attached_on == "appliance-3"' >/dev/null ||
        fail "volume far is not on appliance-2 attached on appliance-3"
fi
barrier used || fail "barrier used"
if [ "$DIA_NODE" = 0 ]; then
    diaconfig -o json volume show far | jq -e '.attached_on == "appliance-3"' >/dev/null ||
        fail "appliance 0 does not see far attached on appliance-3"
fi
barrier done || fail "barrier done"
dmesg_clean
