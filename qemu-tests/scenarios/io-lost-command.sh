# card-args: --fault lose-io=1:300
# timeout: 480
# The card loses one command of namespace 1 (executes it, never completes
# it). The driver's timeout asks the card, which does not hold it; the
# recovery work resets the card (no ioctl needed), requeues what was in
# flight, and every request completes: zero errors and zero verify failures
# on both namespaces, none completed twice.
. /scenarios/lib.sh
load_dia
a=$(dia-guest-check ns-create 268435456 lossy)
b=$(dia-guest-check ns-create 268435456 neighbour)
[ "$a" = 1 ] || fail "expected the faulty namespace to be 1, got $a"
dia-guest-check ns-attach "$a"
dia-guest-check ns-attach "$b"
common="--ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --size=32M --iodepth=16 --bs=4k"
fio --name=lossy --filename=/dev/dia0n$a --rw=randwrite $common > /tmp/a.txt 2>&1 &
pa=$!
fio --name=neighbour --filename=/dev/dia0n$b --rw=randwrite $common --loops=4 > /tmp/b.txt 2>&1 ||
    { cat /tmp/b.txt; fail "the neighbour's verified I/O failed"; }
wait "$pa" || { cat /tmp/a.txt; fail "the faulty namespace's verified I/O failed"; }
grep -q "err= 0" /tmp/a.txt && grep -q "err= 0" /tmp/b.txt || fail "fio counted errors"
dmesg | grep "not held by the card; resetting the card" || fail "the lost command was never noticed"
dmesg | grep "card reset complete" || fail "no reset after the lost command"
dmesg | grep "requeued" || fail "nothing requeued by the reset"
# The I/O path keeps working after the recovery.
dd if=/dev/urandom of=/tmp/p bs=1M count=4 2>/dev/null
dd if=/tmp/p of=/dev/dia0n$b bs=1M oflag=direct conv=fsync 2>/dev/null
cmp /tmp/p /dev/dia0n$b -n 4194304 2>/dev/null || dd if=/dev/dia0n$b bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/p || fail "read back differs"
dmesg_clean
