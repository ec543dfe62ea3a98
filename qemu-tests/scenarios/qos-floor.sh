# card-args: --media-iops 10000
# timeout: 400
# A gold volume keeps at least 95 % of its floor while two best-effort
# neighbours run at full load, and the card refuses a floor it cannot
# guarantee, saying by how much. The card models flash of 10000 IOPS so
# that it, not the guest's CPUs, is the bottleneck (as on real hardware);
# the floor (5000) is above the volume's equal share (3333), which the
# scenario first checks it gets without the floor, so the floor is what
# lifts it.
. /scenarios/lib.sh
load_dia
start_diad
diaconfig card info | grep "QoS capacity"
diaconfig tier create floor5k --min-iops 5000 --weight 1
diaconfig volume create g --size 256M
diaconfig volume create n1 --size 256M
diaconfig volume create n2 --size 256M
diaconfig container create c
for v in g n1 n2; do diaconfig volume attach $v --container c; done
dev() { diaconfig -o json volume show "$1" | awk -F'"' '$2 == "device" { print $4 }'; }
for v in g n1 n2; do dd if=/dev/zero of="$(dev $v)" bs=1M count=64 oflag=direct 2>/dev/null; done
pids=""
for v in n1 n2; do
    fio --name=noisy-$v --filename="$(dev $v)" --rw=randread --bs=4k --iodepth=64 --ioengine=libaio \
        --direct=1 --size=64M --time_based --runtime=40 > /tmp/fio-$v.txt 2>&1 &
    pids="$pids $!"
done
fio --name=gold --filename="$(dev g)" --rw=randread --bs=4k --iodepth=64 --ioengine=libaio \
    --direct=1 --size=64M --time_based --runtime=40 > /tmp/fio-g.txt 2>&1 &
pids="$pids $!"
sleep 3
g=$(iops_of g 4)
n=$(iops_of n1 4)
log "best-effort: g $g IOPS; a neighbour: $n IOPS"
[ $(( g * 100 )) -lt $(( 5000 * 95 )) ] ||
    fail "without a floor g already got $g IOPS: the card is not the bottleneck, the floor proves nothing"
diaconfig volume set-tier g floor5k
sleep 1
g=$(iops_of g 5)
n=$(iops_of n1 4)
log "floor 5000: g $g IOPS; a neighbour: $n IOPS"
[ $(( g * 100 )) -ge $(( 5000 * 95 )) ] || fail "g got $g IOPS, below 95 % of its 5000 floor"
[ "$n" -ge 1000 ] || fail "a neighbour got $n IOPS: starved"
# Over capacity: the card's capacity minus what is held, plus one.
cap=$(diaconfig -o json card info | awk '$1 == "\"qos_capacity_iops\":" { gsub(/[^0-9]/, "", $2); print $2 }')
[ "$cap" -eq 10000 ] || fail "capacity $cap, expected the media's 10000"
diaconfig tier create huge --min-iops $(( cap - 5000 + 1 ))
expect_fail 1 ": 1 IOPS over" diaconfig volume set-tier n1 huge
kill $pids 2>/dev/null || true
for p in $pids; do wait "$p" 2>/dev/null || true; done
dmesg_clean
