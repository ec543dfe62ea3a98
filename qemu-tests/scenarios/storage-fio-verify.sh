# timeout: 600
# Two thin namespaces as block devices: fio writes and verifies (crc32c) random
# and sequential I/O at several queue depths on both at once, then the data
# survives detach + attach, and trims give pool space back.
. /scenarios/lib.sh
load_dia
a=$(dia-guest-check ns-create 268435456 alpha)
b=$(dia-guest-check ns-create 268435456 beta --lba-shift 9)
dia-guest-check ns-attach "$a"
dia-guest-check ns-attach "$b"
[ -b /dev/dia0n$a ] && [ -b /dev/dia0n$b ] || fail "block devices missing"
[ "$(cat /sys/block/dia0n$a/queue/logical_block_size)" = 4096 ] || fail "4K namespace has wrong block size"
[ "$(cat /sys/block/dia0n$b/queue/logical_block_size)" = 512 ] || fail "512B namespace has wrong block size"
[ "$(cat /sys/block/dia0n$a/queue/rotational)" = 0 ] || fail "rotational must be 0"
grep -q "write back" /sys/block/dia0n$a/queue/write_cache || fail "volatile write cache not advertised"
[ "$(cat /sys/block/dia0n$a/queue/discard_max_bytes)" -gt 0 ] || fail "discard not advertised"
[ "$(cat /sys/block/dia0n$a/size)" = 524288 ] || fail "wrong capacity"

common="--ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --size=64M --group_reporting"
fio --name=rand-a --filename=/dev/dia0n$a --rw=randwrite --bs=4k --iodepth=32 $common \
    --name=seq-b --filename=/dev/dia0n$b --rw=write --bs=128k --iodepth=8 $common \
    --name=rand-b-qd1 --filename=/dev/dia0n$b --offset=128M --rw=randwrite --bs=8k --iodepth=1 --size=8M \
        --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 \
    --name=big-a --filename=/dev/dia0n$a --offset=128M --rw=write --bs=512k --iodepth=4 $common \
    > /tmp/fio.txt || { cat /tmp/fio.txt; fail "fio verify failed"; }
grep -E "err=|IOPS" /tmp/fio.txt | head

# Read back what a known pattern left, across detach/attach.
dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
dd if=/tmp/pattern of=/dev/dia0n$a bs=1M seek=200 oflag=direct conv=fsync 2>/dev/null
want=$(sha256sum < /tmp/pattern)
dia-guest-check ns-detach "$a"
[ ! -e /dev/dia0n$a ] || fail "device still present after detach"
dia-guest-check ns-attach "$a"
got=$(dd if=/dev/dia0n$a bs=1M skip=200 count=4 iflag=direct 2>/dev/null | sha256sum)
[ "$want" = "$got" ] || fail "data changed across detach/attach"

# Synchronous writes: an O_DSYNC write is a FUA write and then a flush. The
# card's FUA write flushes its whole cache and says so in its completion,
# so the driver completes the flush without sending it: 64 such writes,
# no flush at the card (its `other` counter). A write followed by an
# fsync still sends every flush.
flushes() { dia-guest-check ns-stats "$a" | sed 's/.* other=\([0-9]*\).*/\1/'; }
f0=$(flushes)
dd if=/tmp/pattern of=/dev/dia0n$a bs=4k count=64 seek=60000 oflag=direct,dsync 2>/dev/null \
    || fail "O_DSYNC writes failed"
f1=$(flushes)
for i in 1 2 3 4 5 6 7 8; do
    dd if=/tmp/pattern of=/dev/dia0n$a bs=4k count=1 seek=$((61000 + i)) oflag=direct conv=fsync 2>/dev/null \
        || fail "write and fsync $i failed"
done
f2=$(flushes)
log "flushes at the card: $((f1 - f0)) for 64 O_DSYNC writes, $((f2 - f1)) for 8 writes with an fsync each"
[ $((f1 - f0)) -le 1 ] || fail "O_DSYNC writes sent $((f1 - f0)) flushes to the card; the FUA writes had covered them"
[ $((f2 - f1)) -ge 8 ] || fail "8 fsyncs after plain writes sent only $((f2 - f1)) flushes to the card"
[ "$(dd if=/dev/dia0n$a bs=4k skip=60000 count=64 iflag=direct 2>/dev/null | sha256sum)" = \
  "$(head -c 262144 /tmp/pattern | sha256sum)" ] || fail "O_DSYNC writes did not read back"

# Unwritten space reads as zeroes; discard returns space to the pool.
zero=$(dd if=/dev/zero bs=1M count=1 2>/dev/null | sha256sum)
[ "$(dd if=/dev/dia0n$a bs=1M skip=250 count=1 iflag=direct 2>/dev/null | sha256sum)" = "$zero" ] || fail "unwritten blocks are not zero"
before=$(dia-guest-check pool | sed 's/.*used=\([0-9]*\).*/\1/')
blkdiscard /dev/dia0n$a
after=$(dia-guest-check pool | sed 's/.*used=\([0-9]*\).*/\1/')
log "pool used: $before -> $after after discard"
[ "$after" -lt "$before" ] || fail "discard did not free pool space"
[ "$(dd if=/dev/dia0n$a bs=1M skip=200 count=1 iflag=direct 2>/dev/null | sha256sum)" = "$zero" ] || fail "discarded blocks are not zero"
dmesg_clean
