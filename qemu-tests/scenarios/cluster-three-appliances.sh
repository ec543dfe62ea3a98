# appliances: 3
# fabric: on
# timeout: 1500
# Three appliances form one cluster: created on the first, the other two join one at a time with `cluster join`; volumes and networks made on any appliance are seen from every other; a container on appliance 0 uses a volume whose data is on appliance 2 (its card, NVMe/TCP, the other card, its pool) with fio --verify, the bytes are the same seen from appliance 2's own device, and its tier's ceiling holds there; a name taken on another appliance is refused; status shows three members up and a healthy etcd; appliance 2 cannot be removed while it holds volumes, and is once they are deleted.
. /scenarios/lib.sh
me="appliance-$DIA_NODE"
[ "$(hostname)" = "$me" ] || fail "hostname is '$(hostname)', expected $me"
load_dia
start_diad
seed=$(mgmt_addr_of 0)
# pattern: the same 4 MiB on every appliance.
pattern() { yes "dia cluster pattern, written on appliance 0" | head -c 4194304; }

# One at a time: 0 creates, then 1 joins, then 2 joins.
if [ "$DIA_NODE" = 0 ]; then
    diaconfig volume create pre --size 32M
    diaconfig network create blue --vlan 100 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200
    diaconfig cluster create lab | tee /tmp/created
    expect_contains /tmp/created "Cluster lab"
fi
barrier created || fail "barrier created"
if [ "$DIA_NODE" = 1 ]; then
    diaconfig cluster join "$seed" | tee /tmp/joined
    expect_contains /tmp/joined "appliance-1"
fi
barrier joined-1 || fail "barrier joined-1"
if [ "$DIA_NODE" = 2 ]; then
    diaconfig cluster join "$seed" | tee /tmp/joined
fi
barrier joined-2 || fail "barrier joined-2"

diaconfig cluster status | tee /tmp/status
for n in 0 1 2; do
    grep -E "appliance-$n .* up " /tmp/status >/dev/null || fail "appliance-$n is not up in cluster status"
done
expect_contains /tmp/status "state store: healthy"
[ "$(grep -c ' member ' /tmp/status)" = 3 ] || fail "expected three etcd members"

# Objects made anywhere are seen everywhere.
case "$DIA_NODE" in
    1) diaconfig volume create on-two --size 256M --node appliance-2
       diaconfig network create green --vlan 200 --subnet 10.20.0.0/24 --gateway 10.20.0.1 --range 10.20.0.10-10.20.0.100 ;;
    2) diaconfig volume create local-two --size 64M ;;
esac
barrier made || fail "barrier made"
diaconfig volume list | tee /tmp/vols
diaconfig network list | tee /tmp/nets
for v in on-two local-two; do grep -q "^.*$v .*appliance-2" /tmp/vols || fail "volume $v not listed on appliance-2 here"; done
# Appliance 0's volume from before the cluster is the cluster's, on appliance 0.
grep -q "^.*pre .*appliance-0" /tmp/vols || fail "volume pre (made before the cluster) not listed on appliance-0"
expect_contains /tmp/nets blue
expect_contains /tmp/nets green
# The network existed on appliance 0 before the cluster: now everyone's.
expect_fail 1 "already" diaconfig volume create on-two --size 64M
expect_fail 1 "VLAN 100" diaconfig network create blue2 --vlan 100 --subnet 10.30.0.0/24 --gateway 10.30.0.1 --range 10.30.0.10-10.30.0.20
expect_fail 1 "no appliance 'nowhere'" diaconfig volume create x --size 64M --node nowhere
expect_fail 1 "no appliance has room" diaconfig volume create huge --size 64G

