# rmmod/insmod cycles: every load binds the card again and answers Identify;
# every unload releases it (the card sees a clean shutdown each time); a
# volume left attached is a disk again after the next load.
. /scenarios/lib.sh
for i in 1 2 3; do
    log "cycle $i"
    load_dia
    dia-guest-check identify >/tmp/id.txt || fail "identify failed on cycle $i"
    expect_contains /tmp/id.txt "DIA-TEST-0001"
    rmmod dia
    [ ! -e /dev/dia ] || fail "/dev/dia still present after rmmod"
done
# A namespace the card keeps attached comes back as a disk on the next
# load (probe finds it), with its bytes.
load_dia
n=$(dia-guest-check ns-create 16777216 kept) || fail "creating a volume"
dia-guest-check ns-attach "$n" >/dev/null || fail "attaching it"
dd if=/dev/urandom of=/tmp/kept.bin bs=1M count=2 2>/dev/null
dd if=/tmp/kept.bin of=/dev/dia0n$n bs=1M oflag=direct conv=fsync 2>/dev/null || fail "writing it"
rmmod dia
load_dia
[ -b /dev/dia0n$n ] || fail "the attached volume has no disk after a reload"
cmp -n 2097152 /tmp/kept.bin /dev/dia0n$n || fail "the attached volume lost bytes across a reload"
dia-guest-check ns-detach "$n" >/dev/null && dia-guest-check ns-delete "$n" >/dev/null || fail "removing it"
rmmod dia
load_dia
start_diad
diaconfig card info >/dev/null
stop_diad
rmmod dia
dmesg | grep -c "card 0 removed\|card [0-9]* removed" || true
dmesg_clean
