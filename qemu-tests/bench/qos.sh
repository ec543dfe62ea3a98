# timeout: 900
# card-args: --media-iops 4000
# QoS benchmark, run by `qemu-tests/run bench qos` (not a test). The card
# models flash of 4000 IOPS so that it, not the guest's CPUs, is the
# bottleneck, as on real hardware (a 2-vCPU TCG guest submits about 8000
# 4k IOPS across three volumes on a 2-core host). The noisy-neighbour
# case: the protected volume first in best-effort (no floor: QoS off for
# it; it gets an equal third), then in a tier whose floor is below that
# third (1000 IOPS: nothing should change), then in one whose floor is
# above it (2000 IOPS: the card must take the difference from the
# neighbours), two best-effort neighbours at full load each time; then the
# accuracy of three ceilings.
# Prints Markdown rows as @@MD lines.
. /scenarios/lib.sh
load_dia
start_diad
runtime=${BENCH_RUNTIME:-8}
for f in 1000 2000; do diaconfig tier create floor$f --min-iops $f; done
for c in 500 1000 3000; do diaconfig tier create cap$c --max-iops $c; done
diaconfig container create c
for v in g n1 n2; do
    diaconfig volume create $v --size 256M
    diaconfig volume attach $v --container c
done
dev() { diaconfig -o value=device volume show "$1"; }
for v in g n1 n2; do dd if=/dev/zero of="$(dev $v)" bs=1M count=64 oflag=direct 2>/dev/null; done
# fio_stat FILE: "IOPS P99_US" of the first job's reads in fio's JSON.
fio_stat() {
    awk -F: '
        /"iops"/ && iops == "" { v = $2; gsub(/[^0-9.]/, "", v); iops = v }
        /"99.000000"/ && p99 == "" { v = $2; gsub(/[^0-9.]/, "", v); p99 = v }
        END { printf "%d %d\n", iops, p99 / 1000 }' "$1"
}
noisy() { # noisy LABEL: all three at once, measured over the same window
    pids=""
    # The protected volume has two fio threads (as in the qos-floor
    # scenario), so a thread waiting for one of the guest's shared vCPUs
    # does not leave its queue at the card empty.
    for v in n1 n2 g; do
        jobs=1; [ $v = g ] && jobs=2
        fio --name=$v --filename="$(dev $v)" --rw=randread --bs=4k --iodepth=64 --numjobs=$jobs \
            --group_reporting --ioengine=libaio --direct=1 --size=64M --time_based --runtime=$runtime \
            --ramp_time=1 --output-format=json > /tmp/$v.json &
        pids="$pids $!"
    done
    # Not a bare `wait`: diad runs in the background of this shell too.
    for p in $pids; do wait "$p"; done
    label=$1
    set -- $(fio_stat /tmp/g.json) $(fio_stat /tmp/n1.json) $(fio_stat /tmp/n2.json)
    echo "@@MD | $label | $1 | $2 | $3 | $4 | $5 | $6 |"
}
echo "@@MD | protected volume | its IOPS | its p99 µs | neighbour 1 IOPS | neighbour 1 p99 µs | neighbour 2 IOPS | neighbour 2 p99 µs |"
echo "@@MD |---|---:|---:|---:|---:|---:|---:|"
noisy "best-effort (QoS off)"
for f in 1000 2000; do
    diaconfig volume set-tier g floor$f
    noisy "floor $f IOPS (QoS on)"
done
echo "@@MD"
echo "@@MD | tier ceiling (IOPS) | measured IOPS | error |"
echo "@@MD |---:|---:|---:|"
for c in 500 1000 3000; do
    diaconfig volume set-tier g cap$c
    fio --name=push --filename="$(dev g)" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
        --size=64M --time_based --runtime=$((runtime + 2)) > /dev/null 2>&1 &
    push=$!
    sleep 2
    r=$(iops_of g "$runtime")
    wait "$push"
    err=$(( (r - c) * 1000 / c ))
    echo "@@MD | $c | $r | $(( err / 10 )).$(( (err < 0 ? -err : err) % 10 )) % |"
done