# A container on appliance 0 uses the volume whose data is on appliance 2.
if [ "$DIA_NODE" = 0 ]; then
    diaconfig container create app
    pa=$(container_pid app)
    diaconfig volume attach on-two --container app | tee /tmp/att
    dev=$(diaconfig -o json volume show on-two | sed -n 's/.*"device": "\([^"]*\)".*/\1/p')
    [ -n "$dev" ] || fail "no device for the remote volume"
    diaconfig volume show on-two | tee /tmp/show
    expect_contains /tmp/show "Data on *| appliance-2"
    expect_contains /tmp/show "Attached on *| appliance-0"
    nsenter -t "$pa" -m fio --name=remote --filename="$dev" --direct=1 --rw=randwrite --bs=4k \
        --size=64M --iodepth=8 --ioengine=libaio --verify=crc32c --verify_fatal=1 \
        --randrepeat=0 --eta=never >/tmp/fio.txt 2>&1 || { cat /tmp/fio.txt; fail "fio --verify on the remote volume failed"; }
    grep -E "err= *0" /tmp/fio.txt >/dev/null || { cat /tmp/fio.txt; fail "fio reported errors"; }
    # A known pattern at a known place, for appliance 2 to read directly.
    pattern | nsenter -t "$pa" -m dd of="$dev" bs=1M seek=100 iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
        fail "writing the pattern through the fabric"
    expect_fail 1 "on appliance 'appliance-0': detach it there first" diaconfig volume delete on-two
    # The tier holds for a remote volume: appliance 0's card, where the
    # container's I/O enters, caps it (the card's own counters measure).
    diaconfig tier create capped --max-iops 400
    diaconfig volume set-tier on-two capped
    nsenter -t "$pa" -m fio --name=cap --filename="$dev" --direct=1 --rw=randread --bs=4k --size=64M \
        --iodepth=16 --ioengine=libaio --time_based --runtime=20 --eta=never >/tmp/cap.txt 2>&1 &
    cap_pid=$!
    sleep 3
    r=$(iops_of on-two 4)
    log "remote volume capped at 400 IOPS: measured $r"
    within_pct "$r" 400 5 || fail "the remote volume's ceiling of 400 IOPS does not hold: $r"
    wait "$cap_pid" || { cat /tmp/cap.txt; fail "fio under the ceiling failed"; }
fi
barrier written || fail "barrier written"
if [ "$DIA_NODE" = 2 ]; then
    # Appliance 2's card exports its volume; its own device shows the bytes
    # appliance 0 wrote through the fabric.
    nsid=$(diaconfig -o json volume show on-two | sed -n 's/.*"nsid": \([0-9]*\).*/\1/p')
    [ -b "/dev/dia0n$nsid" ] || fail "the exported volume has no device here"
    got=$(dd if="/dev/dia0n$nsid" bs=1M skip=100 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    want=$(pattern | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "appliance 2 reads $got where appliance 0 wrote $want"
fi
barrier read || fail "barrier read"

# Decommissioning: appliance 2 cannot leave while it holds the only copy
# of volumes; once they are deleted (from appliance 0, done by appliance 2)
# and it has stopped, it is removed and the cluster goes on with two.
if [ "$DIA_NODE" = 0 ]; then
    expect_fail 1 "holds the only copy of volumes" diaconfig cluster remove appliance-2
    diaconfig volume detach on-two
    diaconfig volume delete on-two
    diaconfig volume delete local-two
fi
barrier emptied || fail "barrier emptied"
if [ "$DIA_NODE" = 2 ]; then
    [ "$(diaconfig -o value=namespaces pool info)" = 0 ] || fail "appliance 2's card still holds namespaces"
    stop_diad
    pkill -x etcd
fi
barrier left || fail "barrier left"
if [ "$DIA_NODE" = 0 ]; then
    diaconfig cluster remove appliance-2
    diaconfig cluster status | tee /tmp/status
    grep -q appliance-2 /tmp/status && fail "appliance-2 still listed after remove"
    expect_contains /tmp/status "state store: healthy"
    diaconfig volume create after-remove --size 16M --node appliance-1
fi
barrier removed || fail "barrier removed"
dmesg_clean
