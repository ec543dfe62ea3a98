# card-args: --fault duplicate-completion=1:200
# timeout: 300
# The card posts one completion twice. The command id's generation tells the
# stale twin from the request now using the tag: it is dropped (and logged),
# no request ends twice, fio verifies every byte.
. /scenarios/lib.sh
load_dia
a=$(dia-guest-check ns-create 268435456 twice)
[ "$a" = 1 ] || fail "expected namespace 1, got $a"
dia-guest-check ns-attach "$a"
fio --name=dup --filename=/dev/dia0n$a --rw=randwrite --bs=4k --iodepth=32 --ioengine=libaio \
    --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --size=64M > /tmp/fio.txt 2>&1 ||
    { cat /tmp/fio.txt; fail "fio failed"; }
grep -q "err= 0" /tmp/fio.txt || fail "fio counted errors"
dmesg | grep "dropped a completion" || fail "the duplicate completion was not seen"
dmesg_clean
