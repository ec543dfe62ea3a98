# qemu-args: -object memory-backend-ram,id=plainmem,size=1M,share=on -device ivshmem-plain,memdev=plainmem
# A device with the card's PCI id but without its signature in BAR2 (a plain
# ivshmem region) is refused with a clear log line; the real card still binds.
. /scenarios/lib.sh
load_dia
dmesg | grep "no dia card signature" || fail "driver did not refuse the unsigned device"
[ -c /dev/dia ] || fail "the real card did not bind"
[ ! -e /dev/dia1 ] || fail "the unsigned device got a node"
dia-guest-check identify >/dev/null
rmmod dia
dmesg_clean
