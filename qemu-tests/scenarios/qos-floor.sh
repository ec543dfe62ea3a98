# timeout: 400
# A gold volume keeps at least 95 % of its floor while two best-effort
# neighbours run at full load, and the card refuses a floor it cannot
# guarantee, saying by how much.
. /scenarios/lib.sh
load_dia
start_diad
diaconfig card info | grep "QoS capacity"
diaconfig tier create floor3k --min-iops 3000 --weight 1
diaconfig volume create g --size 256M --tier floor3k
diaconfig volume create n1 --size 256M
diaconfig volume create n2 --size 256M
diaconfig container create c
for v in g n1 n2; do diaconfig volume attach $v --container c; done
dev() { diaconfig -o json volume show "$1" | awk -F'"' '$2 == "device" { print $4 }'; }
for v in g n1 n2; do dd if=/dev/zero of="$(dev $v)" bs=1M count=64 oflag=direct 2>/dev/null; done
for v in n1 n2; do
    fio --name=noisy-$v --filename="$(dev $v)" --rw=randread --bs=4k --iodepth=64 --ioengine=libaio \
        --direct=1 --size=64M --time_based --runtime=40 > /tmp/fio-$v.txt 2>&1 &
done
fio --name=gold --filename="$(dev g)" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio \
    --direct=1 --size=64M --time_based --runtime=40 > /tmp/fio-g.txt 2>&1 &
sleep 4
g=$(iops_of g 5)
n=$(iops_of n1 5)
log "gold (floor 3000): $g IOPS; a neighbour: $n IOPS"
[ $(( g * 100 )) -ge $(( 3000 * 95 )) ] || fail "gold got $g IOPS, below 95 % of its 3000 floor"
# Over capacity: the card's capacity minus what is held, plus one.
cap=$(diaconfig -o json card info | awk '$1 == "\"qos_capacity_iops\":" { gsub(/[^0-9]/, "", $2); print $2 }')
diaconfig tier create huge --min-iops $(( cap - 3000 + 1 ))
expect_fail 1 ": 1 IOPS over" diaconfig volume set-tier n1 huge
killall fio 2>/dev/null || true
sleep 1
dmesg_clean
