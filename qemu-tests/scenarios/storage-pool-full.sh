# card-args: --pool-size 96M
# timeout: 600
# A thin pool that fills up: the writer gets "no space" (ENOSPC), the other
# namespace keeps its data and keeps working, and after a discard frees
# space writes succeed again.
. /scenarios/lib.sh
load_dia
a=$(dia-guest-check ns-create 268435456 greedy)
b=$(dia-guest-check ns-create 67108864 bystander)
dia-guest-check ns-attach "$a"
dia-guest-check ns-attach "$b"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
dd if=/tmp/pattern of=/dev/dia0n$b bs=1M oflag=direct conv=fsync 2>/dev/null
want=$(sha256sum < /tmp/pattern)
dia-guest-check pool
if dd if=/dev/zero of=/dev/dia0n$a bs=1M count=256 oflag=direct 2>/tmp/dd.txt; then
    fail "filled past the pool without an error"
fi
cat /tmp/dd.txt
grep -qi "no space" /tmp/dd.txt || fail "writer did not see 'No space left on device'"
dia-guest-check pool
got=$(dd if=/dev/dia0n$b bs=1M count=8 iflag=direct 2>/dev/null | sha256sum)
[ "$want" = "$got" ] || fail "the bystander's data changed"
dd if=/tmp/pattern of=/dev/dia0n$b bs=1M seek=16 oflag=direct conv=fsync 2>/dev/null || true
blkdiscard /dev/dia0n$a
dd if=/tmp/pattern of=/dev/dia0n$a bs=1M oflag=direct conv=fsync 2>/dev/null || fail "writes fail after space was freed"
dmesg_clean
