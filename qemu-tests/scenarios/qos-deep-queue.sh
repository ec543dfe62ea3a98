# timeout: 420
# A volume at a 20 IOPS ceiling with 255 reads in flight keeps them queued
# on the card longer than the driver's 10 s I/O timeout. The timeout asks
# the card (Abort, keep queued), which says it holds them on purpose: the
# timers are re-armed, nobody sees an error, the card is never reset, and a
# neighbour's verified I/O runs on beside it.
. /scenarios/lib.sh
load_dia
slow=$(dia-guest-check ns-create 67108864 slow)
fast=$(dia-guest-check ns-create 268435456 fast)
dia-guest-check ns-attach "$slow"
dia-guest-check ns-attach "$fast"
dia-guest-check ns-set-qos "$slow" --max-iops 20
# One job, one CPU, one hardware queue: 255 tags deep; at 20 IOPS the last
# read waits about 12.7 s at the card.
taskset -c 0 fio --name=deep --filename=/dev/dia0n$slow --rw=randread --bs=4k --iodepth=255 \
    --ioengine=libaio --direct=1 --size=64M --time_based --runtime=30 > /tmp/deep.txt 2>&1 &
deep=$!
fio --name=neighbour --filename=/dev/dia0n$fast --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --size=64M \
    --time_based --runtime=30 --verify_backlog=256 > /tmp/neighbour.txt 2>&1 ||
    { cat /tmp/neighbour.txt; fail "the neighbour's verified I/O failed"; }
wait "$deep" || { cat /tmp/deep.txt; fail "the throttled volume's own I/O failed"; }
grep -E "err=|lat \(msec\)|max=" /tmp/deep.txt | head -5
grep -q "err= 0" /tmp/deep.txt || { cat /tmp/deep.txt; fail "the throttled volume saw errors"; }
grep -q "err= 0" /tmp/neighbour.txt || { cat /tmp/neighbour.txt; fail "the neighbour saw errors"; }
# The timeouts did fire and were answered by the card, not by a reset.
dmesg | grep "held on purpose by the card" || fail "no I/O timer fired: the scenario did not test anything"
if dmesg | grep -E "resetting the card|card reset complete|timed out|dropped a completion"; then
    fail "a throttled volume made the driver reset the card or fail I/O"
fi
dmesg_clean
