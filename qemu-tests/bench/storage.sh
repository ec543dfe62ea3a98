# timeout: 2400
# Storage benchmark, run by `qemu-tests/run bench` (not a test): the same fio
# jobs against a dia namespace, QEMU's nvme device and a virtio-blk device
# with an iothread, in one boot, each backed by a same-size raw file on the
# same host disk. Each device is written full first, so reads hit allocated
# data on the thin dia volume. Each job runs $rounds times on every device,
# the devices taking turns and the order rotating each round, so that slow
# spells of the host and order effects fall on all three alike; the harness
# reports medians. Results go to the console as @@BENCH lines.
. /scenarios/lib.sh
load_dia
size=$((1024 * 1024 * 1024))
n=$(dia-guest-check ns-create $size bench)
dia-guest-check ns-attach "$n"
nvme=$(ls /dev/nvme*n1 2>/dev/null | head -1)
# The peer virtio-blk disk by its serial (the appliance's root is a virtio disk too).
vblk=
for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = peer-vblk ] && vblk=/dev/${d##*/}; done
[ -b "$nvme" ] || fail "no QEMU nvme device"
[ -b "$vblk" ] || fail "no virtio-blk device"
devices="dia:/dev/dia0n$n nvme:$nvme virtio-blk:$vblk"
runtime=${BENCH_RUNTIME:-8}
rounds=${BENCH_ROUNDS:-3}

BENCH_NUMJOBS=2
bench_prefill
bench_common_jobs
# Synchronous small writes, one writer at QD1, the way a database commits:
# each write durable before the next. O_DSYNC with pwrite(2) (fio's psync
# engine): the block layer sends a FUA write (a write, then a flush, on a
# device without FUA) and, as write(2) returns, a flush; or an fsync after
# every write (a write, then a flush). With libaio an O_DSYNC write is the
# FUA write alone, which QEMU's nvme completes without syncing anything
# (cache=writeback; docs/performance.md), so psync is also the fair row.
bench_job 4k-dsync-qd1 randwrite 4k 1 --numjobs=1 --sync=dsync --ioengine=psync
bench_job 16k-dsync-qd1 randwrite 16k 1 --numjobs=1 --sync=dsync --ioengine=psync
bench_job 4k-fsync-qd1 randwrite 4k 1 --numjobs=1 --fsync=1
bench_job 16k-fsync-qd1 randwrite 16k 1 --numjobs=1 --fsync=1
